"""Shared helpers for the bound-engine tests: random heads, set builders, spec matrices,
the head's outputs at points of a set, and a projected-gradient attack in δ-space.

Everything here is independent of the engine's internals: it only runs the torch head
forward and uses the latent-set helpers (`LatentSet.points`, `sample`, `project_ball`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from auditai.latent import LatentSet, project_ball, sample_ball

METHODS = ("ibp", "crown-ibp", "crown")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")

Fn = Callable[[Tensor], Tensor]  # δ (…, N, k) → spec outputs (…, N, m)


# ----------------------------------------------------------------------------- heads
def make_activation(kind: str, gen: torch.Generator) -> nn.Module:
    if kind == "relu":
        return nn.ReLU()
    if kind == "leaky_relu":
        slope = float(torch.rand((), generator=gen)) * 0.5
        return nn.LeakyReLU(slope)
    if kind == "tanh":
        return nn.Tanh()
    return nn.Sigmoid()


def random_mlp(
    seed: int,
    d: int,
    widths: Sequence[int],
    out: int,
    acts: Sequence[str],
    extras: bool = False,
    dtype: torch.dtype = torch.float64,
    weight_scale: float = 1.0,
) -> nn.Sequential:
    """Linear → act → … → Linear, with `widths` hidden layers and `acts[i]` after layer i.

    With `extras`, also BatchNorm1d (eval, random statistics), Dropout (eval), Identity
    and a nested Sequential, all in eval mode so the head is a deterministic function.
    """
    gen = torch.Generator().manual_seed(seed)
    layers: list = []
    prev = d
    for i, w in enumerate(widths):
        lin = nn.Linear(prev, w)
        block: list = [lin]
        if extras and i % 2 == 0:
            bn = nn.BatchNorm1d(w)
            with torch.no_grad():
                bn.running_mean.copy_(torch.randn(w, generator=gen) * 0.3)
                bn.running_var.copy_(torch.rand(w, generator=gen) + 0.5)
                bn.weight.copy_(torch.randn(w, generator=gen))
                bn.bias.copy_(torch.randn(w, generator=gen) * 0.3)
            block.append(bn)
        block.append(make_activation(acts[i % len(acts)], gen))
        if extras:
            block.append(nn.Dropout(0.3) if i % 2 else nn.Identity())
        layers.append(nn.Sequential(*block) if extras and i % 2 == 1 else block)
        prev = w
    flat: list = []
    for item in layers:
        flat.extend(item if isinstance(item, list) else [item])
    flat.append(nn.Linear(prev, out))
    head = nn.Sequential(*flat)
    _init(head, gen, weight_scale)
    return head.to(dtype).eval()


def _init(module: nn.Module, gen: torch.Generator, scale: float) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * scale / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.3)


def random_conv_head(seed: int, kind: str, act: str, out: int = 3, dtype=torch.float64) -> tuple[nn.Module, tuple[int, ...]]:
    """A small Conv1d or Conv2d head with Flatten; returns (head, per-sample input shape)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "conv1d":
        shape = (2, 7)
        head = nn.Sequential(
            nn.Conv1d(2, 3, 3, stride=2, padding=1), make_activation(act, gen),
            nn.Conv1d(3, 2, 2), make_activation(act, gen), nn.Flatten(), nn.Linear(2 * 3, out),
        )
    else:
        shape = (1, 5, 5)
        bn = nn.BatchNorm2d(2)
        with torch.no_grad():
            bn.running_mean.copy_(torch.randn(2, generator=gen) * 0.2)
            bn.running_var.copy_(torch.rand(2, generator=gen) + 0.5)
        head = nn.Sequential(
            nn.Conv2d(1, 2, 3, stride=2, padding=1), bn, make_activation(act, gen),
            nn.Conv2d(2, 2, 2), make_activation(act, gen), nn.Flatten(), nn.Linear(2 * 2 * 2, out),
        )
    _init(head, gen, 1.0)
    return head.to(dtype).eval(), shape


