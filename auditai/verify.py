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

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from auditai import verify_stages as stages
from auditai.attack import check_points
from auditai.latent import LatentSet, norm_name
from auditai.names import METHODS, parse_method

VERIFY_METHODS = METHODS  # auditai.names is their home


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
    pb = stages.prepare(head, z0, labels, latent, eps, spec, m_key, radius=radius, max_radius=max_radius,
                        memory_budget=memory_budget, device=device, engine=engine, output_index=output_index,
                        tau=tau, class_names=class_names, chunk_size=chunk_size, precision=precision,
                        alpha_options=alpha_options, max_time=max_time, split_method=split_method)
    V, cex_delta, checked = stages.first_cells(pb, attack)
    V = stages.bound_cells(pb, V)
    line = idx = None
    notes: list[str] = []
    if pb.use_line:
        V, cex_delta, line, idx = stages.line_cells(pb, V, cex_delta, checked, radius)
    else:
        if attack:
            V, cex_delta = stages.attack_cells(pb, V, cex_delta, attack_steps, attack_restarts,
                                               torch.Generator().manual_seed(seed))
        if pb.complete:
            V, cex_delta, notes = stages.complete_cells(pb, V, cex_delta, split_budget, max_time, alpha_options)
    V, cex_delta = stages.spread(pb, V, cex_delta)
    rad = stages.radius_of(pb, V, line, idx, radius_tol) if radius else None
    return _assemble(pb, V, cex_delta, rad, latent, engine, notes, radius, time.perf_counter() - t_start)


def _assemble(pb: stages.Problem, V: Tensor, cex_delta: Tensor, rad: Tensor | None, latent, engine: str,
              notes: list, radius: bool, time_s: float) -> VerificationResult:
    """The result: verdicts of the ε columns, their fractions, the float64-checked counterexamples."""
    E = len(pb.eps_l)
    V = V[:, :E].contiguous().cpu()
    vf = (V == 1).double().mean(dim=0)
    ff = (V == -1).double().mean(dim=0)
    uf = (V == 0).double().mean(dim=0)
    ce = float(pb.clean_bad.double().mean()) if pb.n else 0.0
    cexs: list[Counterexample] = []
    ni, ei = (V == -1).nonzero(as_tuple=True)
    if ni.numel():
        dl = cex_delta[:, :E][ni, ei]
        s = LatentSet(pb.z[ni], pb.B, pb.eps_t[ei].contiguous(), pb.p)
        mm, row, outs = check_points(pb.h64, s, dl, pb.C[ni], pb.d[ni])
        zz = pb.z[ni] + dl @ pb.B.T
        for j in range(ni.numel()):
            a, e = int(ni[j]), int(ei[j])
            cexs.append(Counterexample(a, e, pb.eps_l[e], dl[j].tolist(), zz[j].tolist(), int(row[j]),
                                       pb.sp.row_name(a, int(row[j])), float(mm[j]), outs[j].tolist()))
    return VerificationResult(
        eps=pb.eps_l, method=pb.m_key, spec=pb.sp.kind, set_description=latent.describe(), norm=norm_name(pb.p),
        n=pb.n, clean_error=[ce] * E, verified_error=[float(1 - x) for x in vf],
        falsified_fraction=[float(x) for x in ff], unknown_fraction=[float(x) for x in uf], verdicts=V,
        certified_radius=None if rad is None else rad.cpu(), max_radius=pb.max_radius if radius else None,
        counterexamples=cexs, time_s=time_s, device=str(pb.dev), engine=engine, precision=pb.bnd.precision,
        notes=notes,
    )
