"""The stages of `auditai.verify.verify`, each a function with tensors in and out.

`prepare` validates the inputs, checks the centres (clean mistakes) and builds the `Problem`: the
float64 head, centres, set basis, spec rows, the radii columns (the ε list, then `max_radius` for the
certified radius) and the chunked `_Bounder`. The cell verdicts V (N×columns, +1/−1/0) and the
counterexample δ per cell then pass through `first_cells` (centre and, for costly bounds, the axis
endpoints), `bound_cells` (largest ε first), `line_cells` (ExactLine, method 'complete' with k = 1 on a
piecewise-linear head) or `attack_cells` and `complete_cells` (latent PGD, branch and bound), and
`radius_of` (certified radii). Each stage returns new tensors; its inputs are left as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from auditai.attack import check_points, head64, pgd
from auditai.bounds import bound
from auditai.bounds.engine import guard_conversion
from auditai.bounds.exactline import exact_line, is_piecewise_linear, layer_ops
from auditai.bounds.ops import op_sources, to_ops
from auditai.bounds.rounding import certified_lower, chain_of, parse_precision
from auditai.bounds.split import bound_tolerance, branch_and_bound
from auditai.errors import AuditaiError, InputError, UnsupportedLayerError
from auditai.latent import LatentSet
from auditai.names import parse_engine
from auditai.spec import Spec, make_spec

_BYTES_PER_UNIT = 8 * 6  # float64 coefficient tensors, a few live at once
# Rounding margin of auto_LiRPA's float64 bounds for a head outside our layers (no per-layer
# magnitudes to derive one from): 2^-20 relative, about 10^10 times float64's unit roundoff.
_FOREIGN_REL_TOL = 2.0 ** -20


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




@dataclass(frozen=True, eq=False)
class Problem:
    """What every stage of one `verify` call shares (all tensors on `dev`, float64)."""

    h64: nn.Module  # the head, float64
    z: Tensor  # N×d centres
    B: Tensor  # d×k set basis
    p: float  # set norm
    k: int
    n: int
    sp: Spec  # spec rows C·f + d
    C: Tensor
    d: Tensor
    eps_l: list  # the ε list
    cols: list  # the radii columns: ε list, then max_radius when a radius is asked
    eps_t: Tensor  # cols as a tensor
    clean_bad: Tensor  # N: a clean mistake (margin ≤ 0 at the centre)
    m_key: str  # the method
    complete: bool
    use_line: bool  # ExactLine decides (complete, k = 1, piecewise-linear head)
    split_method: str
    max_radius: float
    chunk: int
    bnd: _Bounder
    dev: torch.device


def prepare(head: nn.Module, z0, labels, latent, eps, spec: str, m_key: str, *, radius: bool,
            max_radius: float | None, memory_budget: int | None, device, engine: str,
            output_index: int | None, tau: float | None, class_names: Sequence[str] | None,
            chunk_size: int | None, precision: str | None, alpha_options: dict | None,
            max_time: float | None, split_method: str | None) -> Problem:
    """Validate the inputs (errors name the bad value), check the centres and build the `Problem`."""
    if not hasattr(latent, "make"):
        raise InputError(
            f"latent must be a set kind (auditai.latent.Dims, Direction or Basis), got {type(latent).__name__}"
        )
    eps_l = _eps_list(eps)
    dev = torch.device(device) if device is not None else next(
        (p.device for p in head.parameters()), torch.device("cpu"))
    h64 = head64(head).to(dev)
    z = z0 if isinstance(z0, Tensor) else torch.as_tensor(z0)
    z = z.to(device=dev, dtype=torch.float64)
    base = latent.make(z, 0.0)  # validates z0 and the set
    k = base.k
    with torch.no_grad():
        out0 = h64(base.z0)
    sp = make_spec(spec, out0, labels, output_index=output_index, tau=tau, class_names=class_names)
    complete = m_key == "complete"
    ops = _head_ops(h64, engine, base.d)
    foreign = isinstance(ops, UnsupportedLayerError)
    pl = not foreign and is_piecewise_linear(h64, (base.d,))
    if complete and k > 8:
        raise InputError(f"method 'complete' needs a set of k ≤ 8 directions; this set has k = {k}")
    if max_time is not None and not (isinstance(max_time, (int, float)) and max_time > 0):
        raise InputError(f"max_time must be a number of seconds > 0, got {max_time!r}")
    # a graph (e.g. classifier∘decoder, auditai.blackbox) is deep and wide: its first bound pass
    # uses CROWN, whose intermediate bounds decide far more there than CROWN-IBP's
    graph_head = not foreign and bool(ops) and ops[0].kind == "graph"
    if split_method is None:
        split_method = "crown-ibp" if k <= 3 and not graph_head else "crown"
    if split_method not in ("crown-ibp", "crown", "alpha-crown"):
        raise InputError(f"split_method must be crown-ibp, crown or alpha-crown, got {split_method!r}")
    if max_radius is None:
        max_radius = max(eps_l) if max(eps_l) > 0 else 1.0
    max_radius = float(max_radius)
    if not (math.isfinite(max_radius) and max_radius >= 0):
        raise InputError(f"max_radius must be finite and >= 0, got {max_radius}")
    widths = [max(t.shape) for t in h64.parameters() if t.dim()] if foreign else [op.width for op in ops]
    width = max(widths + [sp.C.shape[2]])
    chunk = _chunk_rows(chunk_size, memory_budget, sp.m, width)
    bnd = _Bounder(h64, base.basis, base.p, split_method if complete else m_key, engine, chunk, ops,
                   parse_precision(precision, dev), alpha_options)
    # the centre: a clean mistake is falsified at every ε
    clean_bad = sp.margins(out0).min(dim=1).values <= 0
    cols = list(eps_l) + ([max_radius] if radius else [])
    return Problem(h64=h64, z=base.z0, B=base.basis, p=base.p, k=k, n=base.n, sp=sp, C=sp.C, d=sp.d,
                   eps_l=eps_l, cols=cols, eps_t=torch.tensor(cols, dtype=torch.float64, device=dev),
                   clean_bad=clean_bad, m_key=m_key, complete=complete, use_line=complete and k == 1 and pl,
                   split_method=split_method, max_radius=max_radius, chunk=chunk, bnd=bnd, dev=dev)


def first_cells(pb: Problem, attack: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The verdicts V (N×columns) of the centre check and, where a bound row costs far more than a
    forward pass, of the axis endpoints ±ε (largest ε first). Returns V, the counterexample δ per
    cell (N×columns×k) and the mask of the cells whose endpoints were checked."""
    Ec = len(pb.cols)
    V = torch.zeros(pb.n, Ec, dtype=torch.int8, device=pb.dev)
    V[pb.clean_bad] = -1
    cex_delta = torch.zeros(pb.n, Ec, pb.k, dtype=torch.float64, device=pb.dev)
    checked = torch.zeros(pb.n, Ec, dtype=torch.bool, device=pb.dev)
    if pb.m_key in ("crown", "alpha-crown", "complete") and (attack or pb.complete):
        # falsify first: the bound pass then skips every ε a counterexample already falsifies
        checked = _falsify_endpoints_down(pb.h64, pb.z, pb.B, pb.p, pb.C, pb.d, pb.eps_t, V, cex_delta)
    return V, cex_delta, checked