# ----------------------------------------------------------------------------- sets and specs
def make_set(kind: str, z0: Tensor, eps, norm: str, gen: torch.Generator) -> LatentSet:
    """A LatentSet of the given kind ('dims', 'dims_radii', 'direction', 'basis', 'all')."""
    d = z0.shape[1]
    if kind == "direction":
        v = torch.randn(d, generator=gen, dtype=z0.dtype)
        return LatentSet.from_direction(z0, v, eps)
    if kind == "basis":
        k = 1 + int(torch.randint(0, max(1, d), (), generator=gen))
        B = torch.randn(d, k, generator=gen, dtype=z0.dtype)
        return LatentSet.from_basis(z0, B, eps, norm)
    if kind == "all":
        return LatentSet.from_dims(z0, list(range(d)), eps, norm)
    k = 1 + int(torch.randint(0, d, (), generator=gen))
    dims = torch.randperm(d, generator=gen)[:k].tolist()
    radii = None
    if kind == "dims_radii":
        radii = (torch.rand(k, generator=gen, dtype=z0.dtype) + 0.25).tolist()
    return LatentSet.from_dims(z0, dims, eps, norm, radii=radii)


def make_C(kind: str, n: int, out: int, gen: torch.Generator, dtype=torch.float64) -> Tensor | None:
    """None, a shared m×out matrix, or per-sample N×m×out margins e_y − e_j."""
    if kind == "none":
        return None
    if kind == "shared" or out < 2:  # a margin needs two outputs
        m = 1 + int(torch.randint(0, 3, (), generator=gen))
        return torch.randn(m, out, generator=gen, dtype=dtype)
    y = torch.randint(0, out, (n,), generator=gen)
    return margin_C(y, out, dtype)


def margin_C(y: Tensor, out: int, dtype=torch.float64) -> Tensor:
    """N×(out−1)×out rows e_y − e_j, j ≠ y (the 'label' spec)."""
    n = y.shape[0]
    eye = torch.eye(out, dtype=dtype)
    rows = []
    for i in range(n):
        others = [j for j in range(out) if j != int(y[i])]
        rows.append(eye[int(y[i])].unsqueeze(0) - eye[others])
    return torch.stack(rows)


def apply_C(y: Tensor, C: Tensor | None) -> Tensor:
    """y (…, N, out) → C·y (…, N, m)."""
    if C is None:
        return y
    if C.dim() == 2:
        return y @ C.T
    return torch.einsum("nmo,...no->...nm", C, y)


def set_fn(head: nn.Module, s: LatentSet, C: Tensor | None) -> Fn:
    """δ (…, N, k) ↦ C·head(z0 + Bδ) (…, N, m)."""

    def fn(delta: Tensor) -> Tensor:
        z = s.points(delta)
        lead = z.shape[:-1]
        y = head(z.reshape(-1, z.shape[-1]))
        return apply_C(y.reshape(*lead, y.shape[-1]), C)

    return fn


def ball_fn(module: nn.Module, x0: Tensor, C: Tensor | None) -> Fn:
    """δ (…, N, k=prod(x0.shape[1:])) ↦ C·module(x0 + δ)."""
    shape = tuple(x0.shape[1:])

    def fn(delta: Tensor) -> Tensor:
        lead = delta.shape[:-1]
        x = x0 + delta.reshape(*lead, *shape)
        y = module(x.reshape(-1, *shape))
        return apply_C(y.reshape(*lead, y.shape[-1]), C)

    return fn


