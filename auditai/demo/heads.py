"""Classifier heads f_d: Z → Y on latent codes (the part the unit tests verify, paper §2.1).

A plain MLP of Linear and ReLU layers (every layer is one the bound engine supports) and a
standard training loop (Adam, cross-entropy, seeded). Certified training lives in
`auditai.train` (issue 7); this is the "normally trained" head the demo audits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from auditai.errors import InputError


def make_head(latent_dim: int, num_classes: int, hidden: Sequence[int] = (64, 64),
              seed: int = 0) -> nn.Sequential:
    """MLP d → hidden… → classes with ReLU between layers, initialised from `seed`."""
    if latent_dim < 1 or num_classes < 2:
        raise InputError(f"need latent_dim >= 1 and num_classes >= 2, got {latent_dim}, {num_classes}")
    sizes = [latent_dim, *hidden, num_classes]
    layers: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train_head(head: nn.Module, z: Tensor, y: Tensor, epochs: int = 30, batch_size: int = 256,
               lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0,
               log: Callable[[str], None] | None = None) -> list[dict]:
    """Train `head` in place on codes z (N×d) and labels y (N) with Adam and cross-entropy.

    Cosine learning-rate decay to a tenth. Returns per-epoch loss and training accuracy.
    """
    z = torch.as_tensor(z, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    if z.dim() != 2 or y.shape != (z.shape[0],):
        raise InputError(f"need z N×d and y of N, got {tuple(z.shape)} and {tuple(y.shape)}")
    def on_epoch(epoch: int, history: list[dict]) -> None:
        if log is not None and (epoch + 1 == epochs or (epoch + 1) % 10 == 0):
            log(f"  head epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.3f} "
                f"train accuracy {history[-1]['accuracy']:.3f}")

    return fit_cross_entropy(head, z, y, epochs, batch_size, lr, weight_decay, seed, on_epoch)


def fit_cross_entropy(net: nn.Module, x: Tensor, y: Tensor, epochs: int, batch_size: int, lr: float,
                      weight_decay: float = 0.0, seed: int = 0,
                      on_epoch: Callable[[int, list[dict]], None] | None = None) -> list[dict]:
    """Train `net` in place on inputs x (N×…) and labels y (N): Adam, cross-entropy, cosine decay
    of the learning rate to a tenth, batches in a `seed`-determined order. Returns per-epoch loss
    and training accuracy; `net` is left in eval mode. Shared by the latent head and the pixel CNN."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(x.shape[0] / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, steps) / max(steps, 1))))
    history: list[dict] = []
    net.train()
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        tot, correct = 0.0, 0
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            out = net(x[idx])
            loss = F.cross_entropy(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            correct += int((out.argmax(1) == y[idx]).sum())
        history.append({"epoch": epoch + 1, "loss": tot / x.shape[0], "accuracy": correct / x.shape[0]})
        if on_epoch is not None:
            on_epoch(epoch, history)
    net.eval()
    return history


@torch.no_grad()
def accuracy(head: nn.Module, z: Tensor, y: Tensor) -> float:
    """Fraction of codes whose argmax prediction equals the label."""
    head.eval()
    z = torch.as_tensor(z, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    return float((head(z).argmax(1) == y).float().mean()) if len(y) else float("nan")
