"""The demo's pixel-space classifier f: the black-box target of the paper's §2.2.

A small CNN on 1×32×32 images (Conv 1→8 3×3 stride 2, ReLU, Conv 8→16 3×3 stride 2, ReLU,
Flatten, Linear 1024→classes), trained with Adam and cross-entropy on the demo's real training
images and their VAE reconstructions g(e(x)) (the decoded training codes) together, so that it
is right on the decoder's images too (the black-box unit tests audit f∘g on the latent set,
`target: classifier`). It is saved in the demo model file beside the head, as its graph IR; a
few seconds on one CPU core.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from auditai.errors import InputError


def make_cnn(num_classes: int, seed: int = 0, image_size: int = 32) -> nn.Sequential:
    """The CNN above, initialised from `seed`; `image_size` must be a multiple of 4."""
    if num_classes < 2 or image_size % 4:
        raise InputError(f"need num_classes >= 2 and image_size a multiple of 4, got {num_classes}, {image_size}")
    s = image_size // 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(16 * s * s, num_classes))


@torch.no_grad()
def decode(decoder: nn.Module, z: Tensor, batch_size: int = 1024) -> Tensor:
    """Images g(z) of codes z (N×d), batched, without gradients (g(e(x)): reconstructions)."""
    return torch.cat([decoder(z[i:i + batch_size]) for i in range(0, len(z), batch_size)])


def train_cnn(net: nn.Module, x: Tensor, y: Tensor, epochs: int = 3, batch_size: int = 128,
              lr: float = 3e-3, seed: int = 0, log: Callable[[str], None] | None = None) -> list[dict]:
    """Train `net` in place on images x (N×1×S×S) and labels y (N); deterministic in `seed`.

    Adam, cross-entropy, cosine decay of the learning rate to a tenth. Returns per-epoch loss
    and training accuracy; `net` is left in eval mode.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    if x.dim() != 4 or y.shape != (x.shape[0],):
        raise InputError(f"need images N×C×H×W and N labels, got {tuple(x.shape)} and {tuple(y.shape)}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * math.ceil(x.shape[0] / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, steps) / max(steps, 1))))
    history = []
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
    if log is not None and history:
        log(f"  pixel CNN {epochs} epochs: loss {history[-1]['loss']:.3f} train accuracy "
            f"{history[-1]['accuracy']:.3f}")
    net.eval()
    return history


@torch.no_grad()
def image_accuracy(net: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    """Fraction of images whose argmax prediction equals the label."""
    net.eval()
    y = torch.as_tensor(y, dtype=torch.long)
    if not len(y):
        return float("nan")
    pred = torch.cat([net(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    return float((pred == y).float().mean())
