"""The verification runner: verdicts, ε curves, certified radii and counterexamples (paper §2.2–2.4).

For codes z0 (N×d), labels, a set kind (Dims / Direction / Basis) and a list of ε, `verify` bounds
the spec margins C·f_d(z) + d over the sets, one batched call per ε (chunked), largest ε first and
only for the samples still undecided (a sample verified at ε is verified at every smaller ε), and
gives each sample and ε a verdict:

- **+1 verified**: every row's certified lower bound exceeds the rounding tolerance of the bound
  computation (bounds are computed on a float64 copy of the head; the tolerance is derived in
  `auditai.bounds.exactline` and `auditai.bounds.split.bound_tolerance`), so rounding never turns
  a violated sample into a verified one, whatever the head's own dtype;
- **−1 falsified**: a concrete z in the set has a margin ≤ 0 in a float64 forward pass (ties count
  as violations): the centre (clean mistakes), the axis endpoints ±ε or latent PGD
  (`auditai.attack`; its iterations run in float32, only float64-confirmed points count), a
  split's centre or ExactLine's worst point;
- **0 unknown** otherwise.

Sets are nested in ε, so a verified ε makes every smaller ε verified and a counterexample δ
falsifies every ε ≥ ‖δ‖_p: verdicts are made monotone that way (both sound).
method="complete" decides more: for one direction (k = 1) on a piecewise-linear head by exact
enumeration of the linear pieces (ExactLine), otherwise (k ≤ 8) by branch and bound over δ (cubes
split on every axis for k ≤ 3, boxes split on their most influential axis beyond), within
`split_budget` pieces per cell and `max_time` seconds; `notes` says what was left unknown and why.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from auditai.attack import check_points, head64, pgd
from auditai.bounds import bound
from auditai.bounds.exactline import exact_line, is_piecewise_linear, layer_ops
from auditai.bounds.engine import guard_conversion
from auditai.bounds.ops import op_sources, to_ops
from auditai.bounds.rounding import certified_lower, chain_of, parse_precision
from auditai.bounds.split import bound_tolerance, branch_and_bound
from auditai.errors import AuditaiError, InputError, UnsupportedLayerError
from auditai.latent import LatentSet, norm_name
from auditai.names import METHODS, parse_engine, parse_method
from auditai.spec import make_spec

VERIFY_METHODS = METHODS  # auditai.names is their home
_BYTES_PER_UNIT = 8 * 6  # float64 coefficient tensors, a few live at once
# Rounding margin of auto_LiRPA's float64 bounds for a head outside our layers (no per-layer
# magnitudes to derive one from): 2^-20 relative, about 10^10 times float64's unit roundoff.
_FOREIGN_REL_TOL = 2.0 ** -20


@dataclass
class Counterexample:
    """A concrete violation: z = z0 + B·δ of sample `sample` at ε = eps makes spec row `row` ≤ 0."""

    sample: int
    eps_index: int
    eps: float
    delta: list
    z: list
    row: int
    row_name: str
    margin: float
    outputs: list
    image: list | None = None  # the decoded image g(z) (black-box target, auditai.blackbox)


@dataclass
class VerificationResult:
    """Verdicts of one unit test over N samples and the ε list (see docs/internals.md)."""

    eps: list
    method: str
    spec: str
    set_description: str
    norm: str
    n: int
    clean_error: list
    verified_error: list
    falsified_fraction: list
    unknown_fraction: list
    verdicts: Tensor
    certified_radius: Tensor | None
    max_radius: float | None
    counterexamples: list = field(default_factory=list)
    time_s: float = 0.0
    device: str = "cpu"
    engine: str = "auditai"
    precision: str = "float64"
    notes: list = field(default_factory=list)  # e.g. why cells stayed unknown (complete's budgets)

    def worst_counterexample(self, eps_index: int) -> Counterexample | None:
        """The counterexample with the most negative margin at ε index `eps_index` (None if none)."""
        cs = [c for c in self.counterexamples if c.eps_index == eps_index]
        return min(cs, key=lambda c: c.margin) if cs else None

    def to_dict(self) -> dict:
        """A JSON-safe dict (lists and numbers only)."""
        d: dict[str, Any] = {
            k: getattr(self, k)
            for k in ("eps", "method", "spec", "set_description", "norm", "n", "clean_error",
                      "verified_error", "falsified_fraction", "unknown_fraction", "max_radius",
                      "time_s", "device", "engine", "precision", "notes")
        }
        d["verdicts"] = self.verdicts.to(torch.int64).tolist()
        d["certified_radius"] = None if self.certified_radius is None else self.certified_radius.tolist()
        d["counterexamples"] = [asdict(c) for c in self.counterexamples]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VerificationResult":
        """Inverse of `to_dict`."""
        kw = dict(d)
        v = torch.tensor(kw.pop("verdicts"), dtype=torch.int8)
        kw["verdicts"] = v.reshape(int(d["n"]), len(d["eps"]))
        r = kw.pop("certified_radius")
        kw["certified_radius"] = None if r is None else torch.tensor(r, dtype=torch.float64)
        kw["counterexamples"] = [Counterexample(**c) for c in kw.pop("counterexamples")]
        return cls(**kw)


def _eps_list(eps) -> list[float]:
    if isinstance(eps, Tensor):
        eps = eps.flatten().tolist()
    if isinstance(eps, (int, float)):
        eps = [eps]
    try:
        out = [float(e) for e in eps]
    except (TypeError, ValueError):
        raise InputError(f"eps must be a number or a list of numbers, got {eps!r}") from None
    if not out:
        raise InputError("eps is empty: give at least one radius")
    bad = [e for e in out if not (math.isfinite(e) and e >= 0)]
    if bad:
        raise InputError(f"eps values must be finite and >= 0, got {bad}")
    return out


def _chunk_rows(chunk_size: int | None, memory_budget: int | None, m: int, width: int) -> int:
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    budget = memory_budget if memory_budget is not None else 1 << 30
    one = _BYTES_PER_UNIT * max(1, m) * max(1, width)
    if budget < one:
        raise AuditaiError(f"memory budget {int(budget)} bytes is too small for one sample: bounding one "
                           f"needs about {one} bytes ({m} spec rows × width {width} × {_BYTES_PER_UNIT} "
                           "bytes); raise memory_budget")
    return max(1, int(budget // one))


class _Bounder:
    """Certified lower margins (rows × m, minus tolerance) for rows of (z0, ε), chunked."""

    def __init__(self, h64, basis, p, method, engine, chunk, ops, precision="float64", alpha_options=None):
        self.alpha_options = alpha_options
        self.h64, self.basis, self.p, self.method, self.engine, self.chunk = h64, basis, p, method, engine, chunk
        # float32: the sound float32 bounds of auditai.bounds.rounding, where they apply
        self.f32 = None
        if precision == "float32" and not _is_auto_lirpa(engine) and method in ("ibp", "crown-ibp") \
                and not isinstance(ops, UnsupportedLayerError):
            try:
                self._ops64 = to_ops(h64, (basis.shape[0],), dtype=torch.float64)
                self.f32 = chain_of(self._ops64)
            except UnsupportedLayerError:
                self.f32 = None
        self._guarded = False
        self.precision = "float32" if self.f32 is not None else "float64"
        # an UnsupportedLayerError instead of a list: a head only auto_LiRPA bounds (_head_ops)
        self.ops = None if isinstance(ops, UnsupportedLayerError) else ops
        self.rejected = ops if self.ops is None else None
        self.colsum = basis.abs().sum(dim=1)

    @torch.no_grad()
    def certified(self, z: Tensor, eps: Tensor, C: Tensor, d: Tensor) -> Tensor:
        """min over spec rows of (lower bound + d − tol): > 0 means verified. One value per row."""
        outs = []
        for i in range(0, z.shape[0], self.chunk):
            sl = slice(i, i + self.chunk)
            if self.f32 is not None:  # rounding allowance R inside: C·f + d ≥ lb − R
                if not self._guarded:  # the ops compute the head (as bound() checks)
                    guard_conversion(self.h64, lambda: self._ops64, z[sl], eps[sl], self.p, self.basis,
                                     "head", op_sources(self.h64, "head").get)
                    self._guarded = True
                lb, R = certified_lower(self.f32, z[sl], self.basis, eps[sl], self.p, C[sl], d[sl], self.method)
                outs.append((lb - R).min(dim=1).values)
                continue
            s = LatentSet(z[sl], self.basis, eps[sl].contiguous(), self.p)
            lo = self._lower(s, C[sl])
            if self.ops is not None:
                tol = bound_tolerance(self.ops, z[sl].abs() + eps[sl, None] * self.colsum, C[sl], d[sl], z.dtype)
            else:  # no layers to derive the rounding from: relative to the bound, outputs and d
                mag = torch.einsum("no,nmo->nm", self.h64(z[sl]).abs(), C[sl].abs()) + d[sl].abs() + lo.abs()
                tol = _FOREIGN_REL_TOL * (1.0 + mag.amax(dim=1))
            outs.append((lo.detach() + d[sl]).min(dim=1).values - tol)
        return torch.cat(outs) if outs else z.new_zeros(0)

    def _lower(self, s: LatentSet, C: Tensor) -> Tensor:
        """The engine's lower bound; auto_LiRPA's refusals become an error naming the head."""
        try:
            return bound(self.h64, s, C, method=self.method, bound_upper=False, engine=self.engine,
                         alpha_options=self.alpha_options)[0]
        except AuditaiError:
            raise
        except Exception as e:  # auto_LiRPA's own refusals (NotImplementedError, ...)
            if not _is_auto_lirpa(self.engine):
                raise
            r = self.rejected
            what, where = (r.module_type, r.position) if r is not None else (type(self.h64).__name__, "head")
            why = (f"auto_LiRPA is not installed: {e}" if isinstance(e, ImportError) else
                   f"auto_LiRPA cannot bound this head ({'nor can ours' if r else 'engine auditai can'}): "
                   f"{type(e).__name__}: {e}")
            raise UnsupportedLayerError(what, where, why) from None


def _is_auto_lirpa(engine: str) -> bool:
    return parse_engine(engine) == "auto_lirpa"


def _head_ops(h64: nn.Module, engine: str, d: int) -> list | UnsupportedLayerError:
    """Our layer list of the head (inputs of d); with engine 'auto_lirpa' a head with a layer
    ours rejects gives the error instead (auto_LiRPA traces the graph itself, not our reader)."""
    try:
        return layer_ops(h64, in_shape=(d,))
    except UnsupportedLayerError as e:
        if _is_auto_lirpa(engine):
            return e
        raise


def _spread_counterexamples(V: Tensor, cex_delta: Tensor, eps_t: Tensor, p: float) -> None:
    """In place: a counterexample δ of a sample falsifies every ε ≥ ‖δ‖_p of that sample.

    V: N×E verdicts, cex_delta: N×E×k counterexample δ per falsified cell, eps_t: E radii.
    """
    fal = V == -1
    if not fal.any():
        return
    n = V.shape[0]
    nrm = torch.linalg.vector_norm(cex_delta, ord=p, dim=2)  # N×E
    nrm = torch.where(fal, nrm, math.inf)
    best, arg = nrm.min(dim=1)
    spread = (eps_t[None] >= best[:, None]) & (V != -1)
    if (spread & (V == 1)).any():
        raise RuntimeError("soundness check failed: a counterexample lies in a verified set")
    src = cex_delta[torch.arange(n, device=V.device), arg]  # N×k
    cex_delta.copy_(torch.where(spread[:, :, None], src[:, None, :], cex_delta))
    V.copy_(torch.where(spread, torch.full_like(V, -1), V))


def _falsify_endpoints_down(h64: nn.Module, z: Tensor, B: Tensor, p: float, C: Tensor, d: Tensor,
                            eps_t: Tensor, V: Tensor, cex_delta: Tensor) -> Tensor:
    """In place: float64 checks of the axis endpoints ±ε, from the largest ε down.

    A sample is checked at the next smaller ε only while it is falsified at the larger one, so the
    cost is about 2 forward passes per sample (plus 2 per further falsified ε). Cells found get
    V = −1 and their checked δ; larger ε of the same sample follow by `_spread_counterexamples`.
    Returns the N×E mask of the cells whose endpoints were checked.
    """
    n = V.shape[0]
    active = (V != -1).all(dim=1)  # clean mistakes are falsified already
    checked = torch.zeros_like(V, dtype=torch.bool)
    for e in sorted(range(eps_t.numel()), key=lambda j: -float(eps_t[j])):
        ii = (active & (V[:, e] == 0)).nonzero().flatten()
        if not ii.numel():
            break
        s = LatentSet(z[ii], B, eps_t[e].expand(ii.numel()).contiguous(), p)
        res = pgd(h64, s, C[ii], d[ii], steps=0, restarts=0, h64=h64)
        checked[ii, e] = True
        f = ii[res.found]
        V[f, e] = -1
        cex_delta[f, e] = res.delta[res.found]
        nxt = torch.zeros(n, dtype=torch.bool, device=V.device)
        nxt[f] = True
        active &= nxt
    _spread_counterexamples(V, cex_delta, eps_t, p)
    return checked


def verify(
    head: nn.Module,
    z0,
    labels,
    latent,
    eps,
    spec: str = "label",
    method: str = "crown-ibp",
    *,
    attack: bool = True,
    radius: bool = True,
    max_radius: float | None = None,
    memory_budget: int | None = None,
    device=None,
    engine: str = "auditai",
    output_index: int | None = None,
    tau: float | None = None,
    class_names: Sequence[str] | None = None,
    chunk_size: int | None = None,
    radius_tol: float | None = None,
    split_budget: int = 64,
    attack_steps: int = 20,
    attack_restarts: int = 2,
    seed: int = 0,
    precision: str | None = None,
    alpha_options: dict | None = None,
    max_time: float | None = None,
    split_method: str | None = None,
) -> VerificationResult:
    """Verify the spec for every sample over the set `latent.make(z0, ε)` for each ε in `eps`.

    Args:
        head: f_d (Z → Y). z0: N×d codes. labels: N class indices (None for spec 'prediction',
            'band' and sign-of-z0 'binary'). latent: a set kind (Dims, Direction, Basis).
        eps: list of radii. spec: label | prediction | binary | band (output_index, tau).
        method: ibp | crown-ibp | crown | alpha-crown | complete.
        attack: run latent PGD on the unknown rows. radius: compute certified radii by bisection
            up to `max_radius` (default max(eps)) to within `radius_tol` (default max_radius/1000);
            exact (ExactLine) for method='complete' with k = 1 on a piecewise-linear head.
        memory_budget / chunk_size: rows per engine call (results do not depend on it).
        split_budget: cubes per row for branch and bound (method='complete', k ≤ 3).
        split_budget: pieces per row for branch and bound (method='complete' where ExactLine does
            not apply, k ≤ 8). max_time: seconds for that branch and bound (None: no limit);
            rows still open then stay unknown and `notes` says how many. split_method: the
            bound of the first pass and on each piece (crown-ibp, crown or alpha-crown; default
            crown-ibp for k ≤ 3, crown beyond).
        alpha_options: α-CROWN options (iterations, lr, lr_decay, early_stop, share_rows,
            optimize_intermediate; `auditai.bounds.alpha.AlphaOptions`) for method 'alpha-crown'.
        precision: 'float32' or 'float64' bound arithmetic (default float32 on CUDA, float64 on
            CPU). float32 bounds carry a sound rounding allowance (auditai.bounds.rounding), so a
            margin within it is unknown; they apply to ibp and crown-ibp on Dense/ReLU chains,
            anything else is bounded in float64 (result.precision says which).
    """
    t_start = time.perf_counter()
    m_key = parse_method(method, VERIFY_METHODS)
    if not hasattr(latent, "make"):
        raise InputError(
            f"latent must be a set kind (auditai.latent.Dims, Direction or Basis), got {type(latent).__name__}"
        )
    eps_l = _eps_list(eps)
    E = len(eps_l)
    dev = torch.device(device) if device is not None else next(
        (p.device for p in head.parameters()), torch.device("cpu"))
    h64 = head64(head).to(dev)
    z = z0 if isinstance(z0, Tensor) else torch.as_tensor(z0)
    z = z.to(device=dev, dtype=torch.float64)
    base = latent.make(z, 0.0)  # validates z0 and the set
    n, B, p, k = base.n, base.basis, base.p, base.k
    with torch.no_grad():
        out0 = h64(base.z0)
    sp = make_spec(spec, out0, labels, output_index=output_index, tau=tau, class_names=class_names)
    C, d = sp.C, sp.d
    m = sp.m
    complete = m_key == "complete"
    ops = _head_ops(h64, engine, base.d)
    foreign = isinstance(ops, UnsupportedLayerError)
    pl = not foreign and is_piecewise_linear(h64, (base.d,))
    if complete and k > 8:
        raise InputError(f"method 'complete' needs a set of k ≤ 8 directions; this set has k = {k}")
    if max_time is not None and not (isinstance(max_time, (int, float)) and max_time > 0):
        raise InputError(f"max_time must be a number of seconds > 0, got {max_time!r}")
    notes: list[str] = []
    use_line = complete and k == 1 and pl
    # a graph (e.g. classifier∘decoder, auditai.blackbox) is deep and wide: its first bound pass
    # uses CROWN, whose intermediate bounds decide far more there than CROWN-IBP's
    graph_head = not foreign and bool(ops) and ops[0].kind == "graph"
    if split_method is None:
        split_method = "crown-ibp" if k <= 3 and not graph_head else "crown"
    if split_method not in ("crown-ibp", "crown", "alpha-crown"):
        raise InputError(f"split_method must be crown-ibp, crown or alpha-crown, got {split_method!r}")
    bmethod = split_method if complete else m_key
    if max_radius is None:
        max_radius = max(eps_l) if max(eps_l) > 0 else 1.0
    max_radius = float(max_radius)
    if not (math.isfinite(max_radius) and max_radius >= 0):
        raise InputError(f"max_radius must be finite and >= 0, got {max_radius}")
    widths = [max(t.shape) for t in h64.parameters() if t.dim()] if foreign else [op.width for op in ops]
    width = max(widths + [C.shape[2]])
    chunk = _chunk_rows(chunk_size, memory_budget, m, width)
    prec = parse_precision(precision, dev)
    bnd = _Bounder(h64, B, p, bmethod, engine, chunk, ops, prec, alpha_options)
    z = base.z0
    gen = torch.Generator().manual_seed(seed)

    # ---------------------------------------------------------- centre
    m0 = sp.margins(out0)
    clean_bad = m0.min(dim=1).values <= 0
    cols = list(eps_l) + ([max_radius] if radius else [])
    Ec = len(cols)
    eps_t = torch.tensor(cols, dtype=torch.float64, device=dev)
    # ---------------------------------------------------------- bound pass, largest ε first
    # Sets are nested in ε, so a sample verified at ε is verified at every smaller ε: each column is
    # bounded (one batched call over its rows, chunked) only for the samples not yet verified at a
    # larger ε, and never for clean mistakes (falsified at the centre). The verdicts equal those of
    # bounding every cell and then filling in monotonicity.
    V = torch.zeros(n, Ec, dtype=torch.int8, device=dev)
    V[clean_bad] = -1
    cex_delta = torch.zeros(n, Ec, k, dtype=torch.float64, device=dev)  # counterexample δ per cell
    checked = torch.zeros(n, Ec, dtype=torch.bool, device=dev)  # endpoints ±ε already checked
    if m_key in ("crown", "alpha-crown", "complete") and (attack or complete):
        # where a bound row costs far more than a forward pass, falsify first: the endpoints ±ε of
        # the largest ε, then of the next smaller ε for the samples falsified there, … (float64
        # checks); the bound pass then skips every ε a counterexample already falsifies.
        checked = _falsify_endpoints_down(h64, z, B, p, C, d, eps_t, V, cex_delta)
    pending = ~clean_bad
    seen: set[float] = set()
    for e in sorted(range(Ec), key=lambda j: -cols[j]):
        ii = (pending & (V[:, e] == 0)).nonzero().flatten()
        if not ii.numel():
            continue
        if cols[e] in seen:  # a repeated ε: same bounds, already filled in
            continue
        seen.add(cols[e])
        ok = bnd.certified(z[ii], eps_t[e].expand(ii.numel()).contiguous(), C[ii], d[ii]) > 0
        V[ii[ok]] = torch.where(eps_t <= eps_t[e], 1, V[ii[ok]]).to(torch.int8)
        pending[ii[ok]] = False
    # ---------------------------------------------------------- falsify / complete
    line = None
    if use_line:
        # cheap falsification first: the endpoints ±ε of the undecided cells, checked in float64
        # (a counterexample at ε falsifies every larger ε); ExactLine then needs the segment only up
        # to the largest ε still undecided (or, for the radius, up to the nearest counterexample).
        ni, ei = ((V == 0) & ~checked).nonzero(as_tuple=True)
        if ni.numel():
            s0 = LatentSet(z[ni], B, eps_t[ei].contiguous(), p)
            res = pgd(h64, s0, C[ni], d[ni], steps=0, restarts=0, h64=h64)
            V[ni[res.found], ei[res.found]] = -1
            cex_delta[ni[res.found], ei[res.found]] = res.delta[res.found]
        _spread_counterexamples(V, cex_delta, eps_t, p)
        undecided = V == 0
        need = (~clean_bad) & undecided.any(dim=1)
        if radius:
            need |= (~clean_bad) & (V != 1).any(dim=1)
        idx = need.nonzero().flatten()
        if idx.numel():
            R = torch.where(undecided[idx], eps_t, 0.0).amax(dim=1)
            if radius:  # the exact radius lies below the nearest counterexample
                Rf = torch.where(V[idx] == -1, eps_t, math.inf).amin(dim=1)
                Rf = torch.where(torch.isfinite(Rf), Rf, torch.where(V[idx] != 1, eps_t, 0.0).amax(dim=1))
                R = torch.maximum(R, Rf)
            per = max(1, chunk // 64)
            line = exact_line(h64, z[idx], B[:, 0], eps_t.expand(idx.numel(), Ec).clamp(max=R[:, None]).contiguous(),
                              C[idx], d[idx], radius_cap=R, chunk=per)
            ok = line.min_margin > line.tol[:, None]
            wt = line.worst_t.nan_to_num(0.0)
            for e in range(Ec):
                inside = eps_t[e] <= R
                cur = V[idx, e]
                newv = torch.where(ok[:, e], 1, 0).to(torch.int8)
                # the worst point is checked in float64 where ExactLine did not certify (verdict −1
                # only after that check; a bound-verified cell it violates would be an engine bug)
                chk = (inside & ~ok[:, e] & (cur != -1)).nonzero().flatten()
                if chk.numel():
                    s_e = LatentSet(z[idx[chk]], B, eps_t[e].expand(chk.numel()).contiguous(), p)
                    mm, _, _ = check_points(h64, s_e, wt[chk, e:e + 1], C[idx[chk]], d[idx[chk]])
                    newv[chk[mm <= 0]] = -1
                if ((cur == 1) & (newv == -1) & inside).any():
                    raise RuntimeError("soundness check failed: ExactLine falsified a verified sample")
                upd = inside & (cur == 0)
                V[idx[upd], e] = newv[upd]
                cex_delta[idx[upd], e] = wt[upd, e:e + 1]
    elif attack or complete:
        unk = (V == 0)
        ni, ei = unk.nonzero(as_tuple=True)
        if ni.numel():
            s = LatentSet(z[ni], B, eps_t[ei].contiguous(), p)
            res = pgd(h64, s, C[ni], d[ni], steps=attack_steps, restarts=attack_restarts,
                      generator=gen, h64=h64) if attack else None
            if res is not None:
                V[ni[res.found], ei[res.found]] = -1
                cex_delta[ni[res.found], ei[res.found]] = res.delta[res.found]
            if complete:
                still = V[ni, ei] == 0
                ni2, ei2 = ni[still], ei[still]
                if ni2.numel():
                    sr = branch_and_bound(h64, z[ni2], B, eps_t[ei2].contiguous(), p, C[ni2], d[ni2],
                                          method=split_method, budget=split_budget, chunk=chunk,
                                          max_time=max_time, alpha_options=alpha_options)
                    n_to = int(sr.timed_out.sum()) if sr.timed_out is not None else 0
                    n_bud = int((sr.status == 0).sum()) - n_to
                    if n_to:
                        notes.append(f"complete: {n_to} (sample, ε) cells left unknown because max_time "
                                     f"({max_time:g} s) ran out")
                    if n_bud:
                        notes.append(f"complete: {n_bud} (sample, ε) cells left unknown because the split "
                                     f"budget ({split_budget} pieces per cell) ran out")
                    V[ni2, ei2] = sr.status
                    f = sr.status == -1
                    cex_delta[ni2[f], ei2[f]] = sr.delta[f]
    _spread_counterexamples(V, cex_delta, eps_t, p)
    # ---------------------------------------------------------- certified radius
    rad = None
    if radius:
        rad = torch.zeros(n, dtype=torch.float64, device=dev)
        if use_line:
            verified_all = (V == 1).all(dim=1)
            rad[verified_all] = max_radius
            if line is not None:
                rad[idx] = torch.minimum(line.radius, torch.tensor(max_radius, dtype=torch.float64))
                rad[idx[V[idx, Ec - 1] == 1]] = max_radius
        else:
            rtol = radius_tol if radius_tol is not None else max(max_radius, 1e-12) / 1000.0
            lo = torch.where(V == 1, eps_t, 0.0).amax(dim=1)
            hi = torch.where((V != 1) & (eps_t[None] > lo[:, None]), eps_t, math.inf).amin(dim=1)
            # not even verified at 0: check the centre itself (ε = 0)
            zero = (V != 1).all(dim=1) & ~clean_bad
            if zero.any():
                c0 = bnd.certified(z[zero], torch.zeros(int(zero.sum()), dtype=torch.float64, device=dev),
                                   C[zero], d[zero])
                hi[zero.nonzero().flatten()[c0 <= 0]] = 0.0
            hi[clean_bad] = 0.0
            act = torch.isfinite(hi) & (hi - lo > rtol)
            while act.any():
                ii = act.nonzero().flatten()
                mid = (lo[ii] + hi[ii]) / 2
                c = bnd.certified(z[ii], mid, C[ii], d[ii]) > 0
                lo[ii[c]] = mid[c]
                hi[ii[~c]] = mid[~c]
                act = torch.isfinite(hi) & (hi - lo > rtol)
            rad = torch.where(torch.isfinite(hi), lo, torch.full_like(lo, max_radius))
            rad[clean_bad] = 0.0
    # ---------------------------------------------------------- result
    V = V[:, :E].contiguous().cpu()
    vf = (V == 1).double().mean(dim=0)
    ff = (V == -1).double().mean(dim=0)
    uf = (V == 0).double().mean(dim=0)
    ce = float(clean_bad.double().mean()) if n else 0.0
    cexs: list[Counterexample] = []
    ni, ei = (V == -1).nonzero(as_tuple=True)
    if ni.numel():
        dl = cex_delta[:, :E][ni, ei]
        s = LatentSet(z[ni], B, eps_t[ei].contiguous(), p)
        mm, row, outs = check_points(h64, s, dl, C[ni], d[ni])
        zz = z[ni] + dl @ B.T
        for j in range(ni.numel()):
            a, e = int(ni[j]), int(ei[j])
            cexs.append(Counterexample(a, e, eps_l[e], dl[j].tolist(), zz[j].tolist(), int(row[j]),
                                       sp.row_name(a, int(row[j])), float(mm[j]), outs[j].tolist()))
    return VerificationResult(
        eps=eps_l, method=m_key, spec=sp.kind, set_description=latent.describe(), norm=norm_name(p), n=n,
        clean_error=[ce] * E, verified_error=[float(1 - x) for x in vf], falsified_fraction=[float(x) for x in ff],
        unknown_fraction=[float(x) for x in uf], verdicts=V, certified_radius=None if rad is None else rad.cpu(),
        max_radius=max_radius if radius else None, counterexamples=cexs, time_s=time.perf_counter() - t_start,
        device=str(dev), engine=engine, precision=bnd.precision, notes=notes,
    )