def bound_cells(pb: Problem, V: Tensor) -> Tensor:
    """V with the cells the bound certifies set to +1, largest ε first.

    Sets are nested in ε, so a sample verified at ε is verified at every smaller ε: each column is
    bounded (one batched call over its rows, chunked) only for the samples not yet verified at a
    larger ε, and never for clean mistakes. The verdicts equal those of bounding every cell and then
    filling in monotonicity."""
    V = V.clone()
    pending = ~pb.clean_bad
    seen: set[float] = set()
    for e in sorted(range(len(pb.cols)), key=lambda j: -pb.cols[j]):
        ii = (pending & (V[:, e] == 0)).nonzero().flatten()
        if not ii.numel():
            continue
        if pb.cols[e] in seen:  # a repeated ε: same bounds, already filled in
            continue
        seen.add(pb.cols[e])
        ok = pb.bnd.certified(pb.z[ii], pb.eps_t[e].expand(ii.numel()).contiguous(), pb.C[ii], pb.d[ii]) > 0
        V[ii[ok]] = torch.where(pb.eps_t <= pb.eps_t[e], 1, V[ii[ok]]).to(torch.int8)
        pending[ii[ok]] = False
    return V


def line_cells(pb: Problem, V: Tensor, cex_delta: Tensor, checked: Tensor,
               radius: bool) -> tuple[Tensor, Tensor, Any, Tensor | None]:
    """The complete check by ExactLine (k = 1, piecewise-linear head). Returns V, the δ per cell,
    the ExactLine result (None if no sample needed it) and the samples it ran on."""
    V, cex_delta = V.clone(), cex_delta.clone()
    h64, z, B, p, C, d, eps_t = pb.h64, pb.z, pb.B, pb.p, pb.C, pb.d, pb.eps_t
    Ec = len(pb.cols)
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
    need = (~pb.clean_bad) & undecided.any(dim=1)
    if radius:
        need |= (~pb.clean_bad) & (V != 1).any(dim=1)
    idx = need.nonzero().flatten()
    if not idx.numel():
        return V, cex_delta, None, idx
    R = torch.where(undecided[idx], eps_t, 0.0).amax(dim=1)
    if radius:  # the exact radius lies below the nearest counterexample
        Rf = torch.where(V[idx] == -1, eps_t, math.inf).amin(dim=1)
        Rf = torch.where(torch.isfinite(Rf), Rf, torch.where(V[idx] != 1, eps_t, 0.0).amax(dim=1))
        R = torch.maximum(R, Rf)
    per = max(1, pb.chunk // 64)
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
    return V, cex_delta, line, idx


def attack_cells(pb: Problem, V: Tensor, cex_delta: Tensor, steps: int, restarts: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Latent PGD on the unknown cells (float64-confirmed points only). Returns V and the δ per cell."""
    V, cex_delta = V.clone(), cex_delta.clone()
    ni, ei = (V == 0).nonzero(as_tuple=True)
    if ni.numel():
        s = LatentSet(pb.z[ni], pb.B, pb.eps_t[ei].contiguous(), pb.p)
        res = pgd(pb.h64, s, pb.C[ni], pb.d[ni], steps=steps, restarts=restarts, generator=generator, h64=pb.h64)
        V[ni[res.found], ei[res.found]] = -1
        cex_delta[ni[res.found], ei[res.found]] = res.delta[res.found]
    return V, cex_delta


def complete_cells(pb: Problem, V: Tensor, cex_delta: Tensor, split_budget: int, max_time: float | None,
                   alpha_options: dict | None) -> tuple[Tensor, Tensor, list[str]]:
    """Branch and bound over δ on the unknown cells. Returns V, the δ per cell and notes saying
    how many cells stayed unknown and why (time or split budget)."""
    V, cex_delta = V.clone(), cex_delta.clone()
    notes: list[str] = []
    ni, ei = (V == 0).nonzero(as_tuple=True)
    if ni.numel():
        sr = branch_and_bound(pb.h64, pb.z[ni], pb.B, pb.eps_t[ei].contiguous(), pb.p, pb.C[ni], pb.d[ni],
                              method=pb.split_method, budget=split_budget, chunk=pb.chunk,
                              max_time=max_time, alpha_options=alpha_options)
        n_to = int(sr.timed_out.sum()) if sr.timed_out is not None else 0
        n_bud = int((sr.status == 0).sum()) - n_to
        if n_to:
            notes.append(f"complete: {n_to} (sample, ε) cells left unknown because max_time "
                         f"({max_time:g} s) ran out")
        if n_bud:
            notes.append(f"complete: {n_bud} (sample, ε) cells left unknown because the split "
                         f"budget ({split_budget} pieces per cell) ran out")
        V[ni, ei] = sr.status
        f = sr.status == -1
        cex_delta[ni[f], ei[f]] = sr.delta[f]
    return V, cex_delta, notes


def spread(pb: Problem, V: Tensor, cex_delta: Tensor) -> tuple[Tensor, Tensor]:
    """V and δ with each counterexample falsifying every larger ε of its sample."""
    V, cex_delta = V.clone(), cex_delta.clone()
    _spread_counterexamples(V, cex_delta, pb.eps_t, pb.p)
    return V, cex_delta


def radius_of(pb: Problem, V: Tensor, line, idx: Tensor | None, radius_tol: float | None) -> Tensor:
    """Certified radii (N, float64): exact from ExactLine where it ran, otherwise by bisection of
    the bound between the largest verified and the smallest unverified column."""
    n, Ec, eps_t, max_radius = pb.n, len(pb.cols), pb.eps_t, pb.max_radius
    rad = torch.zeros(n, dtype=torch.float64, device=pb.dev)
    if pb.use_line:
        verified_all = (V == 1).all(dim=1)
        rad[verified_all] = max_radius
        if line is not None:
            rad[idx] = torch.minimum(line.radius, torch.tensor(max_radius, dtype=torch.float64))
            rad[idx[V[idx, Ec - 1] == 1]] = max_radius
        return rad
    z, C, d, bnd = pb.z, pb.C, pb.d, pb.bnd
    rtol = radius_tol if radius_tol is not None else max(max_radius, 1e-12) / 1000.0
    lo = torch.where(V == 1, eps_t, 0.0).amax(dim=1)
    hi = torch.where((V != 1) & (eps_t[None] > lo[:, None]), eps_t, math.inf).amin(dim=1)
    # not even verified at 0: check the centre itself (ε = 0)
    zero = (V != 1).all(dim=1) & ~pb.clean_bad
    if zero.any():
        c0 = bnd.certified(z[zero], torch.zeros(int(zero.sum()), dtype=torch.float64, device=pb.dev),
                           C[zero], d[zero])
        hi[zero.nonzero().flatten()[c0 <= 0]] = 0.0
    hi[pb.clean_bad] = 0.0
    act = torch.isfinite(hi) & (hi - lo > rtol)
    while act.any():
        ii = act.nonzero().flatten()
        mid = (lo[ii] + hi[ii]) / 2
        c = bnd.certified(z[ii], mid, C[ii], d[ii]) > 0
        lo[ii[c]] = mid[c]
        hi[ii[~c]] = mid[~c]
        act = torch.isfinite(hi) & (hi - lo > rtol)
    rad = torch.where(torch.isfinite(hi), lo, torch.full_like(lo, max_radius))
    rad[pb.clean_bad] = 0.0
    return rad
