"""A small convolutional VAE: the demo's encoder `e` and decoder `g` (paper §2, Fig. 1).

The encoder's mean of q(z|x) is the `e` whose codes the head reads and whose latent space the
unit tests perturb; the decoder is the `g` that *shows* what a latent variation looks like.
Both are plain `nn.Sequential`s of standard layers (Conv2d, ReLU, Flatten, Linear;
ConvTranspose2d, Unflatten, Sigmoid) so that they export with `torch.export` and the encoder can
be bounded by the engine for the pixel-space baseline (issue 7). The ELBO is `L_gen` of the
paper's certified-training loss (§2.3), with a KL weight β (β-VAE; β < 1 keeps more factors).

32×32 inputs, one channel; about 0.28 M parameters at latent size 10 (channels=16).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from auditai.errors import InputError


class ConvVAE(nn.Module):
    """Gaussian-latent VAE with a Bernoulli decoder for 1×32×32 images in [0, 1].

    Attributes:
        features: x (N×1×32×32) → N×hidden, shared trunk of the encoder.
        mu, logvar: hidden → d, the mean and log-variance of q(z|x).
        decoder: z (N×d) → N×1×32×32 in [0, 1] (ends in Sigmoid; `decoder[:-1]` gives logits).
    """

    def __init__(self, latent_dim: int = 10, channels: int = 16, hidden: int = 256,
                 image_size: int = 32) -> None:
        super().__init__()
        if image_size % 8:
            raise InputError(f"image_size must be a multiple of 8, got {image_size}")
        c, s = channels, image_size // 8
        self.latent_dim, self.image_size = latent_dim, image_size
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * c * s * s, hidden), nn.ReLU(),
        )
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * c * s * s), nn.ReLU(),
            nn.Unflatten(1, (2 * c, s, s)),
            nn.ConvTranspose2d(2 * c, 2 * c, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Sigmoid(),
        )

    @property
    def encoder(self) -> nn.Sequential:
        """The encoder `e`: x → mean of q(z|x), a Sequential sharing this VAE's parameters."""
        return nn.Sequential(*self.features, self.mu)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log-variance) of q(z|x), each N×d."""
        h = self.features(x)
        return self.mu(h), self.logvar(h).clamp(-12.0, 8.0)

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.decoder[:-1](z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction logits, mu, logvar) with one reparameterised sample z ~ q(z|x)."""
        mu, logvar = self.encode(x)
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + noise * torch.exp(0.5 * logvar)
        return self.decode_logits(z), mu, logvar


def elbo_terms(vae: ConvVAE, x: Tensor, generator: torch.Generator | None = None
               ) -> tuple[Tensor, Tensor]:
    """(reconstruction, KL), each the batch mean of a per-image sum (nats per image).

    Reconstruction: Bernoulli negative log-likelihood (BCE on logits; grey targets allowed).
    KL: KL(q(z|x) ‖ N(0, I)) in closed form (Kingma & Welling 2014, App. B).
    """
    logits, mu, logvar = vae(x, generator)
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
    return rec, kl


def elbo_loss(vae: ConvVAE, x: Tensor, beta: float = 1.0,
              generator: torch.Generator | None = None) -> Tensor:
    """The negative β-ELBO, `L_gen` of the certified-training loss (paper §2.3): rec + β·KL."""
    rec, kl = elbo_terms(vae, x, generator)
    return rec + beta * kl


