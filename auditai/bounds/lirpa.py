"""auto_LiRPA 0.7.1 as an optional engine: the same bounds through the paper's library.

Used as the reference our engine is cross-checked against, and for heads with layers our ops
do not cover (any graph auto_LiRPA can trace). The latent set is folded into a wrapper whose
input is δ, so auto_LiRPA sees the same ℓp ball in δ-space as our engine does.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

_METHOD = {"ibp": "IBP", "crown-ibp": "CROWN-IBP", "crown": "CROWN"}


def auto_lirpa_available() -> Tuple[bool, str]:
    """(True, version) when auto_LiRPA imports here, else (False, the reason)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import auto_LiRPA  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the environment
        return False, f"auto_LiRPA is not importable ({type(e).__name__}: {e}); install the wheel in ../shared/wheels with --no-deps"
    return True, getattr(auto_LiRPA, "__version__", "?")


class _Folded(nn.Module):
    """δ ↦ head(z0 + δ·Bᵀ) for a fixed batch of centres."""

    def __init__(self, head: nn.Module, basis: Tensor) -> None:
        super().__init__()
        self.head = head
        self.basis = nn.Linear(basis.shape[1], basis.shape[0], bias=False)
        self.basis.weight.data = basis.detach().clone()

    def forward(self, delta: Tensor, z0: Tensor) -> Tensor:
        return self.head(self.basis(delta) + z0)


def bound_auto_lirpa(head: nn.Module, latent_set, C: Optional[Tensor], method: str,
                     bound_upper: bool = True) -> Tuple[Tensor, Optional[Tensor]]:
    """Bounds of C·head(z) over the set, computed by auto_LiRPA (BoundedModule.compute_bounds)."""
    ok, why = auto_lirpa_available()
    if not ok:
        raise ImportError(why)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from auto_LiRPA import BoundedModule, BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm

    s = latent_set
    n, k, d = s.n, s.k, s.d
    if C is not None and C.dim() == 2:
        C = C.unsqueeze(0).expand(n, *C.shape)
    axis_aligned = bool(((s.basis != 0).sum(0) == 1).all() and ((s.basis != 0).sum(1) <= 1).all())
    identity = k == d and bool(torch.equal(s.basis, torch.eye(d, dtype=s.basis.dtype, device=s.basis.device)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if math.isinf(s.p) and axis_aligned:
            # a box on z: the same set, given to auto_LiRPA without a wrapper layer
            half = s.eps.unsqueeze(1) * s.basis.abs().sum(1).unsqueeze(0)
            ptb = PerturbationLpNorm(norm=math.inf, x_L=s.z0 - half, x_U=s.z0 + half)
            bm = BoundedModule(head, s.z0, device=s.z0.device, verbose=0)
            args = (BoundedTensor(s.z0, ptb),)
        elif identity:
            ptb = PerturbationLpNorm(norm=s.p, eps=s.eps.reshape(n, 1))
            bm = BoundedModule(head, s.z0, device=s.z0.device, verbose=0)
            args = (BoundedTensor(s.z0, ptb),)
        else:
            model = _Folded(head, s.basis).to(s.z0.device)
            delta0 = torch.zeros(n, k, dtype=s.z0.dtype, device=s.z0.device)
            if math.isinf(s.p):
                e = s.eps.unsqueeze(1).expand(n, k)
                ptb = PerturbationLpNorm(norm=math.inf, x_L=-e, x_U=e)
            else:
                ptb = PerturbationLpNorm(norm=s.p, eps=s.eps.reshape(n, 1))
            bm = BoundedModule(model, (delta0, s.z0), device=s.z0.device, verbose=0)
            args = (BoundedTensor(delta0, ptb), s.z0)
        lo, up = bm.compute_bounds(x=args, C=C, method=_METHOD[method], bound_upper=bound_upper)
    return lo.detach(), (up.detach() if bound_upper else None)
