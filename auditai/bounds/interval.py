"""Interval bound propagation (IBP; Gowal et al. 2018) as centre/radius pairs.

An affine op maps (c, r) to (op(c), |op|(r)); a monotone activation maps [l, u] to
[f(l), f(u)]. The first op that mixes coordinates of the ℓp ball δ gets the exact interval
by Hölder's inequality (c ± ε‖row‖_q, DESIGN.md "Every latent set is an affine image of a
norm ball"); later ones the interval of the box before them.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from auditai.bounds.ops import Activation, Conv, Dense, apply_rows, dual_norm, fold_spec

Interval = Tuple[Tensor, Tensor]


def first_mix_radius(op, eps: Tensor, p: float, r_box: Tensor) -> Tensor:
    """Exact radius of op(δ) over ‖δ‖_p ≤ ε for the first coordinate-mixing op (Dense, Conv)."""
    if isinstance(op, Dense):
        return eps.unsqueeze(1) * dual_norm(op.weight, p)
    if isinstance(op, Conv) and p == 2.0:
        ones = torch.ones_like(r_box)
        sq = op._conv(ones, op.weight * op.weight, None).clamp_min(0).sqrt()
        return sq * eps.reshape(-1, *([1] * len(op.out_shape)))
    # ℓ∞ ball through a conv: |W| ε is exact; ℓ1: the box is a sound over-approximation
    return op.forward_abs(r_box)


def ibp_affine(op, c: Tensor, r: Tensor) -> Interval:
    return op.forward(c), op.forward_abs(r)


def ibp_activation(op: Activation, c: Tensor, r: Tensor) -> Tuple[Tensor, Tensor, Interval]:
    """(new centre, new radius, the pre-activation interval (l, u))."""
    l, u = c - r, c + r
    fl, fu = op.forward(l), op.forward(u)
    return (fu + fl) / 2, (fu - fl) / 2, (l, u)


def ibp_spec(C: Optional[Tensor], c: Tensor, r: Tensor) -> Interval:
    """Bounds of C·x for x ∈ [c − r, c + r] (interval arithmetic; C of (m, D) or (N, m, D))."""
    c, r = c.flatten(1), r.flatten(1)
    if C is None:
        return c - r, c + r
    if C.dim() == 2:
        cc, rr = c @ C.T, r @ C.abs().T
    else:
        cc, rr = torch.einsum("nmi,ni->nm", C, c), torch.einsum("nmi,ni->nm", C.abs(), r)
    return cc - rr, cc + rr


def ibp_folded(W: Tensor, bias: Optional[Tensor], c: Tensor, r: Tensor, eps: Tensor, p: float, fresh: bool) -> Interval:
    """Bounds of W·x + bias, W = C·W_last of (m, in) or (N, m, in), over the current interval
    (or exactly over the ball when `fresh`: the head is a single affine map)."""
    if W.dim() == 2:
        cc = c @ W.T
        rr = eps.unsqueeze(1) * dual_norm(W, p) if fresh else r @ W.abs().T
    else:
        cc = torch.einsum("nmi,ni->nm", W, c)
        rr = eps.unsqueeze(1) * dual_norm(W, p) if fresh else torch.einsum("nmi,ni->nm", W.abs(), r)
    if bias is not None:
        cc = cc + bias
    return cc - rr, cc + rr


def distinct_rows(X: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """(distinct rows, index of each row's distinct row) of X (N×D), via a random projection
    and a 1-D unique (torch.unique(dim=0) loops in Python); (None, None) if hashing collides."""
    g = torch.Generator(device="cpu").manual_seed(0)
    key = X @ torch.randn(X.shape[1], generator=g, dtype=X.dtype).to(X.device)
    _, inv = torch.unique(key, return_inverse=True)
    first = torch.full((int(inv.max()) + 1,), X.shape[0], dtype=torch.long, device=X.device)
    first.scatter_reduce_(0, inv, torch.arange(X.shape[0], device=X.device), reduce="amin")
    uniq = X[first]
    if not torch.equal(uniq[inv], X):
        return None, None
    return uniq, inv


def ibp_last_layer(op, C: Tensor, c: Tensor, r: Tensor, eps: Tensor, p: float, fresh: bool) -> Interval:
    """IBP of C·(W x + b) with C folded into W. Per-sample C built from labels has only a few
    distinct values: fold each distinct C once and gather, instead of one C·W per sample."""
    if C.dim() == 3 and C.shape[0] > 8:
        uniq, inv = distinct_rows(C.flatten(1))
        if uniq is not None and uniq.shape[0] * 4 <= C.shape[0]:
            u, m = uniq.shape[0], C.shape[1]
            Cu = uniq.reshape(u, m, C.shape[2])
            Wu = (Cu @ op.weight).reshape(u * m, -1)
            cc = (c @ Wu.T).reshape(-1, u, m)
            if fresh:
                rr = eps.reshape(-1, 1, 1) * dual_norm(Wu, p).reshape(1, u, m)
            else:
                rr = (r @ Wu.abs().T).reshape(-1, u, m)
            pick = torch.arange(C.shape[0], device=C.device)
            cc, rr = cc[pick, inv], rr.expand(C.shape[0], u, m)[pick, inv]
            if op.bias is not None:
                cc = cc + apply_rows(C, op.bias, 1) if op.bias.dim() == 2 else cc + C @ op.bias
            return cc - rr, cc + rr
    W, b = fold_spec(op, C)
    return ibp_folded(W, b, c, r, eps, p, fresh)
