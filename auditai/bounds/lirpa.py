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

from auditai.bounds.guard import plain

_METHOD = {"ibp": "IBP", "crown-ibp": "CROWN-IBP", "crown": "CROWN", "alpha-crown": "CROWN-Optimized"}


def auto_lirpa_available() -> Tuple[bool, str]:
    """(True, version) when auto_LiRPA imports here, else (False, the reason)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import auto_LiRPA  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the environment
        return False, (f"auto_LiRPA is not importable ({type(e).__name__}: {e}); "
                       "install the wheel in ../shared/wheels with --no-deps")
    return True, getattr(auto_LiRPA, "__version__", "?")


class _Folded(nn.Module):
    """(δ, c) ↦ rest(W·δ + c): the set z0 + B·δ folded into the head's first layer.

    When the head starts with a Linear (W1, b1), W = W1·B and c = W1·z0 + b1, so auto_LiRPA
    bounds the same first layer exactly as our engine does; otherwise W = B and c = z0.
    """

    def __init__(self, head: nn.Module, basis: Tensor) -> None:
        super().__init__()
        # fold only where head[1:] ∘ head[0] is the head's own function (a plain chain, no hooks)
        chain = plain(head, nn.Sequential) and len(head) and not (head._forward_hooks or head._forward_pre_hooks)
        first = head[0] if chain else None
        W = basis.detach().clone()
        foldable = first is not None and plain(first, nn.Linear) and not (
            first._forward_hooks or first._forward_pre_hooks)
        self.first = first if foldable else None
        if self.first is not None:
            W = self.first.weight.detach() @ W
            self.rest = head[1:]
        else:
            self.rest = head
        self.lin = nn.Linear(W.shape[1], W.shape[0], bias=False).to(W.dtype)
        self.lin.weight.data = W

    def offset(self, z0: Tensor) -> Tensor:
        if self.first is None:
            return z0
        with torch.no_grad():
            return self.first(z0)

    def forward(self, delta: Tensor, c: Tensor) -> Tensor:
        return self.rest(self.lin(delta) + c)


def bound_auto_lirpa(head: nn.Module, latent_set, C: Optional[Tensor], method: str,
                     bound_upper: bool = True, alpha_options=None) -> Tuple[Tensor, Optional[Tensor]]:
    """Bounds of C·head(z) over the set, computed by auto_LiRPA (BoundedModule.compute_bounds);
    for "alpha-crown", CROWN-Optimized with the iterations and learning rate of `alpha_options`."""
    ok, why = auto_lirpa_available()
    if not ok:
        raise ImportError(why)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from auto_LiRPA import BoundedModule, BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm

    s = latent_set
    n, k, d = s.n, s.k, s.d
    opts = None
    if method == "alpha-crown":
        from auditai.bounds.alpha import alpha_options as _alpha_options

        o = _alpha_options(alpha_options)
        opts = {"optimize_bound_args": {"iteration": o.iterations, "lr_alpha": o.lr, "lr_decay": o.lr_decay,
                                        "early_stop_patience": o.early_stop or o.iterations + 1}}
    if C is not None and C.dim() == 2:
        C = C.unsqueeze(0).expand(n, *C.shape)
    axis_aligned = bool(((s.basis != 0).sum(0) == 1).all() and ((s.basis != 0).sum(1) <= 1).all())
    identity = k == d and bool(torch.equal(s.basis, torch.eye(d, dtype=s.basis.dtype, device=s.basis.device)))
    old_dtype = torch.get_default_dtype()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # auto_LiRPA creates some constants in the default dtype: make it the set's
        torch.set_default_dtype(s.z0.dtype)
        try:
            if math.isinf(s.p) and axis_aligned:
                # a box on z: the same set, given to auto_LiRPA without a wrapper layer
                half = s.eps.unsqueeze(1) * s.basis.abs().sum(1).unsqueeze(0)
                ptb = PerturbationLpNorm(norm=math.inf, x_L=s.z0 - half, x_U=s.z0 + half)
                bm = BoundedModule(head, s.z0, device=s.z0.device, verbose=0, bound_opts=opts)
                args = (BoundedTensor(s.z0, ptb),)
            elif identity:
                ptb = PerturbationLpNorm(norm=s.p, eps=s.eps.reshape(n, 1))
                bm = BoundedModule(head, s.z0, device=s.z0.device, verbose=0, bound_opts=opts)
                args = (BoundedTensor(s.z0, ptb),)
            else:
                model = _Folded(head, s.basis).to(s.z0.device)
                delta0 = torch.zeros(n, k, dtype=s.z0.dtype, device=s.z0.device)
                if math.isinf(s.p):
                    e = s.eps.unsqueeze(1).expand(n, k)
                    ptb = PerturbationLpNorm(norm=math.inf, x_L=-e, x_U=e)
                else:
                    ptb = PerturbationLpNorm(norm=s.p, eps=s.eps.reshape(n, 1))
                c0 = model.offset(s.z0)
                bm = BoundedModule(model, (delta0, c0), device=s.z0.device, verbose=0, bound_opts=opts)
                args = (BoundedTensor(delta0, ptb), c0)
            lo, up = bm.compute_bounds(x=args, C=C, method=_METHOD[method], bound_upper=bound_upper)
        finally:
            torch.set_default_dtype(old_dtype)
    return lo.detach(), (up.detach() if bound_upper else None)
