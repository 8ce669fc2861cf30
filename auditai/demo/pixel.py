"""The demo's pixel-space classifier f: the black-box target of the paper's §2.2.

A small CNN on 1×32×32 images (Conv 1→8 3×3 stride 2, ReLU, Conv 8→16 3×3 stride 2, ReLU,
Flatten, Linear 1024→classes), trained with Adam and cross-entropy on the demo's real training
images and their VAE reconstructions g(e(x)) (the decoded training codes) together, so that it
is right on the decoder's images too (the black-box unit tests audit f∘g on the latent set,
`target: classifier`). It is saved in the demo model file beside the head, as its graph IR; a
few seconds on one CPU core.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from auditai.demo.heads import fit_cross_entropy
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
    history = fit_cross_entropy(net, x, y, epochs, batch_size, lr, seed=seed)
    if log is not None and history:
        log(f"  pixel CNN {epochs} epochs: loss {history[-1]['loss']:.3f} train accuracy "
            f"{history[-1]['accuracy']:.3f}")
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
