"""The tested coordinates of a unit test's set and their statistics over training codes.

A set moves a few coordinates t = P·z of the latent code by at most s·ε (see `auditai.deploy`
for the derivation); `CoordinateStats` holds μ and σ of those coordinates over the training
codes, from which the deployment range [μ − sε − σ, μ + sε + σ] follows (paper §2.4).
Part of the spec-sheet record: numpy only, no renderer, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditai.errors import SheetError
from auditai.names import SET_KINDS  # its home is auditai.names (sheet.record re-exports it)


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