def standardise(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(a − mean)/std per column of a (N×k), with the mean and std (std of 0 treated as 1)."""
    a = torch.as_tensor(a, dtype=torch.float32)
    mean, std = a.mean(0), a.std(0)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return (a - mean) / std, mean, std


def train_vae(x: Tensor, latent_dim: int = 10, epochs: int = 10, batch_size: int = 128,
              beta: float = 1.0, lr: float = 2e-3, seed: int = 0, channels: int = 16,
              hidden: int = 256, log: Callable[[str], None] | None = None, *,
              factors: Tensor | None = None, guide_weight: float = 0.0,
              labels: Tensor | None = None, class_weight: float = 0.0,
              warmup_epochs: float = 0.0) -> tuple[ConvVAE, list[dict]]:
    """Train a :class:`ConvVAE` on images x (N×1×S×S in [0, 1]) with Adam; deterministic in `seed`.

    Loss per batch: the negative β-ELBO (`L_gen`), plus two optional guiding terms
    (a semi-supervised, "guided" VAE):

    - `factors` (N×k, known or measured attributes) with `guide_weight` w: the first k
      coordinates of the encoder's mean are pulled to the standardised factors,
      w·Σ_j (μ_j − (a_j − mean_j)/std_j)² per image. The decoder then has to read each factor
      from its own coordinate, so the factor's direction in Z moves the factor in the image
      (an unguided VAE at this size keeps position and little else).
    - `labels` (N) with `class_weight` c: c·CE(Wμ + b, y) for a linear read-out trained
      alongside (not part of the encoder), so the class is linearly visible in the codes.

    β ramps linearly from 0 over `warmup_epochs` (KL warm-up, Bowman et al. 2016). The learning
    rate decays by cosine to a tenth over the epochs. Returns the VAE in eval mode and a
    per-epoch history of mean reconstruction, KL (nats per image) and guide loss.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() != 4 or x.shape[1] != 1:
        raise InputError(f"x must be N×1×S×S images, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InputError("x is empty: nothing to train the VAE on")
    targets = None
    if factors is not None and guide_weight > 0:
        targets, _, _ = standardise(factors)
        if targets.dim() != 2 or targets.shape[0] != x.shape[0] or targets.shape[1] > latent_dim:
            raise InputError(f"factors must be N×k with N={x.shape[0]} and k <= latent_dim="
                             f"{latent_dim}, got shape {tuple(targets.shape)}")
    y = None
    if labels is not None and class_weight > 0:
        y = torch.as_tensor(labels, dtype=torch.long)
        if y.shape != (x.shape[0],):
            raise InputError(f"labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = ConvVAE(latent_dim, channels, hidden, image_size=x.shape[-1])
        readout = nn.Linear(latent_dim, int(y.max()) + 1) if y is not None else None
    gen = torch.Generator().manual_seed(seed + 1)
    params = list(vae.parameters()) + (list(readout.parameters()) if readout is not None else [])
    opt = torch.optim.Adam(params, lr=lr)
    per_epoch = math.ceil(x.shape[0] / batch_size)
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, steps) / max(steps, 1))))
    history: list[dict] = []
    vae.train()
    step = 0
    for epoch in range(epochs):
        t0, tot_rec, tot_kl, tot_guide, seen = time.perf_counter(), 0.0, 0.0, 0.0, 0
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx]
            logits, mu, logvar = vae(xb, gen)
            rec = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum") / xb.shape[0]
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / xb.shape[0]
            warm = min(1.0, step / (warmup_epochs * per_epoch)) if warmup_epochs > 0 else 1.0
            loss = rec + beta * warm * kl
            guide = torch.zeros(())
            if targets is not None:
                tb = targets[idx]
                guide = (mu[:, :tb.shape[1]] - tb).pow(2).sum(1).mean()
                loss = loss + guide_weight * guide
            if readout is not None:
                loss = loss + class_weight * F.cross_entropy(readout(mu), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            tot_rec += rec.item() * xb.shape[0]
            tot_kl += kl.item() * xb.shape[0]
            tot_guide += guide.item() * xb.shape[0]
            seen += xb.shape[0]
        rec_m, kl_m, g_m = tot_rec / seen, tot_kl / seen, tot_guide / seen
        history.append({"epoch": epoch + 1, "rec": rec_m, "kl": kl_m, "guide": g_m,
                        "time_s": time.perf_counter() - t0})
        if log is not None:
            log(f"  vae epoch {epoch + 1}/{epochs}: rec {rec_m:.1f} kl {kl_m:.2f} nats"
                + (f", guide {g_m:.3f}" if targets is not None else "")
                + f" ({time.perf_counter() - t0:.1f} s)")
    vae.eval()
    return vae, history


@torch.no_grad()
def encode_mean(encoder: nn.Module, x, batch_size: int = 2048) -> Tensor:
    """Codes e(x) (N×d), batched, without gradients."""
    x = torch.as_tensor(x, dtype=torch.float32)
    encoder.eval()
    return torch.cat([encoder(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
                     or [torch.zeros(0, 0)])
