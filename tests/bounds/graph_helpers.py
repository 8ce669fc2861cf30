"""Builders for the graph-IR tests: random heads written the way users write them (custom
`forward` code with residual adds, torch.cat, views, slicing, functional calls) and the points
of a box where such a head is evaluated (dense samples, vertices, a projected-gradient attack).

Nothing here touches the engine: the heads are ordinary nn.Modules, the attack only runs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DT = torch.float64

# (name, make(gen) -> module) for every activation of the IR, parameters drawn from gen
def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=DT))


ACTIVATIONS: dict[str, Callable[[torch.Generator], nn.Module]] = {
    "relu": lambda g: nn.ReLU(),
    "leaky_relu": lambda g: nn.LeakyReLU(_u(g, 0.0, 0.9)),
    "leaky_relu_steep": lambda g: nn.LeakyReLU(_u(g, 1.2, 3.0)),    # concave
    "leaky_relu_negative": lambda g: nn.LeakyReLU(_u(g, -0.8, -0.1)),  # not monotone
    "tanh": lambda g: nn.Tanh(),
    "sigmoid": lambda g: nn.Sigmoid(),
    "hardtanh": lambda g: nn.Hardtanh(_u(g, -1.0, 0.0), _u(g, 0.05, 1.0)),
    "relu6": lambda g: nn.ReLU6(),
    "gelu": lambda g: nn.GELU(),
    "gelu_tanh": lambda g: nn.GELU(approximate="tanh"),
    "silu": lambda g: nn.SiLU(),
    "elu": lambda g: nn.ELU(_u(g, 0.1, 1.0)),
    "elu_big": lambda g: nn.ELU(_u(g, 1.0, 2.5)),
    "elu_negative": lambda g: nn.ELU(_u(g, -1.0, -0.1)),             # not monotone
    # small thresholds put the switch to the identity inside the sets
    "softplus": lambda g: nn.Softplus(beta=_u(g, 0.5, 3.0), threshold=_u(g, 0.05, 2.0)),
    "softplus_default": lambda g: nn.Softplus(),
}


class _Fn(nn.Module):
    """A functional activation call inside a forward (F.relu, torch.clamp, …)."""

    def __init__(self, kind: str, gen: torch.Generator) -> None:
        super().__init__()
        self.kind = kind
        self.a = _u(gen, -0.8, 0.0)
        self.b = _u(gen, 0.05, 0.8)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "F.relu":
            return F.relu(x)
        if self.kind == "clamp":
            return torch.clamp(x, self.a, self.b)
        if self.kind == "clamp_min":
            return x.clamp(min=self.a)
        if self.kind == "F.softplus":
            return F.softplus(x, beta=2.0, threshold=0.5)
        return F.leaky_relu(x, 0.2)


FUNCTIONAL = ("F.relu", "clamp", "clamp_min", "F.softplus", "F.leaky_relu")


def make_act(kind: str, gen: torch.Generator) -> nn.Module:
    return _Fn(kind, gen) if kind in FUNCTIONAL else ACTIVATIONS[kind](gen)


def _randomise(module: nn.Module, gen: torch.Generator, scale: float = 1.0) -> nn.Module:
    """Weights and BatchNorm statistics drawn from gen (so a seed fixes the head), eval mode."""
    with torch.no_grad():
        for name, t in module.named_parameters():
            fan = t[0].numel() if t.dim() > 1 else 1
            t.copy_(torch.randn(t.shape, generator=gen, dtype=DT) * scale / math.sqrt(max(1, fan)))
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen, dtype=DT) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen, dtype=DT) + 0.5)
    return module.eval()


# ------------------------------------------------------------------------- vector heads
class Residual(nn.Module):
    """x → fc → act → fc, + x (skip), → act2 → out: fan-out sums and a two-branch add."""

    def __init__(self, d: int, w: int, out: int, act: str, gen: torch.Generator) -> None:
        super().__init__()
        self.inp = nn.Linear(d, w)
        self.fc1, self.fc2 = nn.Linear(w, w), nn.Linear(w, w)
        self.act, self.act2 = make_act(act, gen), make_act(act, gen)
        self.out = nn.Linear(w, out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        h = self.act2(h + self.fc2(self.act(self.fc1(h))))
        return self.out(h)


class SubNegCat(nn.Module):
    """Two branches subtracted, negated, concatenated with a slice of a third; constants by broadcast."""

    def __init__(self, d: int, w: int, out: int, act: str, gen: torch.Generator) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(d, w), nn.Linear(d, w)
        self.act = make_act(act, gen)
        self.register_buffer("mu", torch.randn(d, generator=gen, dtype=DT) * 0.2)
        self.register_buffer("sd", torch.rand(d, generator=gen, dtype=DT) + 0.5)
        self.out = nn.Linear(w + 2 + w, out)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mu) / self.sd                       # input normalisation
        a, b = self.a(x), self.b(x)
        diff = -self.act(a - b)
        y = torch.cat([diff, a[:, 1:3] * 0.5 + 1.0, self.act(b)], dim=1)
        return self.out(y)


class ViewPermute(nn.Module):
    """Reshape to a matrix, permute, mean over a dim, flatten (x.view, .permute, .mean, .flatten)."""

    def __init__(self, d: int, w: int, out: int, act: str, gen: torch.Generator) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 6)
        self.act = make_act(act, gen)
        self.out = nn.Linear(6 + 3 + 3, out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.fc(x)).view(-1, 2, 3).permute(0, 2, 1)     # (N, 3, 2)
        m = h.mean(dim=2)                                            # (N, 3)
        f = h.flatten(1)
        return self.out(torch.cat([f, m, f[:, ::2]], dim=1))          # a strided slice too


class BatchNormMLP(nn.Module):
    """Linear → BatchNorm1d (eval) → act → Linear, with a residual around the BatchNorm block."""

    def __init__(self, d: int, w: int, out: int, act: str, gen: torch.Generator) -> None:
        super().__init__()
        self.fc, self.bn = nn.Linear(d, w), nn.BatchNorm1d(w)
        self.fc2, self.bn2 = nn.Linear(w, w), nn.BatchNorm1d(w)
        self.act = make_act(act, gen)
        self.out = nn.Linear(w, out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.bn(self.fc(x)))
        return self.out(h + self.act(self.bn2(self.fc2(h))))


VECTOR = {"residual": Residual, "sub_neg_cat": SubNegCat, "view_permute": ViewPermute, "batchnorm": BatchNormMLP}


# ------------------------------------------------------------------------- image heads
class ConvPool(nn.Module):
    """Conv (stride, padding, groups) → BatchNorm2d → act → pad → pool → global pool, + skip."""

    def __init__(self, c: int, act: str, gen: torch.Generator, pool: str, k: int, s: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, 4, 3, stride=1, padding=1, groups=2 if c % 2 == 0 else 1)
        self.bn = nn.BatchNorm2d(4)
        self.act = make_act(act, gen)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.pool_kind, self.k, self.s = pool, k, s
        self.out = nn.LazyLinear(3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.bn(self.conv(x)))
        h = F.pad(h, (1, 0, 0, 1), value=0.3)
        if self.pool_kind == "max":
            p = F.max_pool2d(h, self.k, self.s)
        elif self.pool_kind == "avg":
            p = F.avg_pool2d(h, self.k, self.s)
        else:
            p = F.adaptive_avg_pool2d(h, 2)
        g = h.mean(dim=(2, 3))                                    # global average pool
        a = self.act(self.conv2(h))
        return self.out(torch.cat([p.flatten(1), g, a.flatten(1)], dim=1))


class Generator(nn.Module):
    """Linear → view to an image → ConvTranspose2d (stride, padding, output_padding, groups)
    → act → Upsample (nearest or bilinear) → conv → flatten → Linear: a generator head."""

    def __init__(self, d: int, act: str, gen: torch.Generator, stride: int, padding: int, out_pad: int,
                 groups: int, mode: str) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 4 * 2 * 2)
        self.up = nn.ConvTranspose2d(4, 2 * groups, 3, stride=stride, padding=padding, output_padding=out_pad,
                                     groups=groups)
        self.act = make_act(act, gen)
        self.mode = mode
        self.conv = nn.Conv2d(2 * groups, 2, 2)
        self.out = nn.LazyLinear(3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.up(self.fc(x).view(x.shape[0], 4, 2, 2)))
        if self.mode == "nearest":
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        else:
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        return self.out(self.act(self.conv(h)).flatten(1))


def build(kind: str, act: str, seed: int, **kw) -> tuple[nn.Module, tuple[int, ...]]:
    """A random head of `kind` with activation `act` and its per-sample input shape."""
    gen = torch.Generator().manual_seed(seed)
    if kind in VECTOR:
        shape: tuple[int, ...] = (3,)
        m = VECTOR[kind](3, 5, 2, act, gen)
    elif kind == "conv_pool":
        shape = (2, 5, 5)
        m = ConvPool(2, act, gen, kw.get("pool", "max"), kw.get("k", 2), kw.get("s", 2))
    elif kind == "generator":
        shape = (3,)
        m = Generator(3, act, gen, kw.get("stride", 2), kw.get("padding", 1), kw.get("out_pad", 1),
                      kw.get("groups", 1), kw.get("mode", "nearest"))
    else:
        raise KeyError(kind)
    m = m.to(DT)
    with torch.no_grad():
        m(torch.zeros(2, *shape, dtype=DT))  # materialise lazy layers
    return _randomise(m, gen, kw.get("scale", 1.5)), shape


# ------------------------------------------------------------------------- points of a box
def box_points(lo: Tensor, hi: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """(S, N, *shape): uniform samples, a third of them rounded to vertices, plus the centre."""
    t = torch.rand(n, *lo.shape, generator=gen, dtype=lo.dtype)
    t[: n // 3] = t[: n // 3].round()
    t[0] = 0.5
    return lo + (hi - lo) * t


def box_pgd(fn: Callable[[Tensor], Tensor], lo: Tensor, hi: Tensor, m: int, steps: int = 25,
            restarts: int = 2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(min, max) of each of the m outputs of fn over the box found by sign-gradient PGD.

    fn maps (B, N, *shape) → (B, N, m). Every iterate lies in the box, so each value is one the
    head really takes there.
    """
    gen = torch.Generator().manual_seed(seed)
    R = restarts * 2 * m
    x = lo + (hi - lo) * torch.rand(R, *lo.shape, generator=gen, dtype=lo.dtype)
    sel = torch.zeros(2 * m, m, dtype=lo.dtype)
    sel[torch.arange(m), torch.arange(m)] = -1.0
    sel[m + torch.arange(m), torch.arange(m)] = 1.0
    sel = sel.repeat(restarts, 1).unsqueeze(1)              # (R, 1, m)
    best_lo = torch.full((lo.shape[0], m), math.inf, dtype=lo.dtype)
    best_hi = -best_lo
    width = hi - lo
    for t in range(steps + 1):
        x = x.detach().requires_grad_(True)
        out = fn(x)
        with torch.no_grad():
            best_lo = torch.minimum(best_lo, out.amin(0))
            best_hi = torch.maximum(best_hi, out.amax(0))
        if t == steps:
            break
        (g,) = torch.autograd.grad((out * sel).sum(), x)
        step = width * (0.005 + 0.5 * (1 + math.cos(math.pi * t / steps)))
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x + step * g.sign(), lo), hi)
    return best_lo, best_hi


def spec_fn(module: nn.Module, C: Tensor | None) -> Callable[[Tensor], Tensor]:
    """(B, N, *shape) → C·module(x) (B, N, m)."""
    def fn(x: Tensor) -> Tensor:
        B, N = x.shape[:2]
        y = module(x.reshape(B * N, *x.shape[2:]))
        y = y.reshape(B, N, -1)
        return y if C is None else y @ C.T
    return fn