# ----------------------------------------------------------------------------- attack
def pgd_extremes(
    fn: Fn, n: int, k: int, eps: Tensor, p: float, m: int, steps: int = 30, restarts: int = 3,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """(min, max) of each spec output found by projected gradient descent/ascent in δ-space.

    One δ per (restart, target row, sign, sample): shapes R×2m×N×k, all steps batched.
    Steepest-ascent steps for the norm (sign for ℓ∞, normalised gradient for ℓ2, the largest
    coordinate for ℓ1), then `project_ball`. Returns N×m tensors of values the head really
    takes at points of the set (every iterate is feasible).
    """
    gen = torch.Generator().manual_seed(seed)
    dtype = eps.dtype
    delta = sample_ball(restarts, n, k, eps, p, gen, dtype).unsqueeze(1).repeat(1, 2 * m, 1, 1)
    delta = delta.reshape(restarts * 2 * m, n, k)
    # target row r of sign s: objective s·out[..., r]
    sel = torch.zeros(2 * m, m, dtype=dtype)
    sel[torch.arange(m), torch.arange(m)] = -1.0  # minimise row r  (= maximise −row)
    sel[m + torch.arange(m), torch.arange(m)] = 1.0  # maximise row r
    sel = sel.repeat(restarts, 1)  # (R·2m, m)
    best_lo = torch.full((n, m), math.inf, dtype=dtype)
    best_hi = torch.full((n, m), -math.inf, dtype=dtype)
    e = eps.reshape(1, n, 1)
    for t in range(steps + 1):
        # cosine schedule from 2ε (jumps to vertices/the boundary at once) down to ε/200
        step = e * (0.005 + 2.0 * 0.5 * (1 + math.cos(math.pi * t / steps)))
        delta = delta.detach().requires_grad_(True)
        out = fn(delta)  # (R·2m, N, m)
        with torch.no_grad():
            best_lo = torch.minimum(best_lo, out.amin(0))
            best_hi = torch.maximum(best_hi, out.amax(0))
        if t == steps:
            break
        obj = (out * sel.unsqueeze(1)).sum()
        (g,) = torch.autograd.grad(obj, delta)
        with torch.no_grad():
            if math.isinf(p):
                d = g.sign()
            elif p == 2.0:
                d = g / torch.linalg.vector_norm(g, dim=-1, keepdim=True).clamp_min(1e-30)
            else:
                j = g.abs().argmax(-1, keepdim=True)
                d = torch.zeros_like(g).scatter(-1, j, g.gather(-1, j).sign())
            delta = project_ball(delta + step * d, eps, p)
    return best_lo.detach(), best_hi.detach()


def sampled_extremes(fn: Fn, s_sample: Tensor) -> tuple[Tensor, Tensor]:
    """(min, max) over sampled δ (S, N, k) of the spec outputs (N×m each)."""
    with torch.no_grad():
        out = fn(s_sample)
    return out.amin(0), out.amax(0)


def assert_inside(lo_found: Tensor, hi_found: Tensor, lower: Tensor, upper: Tensor | None,
                  rtol: float, what: str) -> None:
    """Every value found must lie in [lower, upper] up to rtol·(1 + magnitude)."""
    lower = lower.detach()
    upper = None if upper is None else upper.detach()
    scale = 1.0 + lower.abs().max()
    if upper is not None:
        scale = scale + upper.abs().max()
    tol = rtol * float(scale)
    bad_lo = lo_found < lower - tol
    assert not bad_lo.any(), (
        f"{what}: a point of the set gives {lo_found[bad_lo][:5].tolist()} below the lower bound "
        f"{lower[bad_lo][:5].tolist()} (tol {tol:g})"
    )
    if upper is not None:
        bad_hi = hi_found > upper + tol
        assert not bad_hi.any(), (
            f"{what}: a point of the set gives {hi_found[bad_hi][:5].tolist()} above the upper bound "
            f"{upper[bad_hi][:5].tolist()} (tol {tol:g})"
        )


def dual(p: float) -> float:
    return {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}[p]


# ----------------------------------------------------------------------------- hypothesis
def hyp(max_examples: int = 30):
    """Hypothesis settings for a property: `max_examples` under the default profile, 20× that
    under HYPOTHESIS_PROFILE=thorough (profiles are registered in conftest.py)."""
    import os

    from hypothesis import HealthCheck, settings

    thorough = os.environ.get("HYPOTHESIS_PROFILE", "") == "thorough"
    return settings(
        max_examples=max_examples * (20 if thorough else 1),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
