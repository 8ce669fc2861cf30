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

if TYPE_CHECKING:  # pragma: no cover
    from auditai.sheet.record import SpecSheet, UnitTestSheet

SET_KINDS = ("direction", "dims", "basis")


# --------------------------------------------------------------------------- coordinates
def set_coordinates(
    kind: str, value: Any, d: int | None = None, radii: Sequence[float] | None = None, name: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The tested coordinates of a set: (P k×d, s of k, labels); t = P·z (see module doc).

    `value` is the direction vector (d), the list of dims, or the basis matrix (d×k).
    `d` is required for dims (the code size).
    """
    if kind == "direction":
        v = np.asarray(value, dtype=np.float64).reshape(-1)
        n = float(np.linalg.norm(v))
        if v.size == 0 or not np.isfinite(v).all() or n == 0.0:
            raise SheetError(f"direction {name or ''} must be a finite, non-zero vector")
        label = f"t along '{name}'" if name else "t along direction"
        return (v / n)[None, :], np.ones(1), [label]
    if kind == "dims":
        idx = [int(i) for i in (value if isinstance(value, (list, tuple, np.ndarray)) else [value])]
        if d is None:
            raise SheetError("dims coordinates need the latent size d")
        if not idx or any(not 0 <= i < d for i in idx):
            raise SheetError(f"dims {idx} out of range for codes of d={d}")
        P = np.zeros((len(idx), d))
        P[np.arange(len(idx)), idx] = 1.0
        s = np.ones(len(idx)) if radii is None else np.asarray(radii, dtype=np.float64).reshape(-1)
        if s.shape[0] != len(idx):
            raise SheetError(f"radii has {s.shape[0]} values for {len(idx)} dims")
        return P, s, [f"z[{i}]" for i in idx]
    if kind == "basis":
        B = np.asarray(value, dtype=np.float64)
        if B.ndim == 1:
            B = B[:, None]
        if B.ndim != 2 or B.shape[1] == 0 or not np.isfinite(B).all():
            raise SheetError(f"basis {name or ''} must be a finite d×k matrix, got shape {B.shape}")
        if np.linalg.matrix_rank(B) < B.shape[1]:
            raise SheetError(f"basis {name or ''} (d×k = {B.shape}) has dependent columns")
        nm = f"'{name}'" if name else "basis"
        return np.linalg.pinv(B), np.ones(B.shape[1]), [f"t{j} of {nm}" for j in range(B.shape[1])]
    raise SheetError(f"set kind must be one of {SET_KINDS}, got {kind!r}")


def set_basis(kind: str, value: Any, d: int, radii: Sequence[float] | None = None) -> np.ndarray:
    """The d×k matrix B of the set (direction normalised, dims scaled by radii)."""
    if kind == "direction":
        v = np.asarray(value, dtype=np.float64).reshape(-1)
        return (v / np.linalg.norm(v))[:, None]
    if kind == "dims":
        P, s, _ = set_coordinates("dims", value, d, radii)
        return P.T * s[None, :]
    B = np.asarray(value, dtype=np.float64)
    return B[:, None] if B.ndim == 1 else B


def as_codes(z: Any, name: str = "codes", d: int | None = None) -> np.ndarray:
    """N×d float64 array from a tensor/array (a single code of d becomes 1×d)."""
    if hasattr(z, "detach"):
        z = z.detach().cpu().double().numpy()
    try:
        a = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SheetError(f"{name} must be an array of numbers: {e}") from None
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise SheetError(f"{name} must be N×d latent codes, got shape {a.shape}")
    if d is not None and a.shape[1] != d:
        raise SheetError(f"{name} have d={a.shape[1]} but the spec-sheet's codes have d={d}")
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))[:5].tolist()
        raise SheetError(f"{name} contain NaN or inf (rows {bad})")
    return a


# --------------------------------------------------------------------------- ranges (§2.4)
@dataclass
class CoordinateStats:
    """μ and σ (ddof 0) of each tested coordinate t = P·z over the codes of `source`."""

    mean: list[float]
    std: list[float]
    n_codes: int
    source: str | None = None

    @classmethod
    def from_codes(cls, codes: Any, projection: np.ndarray, source: str | None = None) -> CoordinateStats:
        z = as_codes(codes, "training codes", d=projection.shape[1])
        if z.shape[0] == 0:
            raise SheetError("no training codes to compute the deployment range from")
        t = z @ projection.T  # N×k
        return cls(t.mean(axis=0).tolist(), t.std(axis=0).tolist(), int(z.shape[0]), source)

    def range(self, eps: float, scale: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) of each coordinate at ε: [μ − sε − σ, μ + sε + σ] (paper §2.4)."""
        mu, sd = np.asarray(self.mean), np.asarray(self.std)
        half = np.asarray(scale, dtype=np.float64) * float(eps)
        return mu - half - sd, mu + half + sd

    def to_dict(self) -> dict:
        return {"source": self.source, "n_codes": self.n_codes, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> CoordinateStats:
        return cls([float(x) for x in d["mean"]], [float(x) for x in d["std"]], int(d["n_codes"]), d.get("source"))


def deployment_range(codes: Any, projection: Any, eps: float, scale: Sequence[float] | None = None):
    """The paper's formula computed literally: (lower, upper) arrays of k for one ε.

    lower = μ({t_n − sε}) − σ({t_n − sε}), upper = μ({t_n + sε}) + σ({t_n + sε}), t_n = P·z_n.
    """
    P = np.atleast_2d(np.asarray(projection, dtype=np.float64))
    t = as_codes(codes, d=P.shape[1]) @ P.T
    s = np.ones(P.shape[0]) if scale is None else np.asarray(scale, dtype=np.float64)
    lo, hi = t - s * eps, t + s * eps
    return lo.mean(0) - lo.std(0), hi.mean(0) + hi.std(0)


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
