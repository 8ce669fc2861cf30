"""Branch and bound over δ for latent sets of k ≤ 8 directions: input splitting.

The δ-set of each row is covered by cubes {c + h·u : ‖u‖_∞ ≤ 1} (for ℓ∞ the ball itself; for
ℓ2/ℓ1 its bounding cube, whose children that miss the ball are dropped). Each round bounds all
pending cubes of all rows in one batched call (a cube is a latent set with centre z0 + B·c, basis B
and ℓ∞ radius h), then per cube:
- verified when the lower bound of every spec row exceeds the rounding tolerance;
- its centre (projected onto the ball) is checked by a float64 forward pass: margin ≤ 0 falsifies
  the row (a concrete counterexample);
- otherwise it is split in 2^k children (all axes halved), while the row's budget of bounded
  cubes lasts. A row whose budget runs out with cubes left is unknown.
For k > 3 (up to 8) the pieces are boxes {c + h⊙u}: each is split in 2 along its most
influential axis (the largest h_j·|∂ worst margin/∂δ_j| at its centre, the widest on ties),
and bounded through the graph IR with a per-piece basis B·diag(h) (InputMap takes one per
sample). `max_time` (seconds) stops the splitting; rows left with pieces are unknown and
flagged in `timed_out`. Complete in the limit of the budget for piecewise-linear and smooth
heads (pieces shrink to points).

Imports only torch (and the engine beside it).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from auditai.bounds.engine import bound_input
from auditai.bounds.graph_bounds import InputMap, bound_graph
from auditai.bounds.graph_engine import check_graph, read_graph
from auditai.bounds.guard import set_points
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
    timed_out: Tensor | None = None  # (R bool) unknown because `max_time` ran out


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
    max_time: float | None = None,
    alpha_options=None,
) -> SplitResult:
    """Decide C·head(z0 + B·δ) + d > 0 over ‖δ‖_p ≤ eps per row by input splitting.

    head: float64 head; z0 R×d; basis d×k (k ≤ 8); eps R; C R×m×out; d R×m. `budget` is the
    number of pieces a row may bound; `chunk` bounds that many pieces per engine call;
    `max_time`: seconds, after which the rows still open are unknown (`timed_out`).
    """
    R, k = z0.shape[0], basis.shape[1]
    if k > 8:
        raise InputError(f"branch and bound splits sets of k ≤ 8 directions, got k = {k}")
    t0 = time.perf_counter()
    axis = k > 3  # boxes split along one axis, bounded through the graph IR
    graph = None
    if axis:
        graph = read_graph(head, (z0.shape[1],), "head")
        check_graph(head, graph, set_points(z0.double(), eps.double(), p, basis.double()), "head")
        graph = graph.to(dtype=z0.dtype, device=z0.device)
    dev, dt = z0.device, z0.dtype
    ops = layer_ops(head, in_shape=(z0.shape[1],))
    status = torch.zeros(R, dtype=torch.int8, device=dev)
    cex = torch.zeros(R, k, dtype=dt, device=dev)
    cmarg = torch.full((R,), math.inf, dtype=torch.float64, device=dev)
    crow = torch.zeros(R, dtype=torch.long, device=dev)
    used = torch.zeros(R, dtype=torch.long, device=dev)
    abandoned = torch.zeros(R, dtype=torch.bool, device=dev)
    rid = torch.arange(R, device=dev)
    cen = torch.zeros(R, k, dtype=dt, device=dev)
    hw = eps[:, None].expand(R, k).clone()  # half-widths per axis (equal for cubes, k ≤ 3)
    timed_out = torch.zeros(R, dtype=torch.bool, device=dev)
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=k)), dtype=dt, device=dev)  # 2^k×k
    while rid.numel():
        used += torch.bincount(rid, minlength=R)
        zc = z0[rid] + cen @ basis.T
        lows = []
        step = rid.numel() if chunk is None else max(1, chunk)
        for i in range(0, rid.numel(), step):
            sl = slice(i, i + step)
            if i and max_time is not None and time.perf_counter() - t0 > max_time:
                # out of time inside a round: the pieces not bounded yet stay open (unknown)
                lows.append(torch.full((rid.numel() - i, C.shape[1]), -math.inf, dtype=dt, device=dev))
                break
            if axis:
                zs = zc[sl]
                im = InputMap(zs, zs.new_ones(zs.shape[0]), math.inf, basis=basis.unsqueeze(0) * hw[sl, None, :])
                if method == "alpha-crown":
                    from auditai.bounds.alpha import alpha_bound_graph

                    lo, _ = alpha_bound_graph(graph, im, C[rid[sl]], False, alpha_options)
                else:
                    lo, _ = bound_graph(graph, im, C[rid[sl]], method, False)
            else:
                lo, _ = bound_input(head, zc[sl], hw[sl, 0].contiguous(), math.inf, basis, C[rid[sl]], method, False,
                                    None, alpha_options=alpha_options)
            lows.append(lo)
        low = torch.cat(lows) + d[rid]
        tol = bound_tolerance(ops, zc.abs() + hw @ basis.abs().T, C[rid], d[rid], dt)
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
        nkids = 2 if axis else 2 ** k
        over = used[rid] + nkids > budget
        if max_time is not None and time.perf_counter() - t0 > max_time:
            timed_out[rid[~over]] = True
            over = torch.ones_like(over)
        abandoned[rid[over]] = True
        rid, cen, hw = rid[~over], cen[~over], hw[~over]
        if not rid.numel():
            break
        # children
        if axis:
            j = _split_axis(head, z0[rid], basis, cen, hw, C[rid], d[rid])
            h2 = hw.clone()
            h2[torch.arange(rid.numel(), device=dev), j] /= 2
            off = torch.zeros_like(cen)
            off[torch.arange(rid.numel(), device=dev), j] = h2[torch.arange(rid.numel(), device=dev), j]
            rid = rid.repeat_interleave(2)
            cen = torch.stack([cen - off, cen + off], dim=1).reshape(-1, k)
            hw = h2.repeat_interleave(2, dim=0)
        else:
            h2 = hw / 2
            rid = rid.repeat_interleave(2 ** k)
            cen = (cen.unsqueeze(1) + signs.unsqueeze(0) * h2[:, None, :]).reshape(-1, k)
            hw = h2.repeat_interleave(2 ** k, dim=0)
        if not math.isinf(p):
            # drop pieces that miss the ball: nearest point of the piece to 0
            near = (cen.abs() - hw).clamp_min(0)
            inb = torch.linalg.vector_norm(near, ord=p, dim=1) <= eps[rid]
            rid, cen, hw = rid[inb], cen[inb], hw[inb]
    done = (status == 0) & ~abandoned
    status[done] = 1
    timed_out &= status == 0
    return SplitResult(status, cex, cmarg, crow, used, timed_out)


def _split_axis(head: nn.Module, z0: Tensor, basis: Tensor, cen: Tensor, hw: Tensor, C: Tensor, d: Tensor) -> Tensor:
    """Per box, the axis j with the largest h_j·|∂(worst margin)/∂δ_j| at its centre (+ h_j·1e-9,
    so that the widest axis wins where the gradient vanishes)."""
    with torch.enable_grad():
        c = cen.detach().clone().requires_grad_(True)
        out = head(z0 + c @ basis.T)
        worst = (torch.einsum("po,pmo->pm", out, C) + d).min(dim=1).values
        (g,) = torch.autograd.grad(worst.sum(), c)
    return (hw * (g.abs() + 1e-9)).argmax(dim=1)
