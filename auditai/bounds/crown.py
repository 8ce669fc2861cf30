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

from auditai.bounds.ops import Activation, Dense, apply_rows, dual_norm
from auditai.bounds.relax import relax

Interval = Tuple[Tensor, Tensor]


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
    bias0: Optional[Tensor] = None,
) -> Tensor:
    """Lower bound of A·(output of ops[:stop]) + bias0 over the ball; A is (m, *out) or (N, m, *out).

    Returns N×m. Coefficients become per-sample at the first activation.
    """
    n = eps.shape[0]
    stop = len(ops) if stop is None else stop
    bias: Optional[Tensor] = bias0
    inplace = not torch.is_grad_enabled()
    start_ptr = A.data_ptr()
    neg_buf: Optional[Tensor] = None  # reused for the negative parts (no grad only)

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
            if inplace:
                if neg_buf is None or neg_buf.numel() < A.numel():
                    neg_buf = torch.empty(A.numel(), dtype=A.dtype, device=A.device)
                A_neg = torch.clamp(A, max=0, out=neg_buf[: A.numel()].view(A.shape))
            else:
                A_neg = A.clamp(max=0)
            add(apply_rows(A_neg, up_b, nd))
            if lo_b is not None:
                add(apply_rows(A - A_neg, lo_b, nd))
            if inplace and A.shape[0] == n and A.data_ptr() != start_ptr:
                # A is our own intermediate: update it without allocating (fresh pages cost
                # more than the arithmetic at these sizes)
                A = A.mul_(lo).addcmul_(A_neg, diff.unsqueeze(1))
            else:
                A = torch.addcmul(A * lo, A_neg, diff.unsqueeze(1))
        else:
            add(op.bias_term(A))
            A = op.backward(A)
    if A.dim() == in_nd + 1:
        A = A.unsqueeze(0).expand(n, *A.shape)
    lower = -eps.unsqueeze(1) * dual_norm(A, p, in_nd)
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

    For piecewise-linear activations only the neurons that IBP leaves unstable are bounded
    (as auto_LiRPA's sparse intermediate bounds), and each sample only its own: the rows are
    gathered per sample and padded to the widest sample, not to the batch's union. Neurons IBP
    finds stable keep the IBP interval, so a sample's result never depends on its batch.
    Every CROWN bound is intersected with the IBP one: both are sound, so their intersection is.
    """
    l_ibp, u_ibp = pre[index]
    op: Activation = ops[index]
    shape = op.shape
    D = math.prod(shape)
    lf, uf = l_ibp.flatten(1), u_ibp.flatten(1)
    if not op.piecewise_linear:
        eye = torch.eye(D, dtype=lf.dtype, device=lf.device)
        A0 = torch.cat([eye, -eye]).reshape(2 * D, *shape)
        bnd = backward_lower(ops, A0, relaxations, eps, p, in_nd, stop=index)
        new_l = torch.maximum(lf, bnd[:, :D])
        new_u = torch.maximum(torch.minimum(uf, -bnd[:, D:]), new_l)
        return new_l.reshape(l_ibp.shape), new_u.reshape(u_ibp.shape)

    unstable = (lf < 0) & (uf > 0)
    counts = unstable.sum(1)
    width = int(counts.max())
    if width == 0:
        return l_ibp, u_ibp
    # each sample's own unstable neurons, padded to the widest sample (not the batch's union)
    idx = torch.argsort(unstable.to(torch.int8), dim=1, descending=True, stable=True)[:, :width]
    valid = torch.arange(width, device=lf.device).unsqueeze(0) < counts.unsqueeze(1)
    prev = ops[index - 1] if index > 0 else None
    if isinstance(prev, Dense) and len(shape) == 1:
        rows = prev.weight[idx]  # N×width×in
        A1 = torch.cat([rows, -rows], dim=1)
        b = None
        if prev.bias is not None:
            bb = prev.bias[idx] if prev.bias.dim() == 1 else prev.bias.gather(1, idx)
            b = torch.cat([bb, -bb], dim=1)
        bnd = backward_lower(ops, A1, relaxations, eps, p, in_nd, stop=index - 1, bias0=b)
    else:
        n = lf.shape[0]
        A0 = torch.zeros(n, 2 * width, D, dtype=lf.dtype, device=lf.device)
        r = torch.arange(width, device=lf.device).unsqueeze(0).expand(n, width)
        A0[torch.arange(n, device=lf.device).unsqueeze(1), r, idx] = 1.0
        A0[torch.arange(n, device=lf.device).unsqueeze(1), r + width, idx] = -1.0
        bnd = backward_lower(ops, A0.reshape(n, 2 * width, *shape), relaxations, eps, p, in_nd, stop=index)
    cl, cu = bnd[:, :width], -bnd[:, width:]
    old_l, old_u = lf.gather(1, idx), uf.gather(1, idx)
    new_l = torch.where(valid, torch.maximum(old_l, cl), old_l)
    new_u = torch.where(valid, torch.minimum(old_u, cu), old_u)
    # a CROWN bound can cross the IBP one only by rounding; keep the interval non-empty
    new_u = torch.maximum(new_u, new_l)
    lf = lf.scatter(1, idx, new_l)
    uf = uf.scatter(1, idx, new_u)
    return lf.reshape(l_ibp.shape), uf.reshape(u_ibp.shape)
