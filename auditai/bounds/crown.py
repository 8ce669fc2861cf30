"""CROWN's backward pass (Zhang et al. 2018; CROWN-IBP, Zhang et al. 2020).

Starting from spec rows A = C at the output, walk the ops backwards: an affine op maps
A ↦ A·W and adds A·b to the bias; an activation is replaced by its linear relaxation, the
lower line where a coefficient is positive and the upper line where it is negative. At the
input δ (an ℓp ball of radius ε around 0) the linear bound A·δ + bias is concretized with the
dual norm: lower = bias − ε‖A‖_q (paper Appendix A.2). Upper bounds are lower bounds of −C,
so both come from one pass over the stacked rows [C; −C].
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from auditai.bounds.ops import Activation, apply_rows
from auditai.bounds.relax import relax

Interval = Tuple[Tensor, Tensor]


def dual_norm_of_rows(A: Tensor, p: float, in_nd: int) -> Tensor:
    """‖A_row‖_q over the last `in_nd` dims, 1/p + 1/q = 1."""
    Af = A.flatten(-in_nd) if in_nd > 1 else A
    if p == math.inf:
        return Af.abs().sum(-1)
    if p == 2.0:
        return torch.linalg.vector_norm(Af, dim=-1)
    return Af.abs().amax(-1)


class Relaxations:
    """Relaxation lines of each activation, computed once per bound call and reused."""

    def __init__(self, ops: Sequence, pre: Sequence[Optional[Interval]]) -> None:
        self.ops, self.pre = ops, pre
        self._cache: dict = {}

    def __getitem__(self, i: int):
        hit = self._cache.get(i)
        if hit is None:
            op: Activation = self.ops[i]
            l, u = self.pre[i]
            lo_d, lo_b, up_d, up_b = relax(op.kind, l, u, op.slope)
            zero_lo_b = op.piecewise_linear
            hit = (lo_d, None if zero_lo_b else lo_b, up_d - lo_d, up_b)
            self._cache[i] = hit
        return hit

    def invalidate(self, i: int) -> None:
        self._cache.pop(i, None)


def backward_lower(
    ops: Sequence,
    A: Tensor,
    relaxations: Relaxations,
    eps: Tensor,
    p: float,
    in_nd: int,
    stop: Optional[int] = None,
) -> Tensor:
    """Lower bound of A·(output of ops[:stop]) over the ball; A is (m, *out) or (N, m, *out).

    Returns N×m. Coefficients become per-sample at the first activation.
    """
    n = eps.shape[0]
    stop = len(ops) if stop is None else stop
    bias: Optional[Tensor] = None

    def add(b: Optional[Tensor]) -> None:
        nonlocal bias
        if b is None:
            return
        bias = b if bias is None else bias + b

    for i in range(stop - 1, -1, -1):
        op = ops[i]
        if isinstance(op, Activation):
            lo_d, lo_b, diff, up_b = relaxations[i]
            nd = len(op.shape)
            if A.dim() == nd + 1:  # shared rows: make them per-sample
                A = A.unsqueeze(0)
            lo = lo_d.unsqueeze(1)
            A_neg = A.clamp(max=0)
            add(apply_rows(A_neg, up_b, nd))
            if lo_b is not None:
                add(apply_rows(A - A_neg, lo_b, nd))
            A = torch.addcmul(A * lo, A_neg, diff.unsqueeze(1))
        else:
            add(op.bias_term(A))
            A = op.backward(A)
    if A.dim() == in_nd + 1:
        A = A.unsqueeze(0).expand(n, *A.shape)
    lower = -eps.unsqueeze(1) * dual_norm_of_rows(A, p, in_nd)
    if bias is not None:
        lower = lower + (bias if bias.dim() == 2 else bias.unsqueeze(0))
    return lower


def crown_intermediate(
    ops: Sequence,
    pre: List[Optional[Interval]],
    index: int,
    eps: Tensor,
    p: float,
    in_nd: int,
    relaxations: Relaxations,
) -> Interval:
    """Tighten the IBP interval `pre[index]` at the input of activation `index` with CROWN.

    For piecewise-linear activations only neurons that IBP leaves unstable in some sample are
    bounded (as auto_LiRPA's sparse intermediate bounds); neurons IBP finds stable keep the
    IBP interval, so the result of a sample never depends on the rest of its batch. Every
    CROWN bound is intersected with the IBP one: both are sound, so their intersection is.
    """
    l_ibp, u_ibp = pre[index]
    op: Activation = ops[index]
    shape = op.shape
    D = math.prod(shape)
    lf, uf = l_ibp.flatten(1), u_ibp.flatten(1)
    if op.piecewise_linear:
        unstable = (lf < 0) & (uf > 0)
        idx = unstable.any(0).nonzero().flatten()
    else:
        unstable = torch.ones_like(lf, dtype=torch.bool)
        idx = torch.arange(D, device=lf.device)
    if idx.numel() == 0:
        return l_ibp, u_ibp
    rows = torch.zeros(idx.numel(), D, dtype=lf.dtype, device=lf.device)
    rows[torch.arange(idx.numel(), device=lf.device), idx] = 1.0
    A0 = torch.cat([rows, -rows]).reshape(2 * idx.numel(), *shape)
    bnd = backward_lower(ops, A0, relaxations, eps, p, in_nd, stop=index)
    cl, cu = bnd[:, : idx.numel()], -bnd[:, idx.numel():]
    sub_unstable = unstable[:, idx]
    new_l = torch.where(sub_unstable, torch.maximum(lf[:, idx], cl), lf[:, idx])
    new_u = torch.where(sub_unstable, torch.minimum(uf[:, idx], cu), uf[:, idx])
    # a CROWN bound can cross the IBP one only by rounding; keep the interval non-empty
    new_u = torch.maximum(new_u, new_l)
    lf = lf.index_copy(1, idx, new_l)
    uf = uf.index_copy(1, idx, new_u)
    return lf.reshape(l_ibp.shape), uf.reshape(u_ibp.shape)
