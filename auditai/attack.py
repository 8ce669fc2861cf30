"""Falsifier: projected gradient descent on the spec margin in δ-space (latent PGD).

For each row (a sample at one ε) we minimise the smallest spec margin min_r (C·f(z0 + B·δ) + d)_r
over the ball ‖δ‖_p ≤ ε by signed (ℓ∞) or normalised (ℓ2, ℓ1) gradient steps, each followed by
`project_ball`, from the centre and from random restarts. Only points that a plain forward pass in
float64 confirms (margin ≤ 0: ties count as violations) are returned, so a falsified verdict always
comes with a concrete, checked counterexample. Batched over all rows.
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
) -> AttackResult:
    """Latent PGD over all rows of `lset` (C: N×m×out, d: N×m). Returns checked counterexamples.

    Restart 0 starts at the centre, the others at random points of the ball; the step is
    `step_size`·ε per iteration, decayed linearly. The endpoints ±ε of each basis axis are also
    tried (cheap, and where piecewise-linear extremes often lie for k = 1).
    """
    h64 = h64 if h64 is not None else head64(head)
    n, k = lset.n, lset.k
    dt = lset.z0.dtype
    p = lset.p
    eps = lset.eps
    best_m = torch.full((n,), math.inf, dtype=torch.float64, device=lset.z0.device)
    best_d = torch.zeros(n, k, dtype=dt, device=lset.z0.device)

    shrink = 1.0 - 4 * torch.finfo(dt).eps  # keep ℓ2/ℓ1 points strictly inside despite rounding

    def consider(delta: Tensor) -> None:
        nonlocal best_m, best_d
        if not math.isinf(p):
            delta = project_ball(delta, eps, p) * shrink
        mm, _, _ = check_points(h64, lset, delta, C, d)
        better = mm < best_m
        best_m = torch.where(better, mm, best_m)
        best_d = torch.where(better[:, None], delta.detach(), best_d)

    # axis endpoints (vertices of the ℓ1 ball, faces of ℓ∞/ℓ2)
    for i in range(min(k, 3)):
        for s in (-1.0, 1.0):
            e = torch.zeros(n, k, dtype=dt, device=lset.z0.device)
            e[:, i] = s * eps
            consider(e)
    params = [q for q in head.parameters()]
    req = [q.requires_grad for q in params]
    for q in params:
        q.requires_grad_(False)
    try:
        for r in range(restarts):
            if r == 0:
                delta = torch.zeros(n, k, dtype=dt, device=lset.z0.device)
            else:
                delta = sample_ball(1, n, k, eps, p, generator, dt, lset.z0.device)[0]
            for it in range(steps):
                delta.requires_grad_(True)
                with torch.enable_grad():
                    out = head(lset.z0 + delta @ lset.basis.T)
                    marg = torch.einsum("no,nmo->nm", out, C.to(out)) + d.to(out)
                    obj = marg.min(dim=1).values.sum()
                    (g,) = torch.autograd.grad(obj, delta)
                alpha = step_size * (1.0 - it / steps) * eps[:, None]
                with torch.no_grad():
                    if math.isinf(p):
                        stepv = g.sign()
                    else:
                        stepv = g / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(1e-30)
                    delta = project_ball(delta.detach() - alpha * stepv, eps, p)
            consider(delta.detach())
    finally:
        for q, rq in zip(params, req):
            q.requires_grad_(rq)
    mm, row, out = check_points(h64, lset, best_d, C, d)
    return AttackResult(mm <= 0, best_d, mm, row, out)
