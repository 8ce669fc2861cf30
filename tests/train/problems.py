"""Small seeded problems for the certified-training tests."""

from __future__ import annotations

import torch


def clusters(n: int = 600, d: int = 10, seed: int = 0, spread: float = 0.5):
    """3 classes of Gaussian codes in d dims: means +2.5·e0, +2.5·e1, −2.5·e0 (a margin exists)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.zeros(3, d)
    means[0, 0], means[1, 1], means[2, 0] = 2.5, 2.5, -2.5
    y = torch.randint(0, 3, (n,), generator=g)
    z = means[y] + spread * torch.randn(n, d, generator=g)
    return z, y


def mlp(d: int = 10, k: int = 3, hidden: int = 32, seed: int = 0) -> torch.nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(),
                                   torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                   torch.nn.Linear(hidden, k))
