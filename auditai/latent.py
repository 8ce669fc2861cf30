"""Latent sets: affine images of norm balls, S = {z0 + B·δ : ‖δ‖_p ≤ ε} (DESIGN.md, paper §2.2).

A `LatentSet` holds a batch of centres z0 (N×d), one basis B (d×k) shared by the batch, the
norm p ∈ {inf, 2, 1} and a radius ε per row. The set kinds `Dims`, `Direction` and `Basis`
describe a set without centre and radius; `kind.make(z0, eps)` turns them into a LatentSet.
Folding B into the head's first affine layer turns every set into an ℓp ball in δ-space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from auditai.names import NORMS, norm_name, parse_norm  # noqa: F401  (re-exported: their home before names.py)
from auditai.errors import InputError


def dual_norm(p: float) -> float:
    """q with 1/p + 1/q = 1 (Hölder): the norm that concretizes a linear bound over an ℓp ball."""
    return {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}[p]


def _as_tensor(x, name: str, dtype=None, device=None) -> Tensor:
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x, dtype=dtype or torch.get_default_dtype())
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"{name} must be a tensor or array of numbers: {e}") from None
    if not (x.is_floating_point()):
        x = x.to(dtype or torch.get_default_dtype())
    if dtype is not None:
        x = x.to(dtype)
    if device is not None:
        x = x.to(device)
    return x


def _check_eps(eps, n: int, dtype, device) -> Tensor:
    e = _as_tensor(eps, "eps", dtype=dtype, device=device)
    if e.dim() == 0:
        e = e.expand(n)
    elif e.dim() != 1 or e.shape[0] != n:
        raise InputError(
            f"eps must be a scalar or one value per row of z0 (shape ({n},)), got shape {tuple(e.shape)}"
        )
    if torch.isnan(e).any():
        raise InputError("eps contains NaN")
    if torch.isinf(e).any():
        raise InputError("eps contains inf: a latent set must be bounded")
    if (e < 0).any():
        raise InputError(f"eps must be >= 0, got min {e.min().item():g}")
    return e.contiguous()


def _check_z0(z0) -> Tensor:
    z0 = _as_tensor(z0, "z0")
    if z0.dim() == 1:
        z0 = z0.unsqueeze(0)
    if z0.dim() != 2:
        raise InputError(f"z0 must be N×d (or a single code of d), got shape {tuple(z0.shape)}")
    if not torch.isfinite(z0).all():
        bad = (~torch.isfinite(z0)).any(dim=1).nonzero().flatten()[:5].tolist()
        raise InputError(f"z0 contains NaN or inf (rows {bad})")
    return z0


@dataclass(frozen=True, eq=False)
class LatentSet:
    """The set {z0 + B·δ : ‖δ‖_p ≤ ε}, batched over z0.

    Attributes:
        z0: N×d centres.
        basis: d×k matrix B, shared by the batch.
        eps: N radii (one per row).
        p: math.inf, 2.0 or 1.0.
    """

    z0: Tensor
    basis: Tensor
    eps: Tensor
    p: float

    def __post_init__(self) -> None:
        if self.z0.dim() != 2 or self.basis.dim() != 2 or self.eps.dim() != 1:
            raise InputError("LatentSet needs z0 N×d, basis d×k and eps of N; use the constructors")
        if self.basis.shape[0] != self.z0.shape[1]:
            raise InputError(
                f"basis has {self.basis.shape[0]} rows but the codes have d={self.z0.shape[1]}"
            )
        if self.eps.shape[0] != self.z0.shape[0]:
            raise InputError(f"eps has {self.eps.shape[0]} values for {self.z0.shape[0]} codes")

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_basis(cls, z0, B, eps, norm: Union[str, float] = "inf") -> "LatentSet":
        """{z0 + B·δ : ‖δ‖_p ≤ ε} for a d×k basis B (a subspace spanned by directions)."""
        z0 = _check_z0(z0)
        B = _as_tensor(B, "basis", dtype=z0.dtype, device=z0.device)
        if B.dim() == 1:
            B = B.unsqueeze(1)
        if B.dim() != 2 or B.shape[0] != z0.shape[1]:
            raise InputError(
                f"basis must be d×k with d={z0.shape[1]} (the codes' size), got shape {tuple(B.shape)}"
            )
        if B.shape[1] == 0:
            raise InputError("basis has no columns: the set would be a single point")
        if not torch.isfinite(B).all():
            raise InputError("basis contains NaN or inf")
        if (B.abs().sum(dim=0) == 0).any():
            cols = (B.abs().sum(dim=0) == 0).nonzero().flatten().tolist()
            raise InputError(f"basis column(s) {cols} are zero: a zero direction spans nothing")
        p = parse_norm(norm)
        e = _check_eps(eps, z0.shape[0], z0.dtype, z0.device)
        return cls(z0, B.contiguous(), e, p)

    @classmethod
    def from_direction(cls, z0, v, eps) -> "LatentSet":
        """{z0 + t·v/‖v‖ : |t| ≤ ε}: a segment along one direction (e.g. 'pose'); v is normalised."""
        z0 = _check_z0(z0)
        v = _as_tensor(v, "direction", dtype=z0.dtype, device=z0.device).flatten()
        if v.shape[0] != z0.shape[1]:
            raise InputError(f"direction has length {v.shape[0]}, the codes have d={z0.shape[1]}")
        if not torch.isfinite(v).all():
            raise InputError("direction contains NaN or inf")
        n = torch.linalg.vector_norm(v)
        if n == 0:
            raise InputError("direction is the zero vector: it has no direction to move along")
        return cls.from_basis(z0, (v / n).unsqueeze(1), eps, "inf")

    @classmethod
    def from_dims(cls, z0, dims, eps, norm: Union[str, float] = "inf", radii=None) -> "LatentSet":
        """Perturb latent dimensions `dims` (the paper's unit test on one dimension).

        B holds the identity columns of `dims`, scaled by `radii` (per-dimension radii: the
        set is then {z0 + Σ r_j δ_j e_{dims_j}}, e.g. a box with different widths).
        """
        z0 = _check_z0(z0)
        d = z0.shape[1]
        if isinstance(dims, int):
            dims = [dims]
        dims = [int(i) for i in (dims.tolist() if isinstance(dims, Tensor) else dims)]
        if not dims:
            raise InputError("dims is empty: name at least one latent dimension")
        bad = [i for i in dims if not -d <= i < d]
        if bad:
            raise InputError(f"latent index {bad} out of range for codes of d={d} (valid 0..{d - 1})")
        dims = [i % d for i in dims]
        if len(set(dims)) != len(dims):
            raise InputError(f"dims {dims} repeats an index")
        B = torch.zeros(d, len(dims), dtype=z0.dtype, device=z0.device)
        B[dims, torch.arange(len(dims))] = 1.0
        if radii is not None:
            r = _as_tensor(radii, "radii", dtype=z0.dtype, device=z0.device).flatten()
            if r.shape[0] != len(dims):
                raise InputError(f"radii has {r.shape[0]} values for {len(dims)} dims")
            if not torch.isfinite(r).all() or (r <= 0).any():
                raise InputError("radii must be finite and > 0")
            B = B * r
        return cls.from_basis(z0, B, eps, norm)

    # ---------------------------------------------------------------- helpers
    @property
    def n(self) -> int:
        return self.z0.shape[0]

    @property
    def d(self) -> int:
        return self.z0.shape[1]

    @property
    def k(self) -> int:
        return self.basis.shape[1]

    def points(self, delta: Tensor) -> Tensor:
        """z0 + B·δ for δ of shape N×k (or S×N×k): latent points of the set."""
        return self.z0 + delta @ self.basis.T

    def project(self, delta: Tensor) -> Tensor:
        """Project δ (…×N×k) onto the ℓp ball of radius eps (exact for inf and 2; ℓ1 by sorting)."""
        return project_ball(delta, self.eps, self.p)

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """num×N×k points δ in the ball (uniform directions, vertices and the boundary included)."""
        return sample_ball(num, self.n, self.k, self.eps, self.p, generator, self.z0.dtype, self.z0.device)

    def to(self, device=None, dtype=None) -> "LatentSet":
        return LatentSet(
            self.z0.to(device=device, dtype=dtype),
            self.basis.to(device=device, dtype=dtype),
            self.eps.to(device=device, dtype=dtype),
            self.p,
        )

    def select(self, index) -> "LatentSet":
        """The sub-batch of rows `index` (a slice or index tensor)."""
        return LatentSet(self.z0[index], self.basis, self.eps[index], self.p)

    def with_eps(self, eps) -> "LatentSet":
        return LatentSet(self.z0, self.basis, _check_eps(eps, self.n, self.z0.dtype, self.z0.device), self.p)


def project_ball(delta: Tensor, eps: Tensor, p: float) -> Tensor:
    """Euclidean projection of δ (…×N×k) onto {‖δ‖_p ≤ eps_n} row-wise."""
    e = eps.unsqueeze(-1)
    if math.isinf(p):
        return torch.maximum(torch.minimum(delta, e), -e)
    if p == 2.0:
        nrm = torch.linalg.vector_norm(delta, dim=-1, keepdim=True)
        return delta * torch.clamp(e / nrm.clamp_min(1e-30), max=1.0)
    # ℓ1: projection onto the simplex of |δ| (Duchi et al. 2008), vectorised.
    a = delta.abs()
    inside = a.sum(-1, keepdim=True) <= e
    mu, _ = torch.sort(a, dim=-1, descending=True)
    cs = mu.cumsum(-1) - e
    ar = torch.arange(1, a.shape[-1] + 1, dtype=a.dtype, device=a.device)
    cond = (mu - cs / ar) > 0
    rho = cond.to(a.dtype).cumsum(-1).argmax(-1, keepdim=True)
    theta = cs.gather(-1, rho) / (rho + 1).to(a.dtype)
    proj = torch.sign(delta) * (a - theta).clamp_min(0)
    return torch.where(inside, delta, proj)


def sample_ball(num, n, k, eps, p, generator=None, dtype=None, device=None) -> Tensor:
    """num×n×k points in the ℓp ball of radius eps: a mix of interior points and vertices."""
    dtype = dtype or torch.get_default_dtype()
    g = generator
    u = torch.randn(num, n, k, generator=g, dtype=dtype, device="cpu").to(device)
    r = torch.rand(num, n, 1, generator=g, dtype=dtype, device="cpu").to(device)
    e = eps.reshape(1, n, 1)
    if math.isinf(p):
        x = torch.rand(num, n, k, generator=g, dtype=dtype, device="cpu").to(device) * 2 - 1
        # a third of the samples on vertices, where piecewise-linear extremes often lie
        vert = torch.sign(u)
        m = num // 3
        x[:m] = vert[:m]
        return x * e
    if p == 2.0:
        dirn = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min(1e-30)
        return dirn * r.pow(1.0 / k) * e
    # ℓ1: exponential spacings give uniform points on the simplex; random signs
    ex = -torch.log(torch.rand(num, n, k + 1, generator=g, dtype=dtype, device="cpu").clamp_min(1e-30)).to(device)
    s = ex / ex.sum(-1, keepdim=True)
    return torch.sign(u) * s[..., :k] * e


# ----------------------------------------------------------------------- set kinds
@dataclass(frozen=True)
class Dims:
    """Set kind: latent dimensions `indices` under norm `norm` (optional per-dimension radii)."""

    indices: tuple
    norm: Union[str, float] = "inf"
    radii: tuple | None = None

    def __init__(self, indices, norm="inf", radii=None) -> None:
        idx = (indices,) if isinstance(indices, int) else tuple(int(i) for i in indices)
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "norm", norm_name(parse_norm(norm)))
        object.__setattr__(self, "radii", None if radii is None else tuple(float(r) for r in radii))

    def make(self, z0, eps) -> LatentSet:
        return LatentSet.from_dims(z0, list(self.indices), eps, self.norm, self.radii)

    def describe(self) -> str:
        return f"dims {list(self.indices)} ℓ{'∞' if self.norm == 'inf' else self.norm}"


@dataclass(frozen=True, eq=False)
class Direction:
    """Set kind: the segment along one direction vector (normalised), |t| ≤ ε."""

    vector: Tensor
    name: str | None = None

    def make(self, z0, eps) -> LatentSet:
        return LatentSet.from_direction(z0, self.vector, eps)

    @property
    def norm(self) -> str:
        return "inf"

    def describe(self) -> str:
        return f"direction '{self.name}'" if self.name else "direction"


@dataclass(frozen=True, eq=False)
class Basis:
    """Set kind: the subspace spanned by the columns of `matrix` (d×k), ‖δ‖_p ≤ ε."""

    matrix: Tensor
    norm: Union[str, float] = "inf"
    name: str | None = None

    def make(self, z0, eps) -> LatentSet:
        return LatentSet.from_basis(z0, self.matrix, eps, self.norm)

    def describe(self) -> str:
        nm = f"basis '{self.name}'" if self.name else "basis"
        return f"{nm} ℓ{'∞' if norm_name(parse_norm(self.norm)) == 'inf' else norm_name(parse_norm(self.norm))}"


#: a set kind: the one name for "Dims, Direction or Basis" across the library
SetKind = Union[Dims, Direction, Basis]
