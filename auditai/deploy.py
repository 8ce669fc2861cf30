"""Deployment ranges and the deployment check (paper §2.4, DESIGN.md "Spec-sheet and deployment").

Every unit test perturbs a few *tested coordinates* of the latent code:

- a direction v (normalised to v̂): the coordinate t = v̂·z;
- dims [i, j, ...]: the coordinates z[i], z[j], ... (a per-dimension radius r scales the
  half-width of that coordinate to r·ε);
- a basis B (d×k): the coordinates t = B⁺z (least-squares coordinates, B⁺B = I), so that
  z0 + B·δ moves t by exactly δ.

Written as a projection P (k×d) and a scale s (k): t = P·z, and the set moves t_j by at most
s_j·ε (for any ℓp ball, |δ_j| ≤ ‖δ‖_p ≤ ε). Over the training codes t_n = P·z_n, the global
range of the paper §2.4 is, per coordinate and ε,

    [μ({t_n − sε}) − σ({t_n − sε}),  μ({t_n + sε}) + σ({t_n + sε})]
  = [μ(t) − sε − σ(t),  μ(t) + sε + σ(t)]

with μ the mean and σ the population standard deviation (ddof = 0) over the N codes.
An input whose code has every tested coordinate of a unit test in that range is *inside* the
verified range of operation of that unit test at that ε.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from auditai.errors import SheetError
from auditai.sheet.coords import (  # noqa: F401  (re-exported: their home before sheet/coords.py)
    SET_KINDS,
    CoordinateStats,
    as_codes,
    deployment_range,
    set_basis,
    set_coordinates,
)

if TYPE_CHECKING:  # pragma: no cover
    from auditai.sheet.record import SheetRecord as SpecSheet
    from auditai.sheet.record import UnitTestSheet


# --------------------------------------------------------------------------- the check
@dataclass
class UnitTestCheck:
    """One input against one unit test at one ε."""

    input: int
    unit_test: str
    eps: float
    inside: bool
    values: list[float]
    lower: list[float]
    upper: list[float]
    labels: list[str]
    verified_error: float | None  # at `verified_error_eps` (None: not measured at ≥ ε)
    verified_error_eps: float | None
    passed: bool | None  # the gate's verdict at verified_error_eps, None when not gated

    def to_dict(self) -> dict:
        return {
            "input": self.input,
            "unit_test": self.unit_test,
            "eps": self.eps,
            "inside": self.inside,
            "coordinates": [
                {"label": lb, "value": v, "lower": lo, "upper": hi, "inside": bool(lo <= v <= hi)}
                for lb, v, lo, hi in zip(self.labels, self.values, self.lower, self.upper)
            ],
            "verified_error": self.verified_error,
            "verified_error_eps": self.verified_error_eps,
            "gate_passed": self.passed,
        }


@dataclass
class DeploymentCheck:
    """Per input and unit test: inside the deployment range or not, and the verified error there."""

    checks: list[UnitTestCheck]
    n_inputs: int
    sources: list[str] = field(default_factory=list)  # one name per input (file:row), optional

    @property
    def all_inside(self) -> bool:
        return all(c.inside for c in self.checks)

    def outside(self) -> list[UnitTestCheck]:
        return [c for c in self.checks if not c.inside]

    def inside_matrix(self, unit_tests: Sequence[str]) -> np.ndarray:
        """N×T bool: input n inside the range of unit test t."""
        col = {u: j for j, u in enumerate(unit_tests)}
        m = np.zeros((self.n_inputs, len(unit_tests)), dtype=bool)
        for c in self.checks:
            m[c.input, col[c.unit_test]] = c.inside
        return m

    def to_dict(self) -> dict:
        return {
            "n_inputs": self.n_inputs,
            "all_inside": self.all_inside,
            "n_outside": len({c.input for c in self.checks if not c.inside}),
            "sources": list(self.sources),
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_text(self, max_listed: int = 20) -> str:
        from tabulate import tabulate

        names: list[str] = []
        for c in self.checks:
            if c.unit_test not in names:
                names.append(c.unit_test)
        rows = []
        for u in names:
            cs = [c for c in self.checks if c.unit_test == u]
            c0 = cs[0]
            rng = ", ".join(f"{lb} ∈ [{lo:.3g}, {hi:.3g}]" for lb, lo, hi in zip(c0.labels, c0.lower, c0.upper))
            ve = "not measured" if c0.verified_error is None else f"{c0.verified_error:.3g}"
            rows.append([u, f"{c0.eps:g}", rng, sum(c.inside for c in cs), sum(not c.inside for c in cs), ve])
        out = [
            tabulate(rows, headers=["unit test", "ε", "deployment range", "inside", "outside", "verified err"]),
        ]
        bad = self.outside()
        if bad:
            out.append(f"\n{len({c.input for c in bad})} of {self.n_inputs} input(s) out of range:")
            for c in bad[:max_listed]:
                src = self.sources[c.input] if c.input < len(self.sources) else f"input {c.input}"
                why = ", ".join(
                    f"{lb}={v:.3g} ∉ [{lo:.3g}, {hi:.3g}]"
                    for lb, v, lo, hi in zip(c.labels, c.values, c.lower, c.upper)
                    if not lo <= v <= hi
                )
                out.append(f"  {src}: {c.unit_test} (ε={c.eps:g}): {why}")
            if len(bad) > max_listed:
                out.append(f"  … and {len(bad) - max_listed} more")
        else:
            out.append(f"\nall {self.n_inputs} input(s) inside the deployment range of every unit test")
        return "\n".join(out)


def default_eps(ut: UnitTestSheet) -> float:
    """The ε a check uses when none is given: the largest gated ε whose gate passed; else the
    largest gated ε; else the largest measured ε."""
    gated = [r for r in ut.rows if r.gated]
    passed = [r.eps for r in gated if r.passed]
    if passed:
        return max(passed)
    if gated:
        return max(r.eps for r in gated)
    if not ut.rows:
        raise SheetError(f"unit test '{ut.name}' has no measured ε")
    return max(r.eps for r in ut.rows)


def _error_at(ut: UnitTestSheet, eps: float):
    """Verified error at ε, or at the smallest measured ε' ≥ ε (an upper bound: verification is
    monotone in ε); (None, None, None) when nothing at or above ε was measured."""
    above = sorted((r for r in ut.rows if r.eps >= eps - 1e-12), key=lambda r: r.eps)
    if not above:
        return None, None, None
    r = above[0]
    return r.verified_error, r.eps, r.passed


def check_codes(sheet: SpecSheet, z: Any, eps: float | None = None, sources: Sequence[str] | None = None) -> DeploymentCheck:
    """Check codes z (N×d) against every unit test's deployment range at ε (default per unit
    test: `default_eps`). Batched: one matmul per unit test."""
    d = sheet.latent_dim
    codes = as_codes(z, "input codes", d=d)
    if eps is not None and (not np.isfinite(eps) or eps < 0):
        raise SheetError(f"--eps must be a finite value >= 0, got {eps}")
    checks: list[UnitTestCheck] = []
    for ut in sheet.unit_tests:
        if ut.deployment is None:
            raise SheetError(
                f"unit test '{ut.name}' has no deployment range in the spec-sheet "
                "(it was built without training codes)"
            )
        e = default_eps(ut) if eps is None else float(eps)
        P = np.asarray(ut.projection, dtype=np.float64)
        t = codes @ P.T  # N×k
        lo, hi = ut.deployment.range(e, ut.scale)
        inside = ((t >= lo) & (t <= hi)).all(axis=1)
        ve, ve_eps, passed = _error_at(ut, e)
        lo_l, hi_l = lo.tolist(), hi.tolist()
        for n in range(codes.shape[0]):
            checks.append(
                UnitTestCheck(n, ut.name, e, bool(inside[n]), t[n].tolist(), lo_l, hi_l, list(ut.labels), ve, ve_eps, passed)
            )
    return DeploymentCheck(checks, codes.shape[0], list(sources or []))


def check_inputs(sheet: SpecSheet, x: Any, model: Any, sources: Sequence[str] | None = None, eps: float | None = None) -> DeploymentCheck:
    """Encode inputs x with `model` (an AuditModel: `model.encode`; without an encoder, x are
    the codes) and check the codes."""
    if not hasattr(model, "encode"):
        raise SheetError(f"check_inputs needs a model with encode(x) (an AuditModel), got {type(model).__name__}")
    z = model.encode(x)
    return check_codes(sheet, z, eps=eps, sources=sources)
