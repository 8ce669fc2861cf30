"""Small heads shared by the verification tests."""

from __future__ import annotations

import torch
from torch import nn


def small_head(d: int = 4, width: int = 16, out: int = 3, depth: int = 2, act=nn.ReLU, seed: int = 0,
               dtype=torch.float64) -> nn.Module:
    """A random head d → width ×depth → out (float64 by default)."""
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    n_in = d
    for _ in range(depth):
        lin = nn.Linear(n_in, width)
        layers += [lin, act()]
        n_in = width
    layers.append(nn.Linear(n_in, out))
    h = nn.Sequential(*layers)
    with torch.no_grad():
        for p in h.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
    return h.to(dtype).eval()
