"""Falsifier: projected gradient descent on the spec margin in δ-space (latent PGD).

For each row (a sample at one ε) we minimise the smallest spec margin min_r (C·f(z0 + B·δ) + d)_r
over the ball ‖δ‖_p ≤ ε by signed (ℓ∞) or normalised (ℓ2, ℓ1) gradient steps, each followed by
`project_ball`, from the centre and from random restarts. The iterations are only a search and run
in float32; only points that a plain forward pass in float64 confirms (margin ≤ 0: ties count as
violations) are returned, so a falsified verdict always comes with a concrete, checked
counterexample. Batched over all rows; a row leaves the batch as soon as it is falsified.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from auditai.latent import LatentSet, project_ball, sample_ball


@dataclass
class AttackResult:
    """found (N bool): a checked violation exists; delta (N×k), margin (N, float64 min margin at
    delta), row (N, the violated row), outputs (N×out, float64 outputs at delta)."""

    found: Tensor
    delta: Tensor
    margin: Tensor
    row: Tensor
    outputs: Tensor


def head64(head: nn.Module) -> nn.Module:
    """A float64 copy of the head in eval mode (the reference forward pass for checks)."""
    h = copy.deepcopy(head).to(torch.float64).eval()
    for p in h.parameters():
        p.requires_grad_(False)
    return h


@torch.no_grad()
def check_points(h64: nn.Module, lset: LatentSet, delta: Tensor, C: Tensor, d: Tensor):
    """Float64 forward check of z0 + B·δ: (min margin N, row N, outputs N×out)."""
    z = lset.z0.double() + delta.double() @ lset.basis.double().T
    out = h64(z)
    marg = torch.einsum("no,nmo->nm", out, C.double()) + d.double()
    mm, row = marg.min(dim=1)
    return mm, row, out


def head_as(head: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A frozen eval-mode copy of the head in `dtype` (the head itself when it already is)."""
    ps = list(head.parameters())
    if ps and all(q.dtype == dtype and not q.requires_grad for q in ps) and not head.training:
        return head
    h = copy.deepcopy(head).to(dtype).eval()
    for q in h.parameters():
        q.requires_grad_(False)
    return h


def pgd(
    head: nn.Module,
    lset: LatentSet,
    C: Tensor,
    d: Tensor,
    *,
    steps: int = 20,
    restarts: int = 2,
    step_size: float = 0.25,
    generator: torch.Generator | None = None,
    h64: nn.Module | None = None,
    iter_dtype: torch.dtype | None = torch.float32,
) -> AttackResult:
    """Latent PGD over all rows of `lset` (C: N×m×out, d: N×m). Returns checked counterexamples.

    The endpoints ±ε of each basis axis (at most 3) are tried first (cheap, and where
    piecewise-linear extremes often lie for k = 1). Then restart 0 starts at the centre, the others
    at random points of the ball; the step is `step_size`·ε per iteration, decayed linearly.
    The iterations run in `iter_dtype` (float32 by default: only a search; None keeps the head's
    dtype); every candidate point (a row whose margin is ≤ 0 at an iterate, and each restart's
    end point) is projected onto the ball and checked by a float64 forward pass, and only points
    that check counts. A row stops (early) as soon as it has a checked violation.
    """
    h64 = h64 if h64 is not None else head64(head)
    n, k = lset.n, lset.k
    dev = lset.z0.device
    p = lset.p
    z64, B64 = lset.z0.double(), lset.basis.double()
    eps64 = lset.eps.double()
    C64, d64 = C.double(), d.double()
    best_m = torch.full((n,), math.inf, dtype=torch.float64, device=dev)
    best_d = torch.zeros(n, k, dtype=torch.float64, device=dev)
    shrink = 1.0 - 4 * torch.finfo(torch.float64).eps  # keep ℓ2/ℓ1 points strictly inside despite rounding

    def consider(rows: Tensor, delta: Tensor) -> None:
        """Float64 check of δ (projected onto the ball in float64) for the given rows."""
        if rows.numel() == 0:
            return
        e = eps64[rows]
        dl = project_ball(delta.double(), e, p)
        if not math.isinf(p):
            dl = dl * shrink
        sub = LatentSet(z64[rows], B64, e, p)
        mm, _, _ = check_points(h64, sub, dl, C64[rows], d64[rows])
        better = mm < best_m[rows]
        r = rows[better]
        best_m[r] = mm[better]
        best_d[r] = dl[better]

    all_rows = torch.arange(n, device=dev)
    # axis endpoints (vertices of the ℓ1 ball, faces of ℓ∞/ℓ2)
    for i in range(min(k, 3)):
        for s in (-1.0, 1.0):
            act = all_rows[best_m > 0]
            e = torch.zeros(act.numel(), k, dtype=torch.float64, device=dev)
            e[:, i] = s * eps64[act]
            consider(act, e)
    hd = head if iter_dtype is None else head_as(head, iter_dtype)
    dt = next((q.dtype for q in (*hd.parameters(), *hd.buffers()) if q.is_floating_point()), lset.z0.dtype)
    zi, Bi, ei = lset.z0.to(dt), lset.basis.to(dt), lset.eps.to(dt)
    Ci, di = C.to(dt), d.to(dt)
    params = [q for q in hd.parameters()]
    req = [q.requires_grad for q in params]
    for q in params:
        q.requires_grad_(False)
    try:
        for r in range(restarts):
            act = all_rows[best_m > 0]
            if act.numel() == 0:
                break
            if r == 0:
                delta = torch.zeros(act.numel(), k, dtype=dt, device=dev)
            else:
                delta = sample_ball(1, act.numel(), k, ei[act], p, generator, dt, dev)[0]
            for it in range(steps):
                delta.requires_grad_(True)
                with torch.enable_grad():
                    out = hd(zi[act] + delta @ Bi.T)
                    marg = torch.einsum("no,nmo->nm", out, Ci[act]) + di[act]
                    mrow = marg.min(dim=1).values
                    (g,) = torch.autograd.grad(mrow.sum(), delta)
                delta = delta.detach()
                cand = mrow.detach() <= 0
                if cand.any():  # confirm in float64; confirmed rows stop here
                    consider(act[cand], delta[cand])
                    keep = best_m[act] > 0
                    if not keep.all():
                        act, delta, g = act[keep], delta[keep], g[keep]
                        if act.numel() == 0:
                            break
                alpha = step_size * (1.0 - it / steps) * ei[act][:, None]
                with torch.no_grad():
                    if math.isinf(p):
                        stepv = g.sign()
                    else:
                        stepv = g / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(1e-30)
                    delta = project_ball(delta - alpha * stepv, ei[act], p)
            if act.numel():
                consider(act, delta.detach())
    finally:
        for q, rq in zip(params, req):
            q.requires_grad_(rq)
    mm, row, out = check_points(h64, LatentSet(z64, B64, eps64, p), best_d, C64, d64)
    return AttackResult(mm <= 0, best_d.to(lset.z0.dtype), mm, row, out)
