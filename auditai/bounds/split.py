"""Branch and bound over δ for low-dimensional latent sets (k ≤ 3): input splitting.

The δ-set of each row is covered by cubes {c + h·u : ‖u‖_∞ ≤ 1} (for ℓ∞ the ball itself; for
ℓ2/ℓ1 its bounding cube, whose children that miss the ball are dropped). Each round bounds all
pending cubes of all rows in one batched call (a cube is a latent set with centre z0 + B·c, basis B
and ℓ∞ radius h), then per cube:
- verified when the lower bound of every spec row exceeds the rounding tolerance;
- its centre (projected onto the ball) is checked by a float64 forward pass: margin ≤ 0 falsifies
  the row (a concrete counterexample);
- otherwise it is split in 2^k children (all axes halved), while the row's budget of bounded
  cubes lasts. A row whose budget runs out with cubes left is unknown.
Complete in the limit of the budget for piecewise-linear and smooth heads (cubes shrink to points).

Imports only torch (and the engine beside it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from auditai.bounds.engine import bound_input
from auditai.bounds.exactline import layer_ops, magnitudes, tolerance_factor
from auditai.errors import InputError


@dataclass
class SplitResult:
    """status (R int8: +1 verified, −1 falsified, 0 unknown); delta (R×k) of each falsified row's
    counterexample; margin (R, float64 margin there, +inf if none); row (R, violated spec row);
    boxes (R, cubes bounded)."""

    status: Tensor
    delta: Tensor
    margin: Tensor
    row: Tensor
    boxes: Tensor


def bound_tolerance(ops, z_abs_plus: Tensor, C: Tensor, d: Tensor, dtype: torch.dtype) -> Tensor:
    """Rounding tolerance of a bound computation: 4·factor·max_rows(|C|·a_L + |d|) (see exactline).

    CROWN's backward pass sums terms bounded by the same magnitudes (relaxation slopes lie in
    [0, 1] and intercepts are bounded by |pre-activation bounds| ≤ a_l); its intermediate and
    final passes double the number of steps, hence the factor 2 over ExactLine's.
    """
    a = magnitudes(ops, z_abs_plus).flatten(1)
    mag = torch.einsum("no,nmo->nm", a, C.abs()) + d.abs()
    return 4.0 * tolerance_factor(ops, dtype) * mag.amax(dim=1)


def _project(c: Tensor, eps: Tensor, p: float) -> Tensor:
    if math.isinf(p):
        return torch.maximum(torch.minimum(c, eps[:, None]), -eps[:, None])
    nrm = torch.linalg.vector_norm(c, ord=p, dim=1, keepdim=True)
    scale = torch.clamp(eps[:, None] / nrm.clamp_min(1e-300), max=1.0) * (1 - 4e-16)
    return c * scale  # radial shrink: a point inside the ball (any inside point will do)


@torch.no_grad()
def branch_and_bound(
    head: nn.Module,
    z0: Tensor,
    basis: Tensor,
    eps: Tensor,
    p: float,
    C: Tensor,
    d: Tensor,
    method: str = "crown-ibp",
    budget: int = 64,
    chunk: int | None = None,
) -> SplitResult:
    """Decide C·head(z0 + B·δ) + d > 0 over ‖δ‖_p ≤ eps per row by input splitting.

    head: float64 head; z0 R×d; basis d×k (k ≤ 3); eps R; C R×m×out; d R×m. `budget` is the
    number of cubes a row may bound; `chunk` bounds that many cubes per engine call.
    """
    R, k = z0.shape[0], basis.shape[1]
    if k > 3:
        raise InputError(f"branch and bound splits sets of k ≤ 3 directions, got k = {k}")
    dev, dt = z0.device, z0.dtype
    ops = layer_ops(head, in_shape=(z0.shape[1],))
    colsum = basis.abs().sum(dim=1)
    status = torch.zeros(R, dtype=torch.int8, device=dev)
    cex = torch.zeros(R, k, dtype=dt, device=dev)
    cmarg = torch.full((R,), math.inf, dtype=torch.float64, device=dev)
    crow = torch.zeros(R, dtype=torch.long, device=dev)
    used = torch.zeros(R, dtype=torch.long, device=dev)
    abandoned = torch.zeros(R, dtype=torch.bool, device=dev)
    rid = torch.arange(R, device=dev)
    cen = torch.zeros(R, k, dtype=dt, device=dev)
    hw = eps.clone()
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=k)), dtype=dt, device=dev)  # 2^k×k
    while rid.numel():
        used += torch.bincount(rid, minlength=R)
        zc = z0[rid] + cen @ basis.T
        lows = []
        step = rid.numel() if chunk is None else max(1, chunk)
        for i in range(0, rid.numel(), step):
            sl = slice(i, i + step)
            lo, _ = bound_input(head, zc[sl], hw[sl].contiguous(), math.inf, basis, C[rid[sl]], method, False, None)
            lows.append(lo)
        low = torch.cat(lows) + d[rid]
        tol = bound_tolerance(ops, zc.abs() + hw[:, None] * colsum, C[rid], d[rid], dt)
        ok = low.min(dim=1).values > tol
        # centre check (projected into the ball) in float64
        pc = _project(cen, eps[rid], p)
        out = head(z0[rid] + pc @ basis.T)
        marg = torch.einsum("po,pmo->pm", out, C[rid]) + d[rid]
        mm, mr = marg.min(dim=1)
        bad = mm <= 0
        if bad.any():
            # keep, per row, its most violated centre (sort by margin, then stably by row)
            r_bad, m_bad = rid[bad], mm[bad]
            o = torch.argsort(m_bad, stable=True)
            o = o[torch.argsort(r_bad[o], stable=True)]
            first = torch.ones(o.numel(), dtype=torch.bool, device=dev)
            first[1:] = r_bad[o][1:] != r_bad[o][:-1]
            sel = bad.nonzero().flatten()[o[first]]
            rb = rid[sel]
            cmarg[rb], cex[rb], crow[rb] = mm[sel], pc[sel], mr[sel]
            status[rb] = -1
        keep = ~ok & (status[rid] != -1)
        rid, cen, hw = rid[keep], cen[keep], hw[keep]
        if not rid.numel():
            break
        over = used[rid] + (2 ** k) > budget
        abandoned[rid[over]] = True
        rid, cen, hw = rid[~over], cen[~over], hw[~over]
        # children
        h2 = hw / 2
        rid = rid.repeat_interleave(2 ** k)
        cen = (cen.unsqueeze(1) + signs.unsqueeze(0) * h2[:, None, None]).reshape(-1, k)
        hw = h2.repeat_interleave(2 ** k)
        if not math.isinf(p):
            # drop cubes that miss the ball: nearest point of the cube to 0
            near = (cen.abs() - hw[:, None]).clamp_min(0)
            inb = torch.linalg.vector_norm(near, ord=p, dim=1) <= eps[rid]
            rid, cen, hw = rid[inb], cen[inb], hw[inb]
    done = (status == 0) & ~abandoned
    status[done] = 1
    return SplitResult(status, cex, cmarg, crow, used)
