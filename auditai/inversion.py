"""GAN inversion: latent codes of inputs found by optimization (paper §2.3).

A model whose generative part is a GAN has a generator g: Z → X but no encoder. The paper
obtains the code of an image by *inversion*: z* = argmin_z ‖g(z) − x‖² + λ‖z‖²/d, the second
term the negative log-density of the N(0, I) prior (up to scale), which keeps z* where the
generator was trained. `invert` solves it for a batch of inputs at once on the device:

- restarts: R starting points per input (the prior's mean 0, or `init`, then R − 1 draws from
  N(0, I) with a seeded generator); the restart with the lowest objective wins;
- Adam (step size decaying as a cosine) on all R·n codes together (the objective is a sum over codes, so each code's gradient
  is its own problem), at most `steps` steps;
- early stop per code: a code whose objective has not improved by more than a relative `tol`
  for `patience` steps stops moving; the chunk stops when all have (so a code's result does
  not depend on which other inputs share its chunk).

It returns the codes and their reconstruction error, per input: the mean squared error over
the input's entries and the relative error ‖g(z) − x‖² / ‖x‖². An input the generator cannot
represent has a large error: its code is not trusted (`auditai check` flags it, see
`DEFAULT_MAX_RELATIVE_ERROR`), since a deployment check on a code that does not reproduce the
input says nothing about that input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from auditai.errors import DataError

#: an inverted input whose relative reconstruction error ‖g(z) − x‖² / ‖x‖² exceeds this is
#: flagged as not representable by the generator (override per call or with the model's
#: metadata "inversion": {"max_relative_error": ...}, or `auditai check --max-recon-error`).
#: Measured on the shapes demo's VAE decoder: its own test images invert to median 0.075,
#: 95th percentile 0.14 (max 0.20); uniform noise to 0.71. A designer sets it from the
#: generator's error on training data.
DEFAULT_MAX_RELATIVE_ERROR = 0.25
#: the keys a model's metadata["inversion"] may set (keyword arguments of `invert`)
INVERT_OPTIONS = ("restarts", "steps", "lr", "prior", "tol", "patience", "batch_size", "seed",
                  "init_scale")


@dataclass
class Inversion:
    """Codes found by `invert` and how well they reproduce their inputs.

    z: N×d codes (CPU); error: N mean squared reconstruction errors (mean over an input's
    entries); relative_error: N values ‖g(z) − x‖² / ‖x‖² (inf for an all-zero input that is
    not reproduced exactly); steps: the most Adam steps any chunk took; restarts: R.
    """

    z: Tensor
    error: Tensor
    relative_error: Tensor
    steps: int
    restarts: int

    def flagged(self, max_relative_error: float = DEFAULT_MAX_RELATIVE_ERROR) -> Tensor:
        """Bool N: the inputs the generator does not represent within the threshold."""
        return ~(self.relative_error <= float(max_relative_error))

    def summary(self, max_relative_error: float = DEFAULT_MAX_RELATIVE_ERROR) -> dict:
        """Plain-JSON summary: threshold, counts, and the error's mean, median and max."""
        rel, mse = self.relative_error.double(), self.error.double()
        finite = rel[torch.isfinite(rel)]
        return {
            "method": "GAN inversion (auditai.invert)",
            "max_relative_error": float(max_relative_error),
            "n": int(rel.numel()),
            "n_flagged": int(self.flagged(max_relative_error).sum()),
            "relative_error_mean": float(finite.mean()) if finite.numel() else None,
            "relative_error_median": float(finite.median()) if finite.numel() else None,
            "relative_error_max": float(finite.max()) if finite.numel() else None,
            "mse_mean": float(mse.mean()) if mse.numel() else None,
            "restarts": self.restarts,
            "steps": self.steps,
        }


def _latent_dim(decoder: nn.Module) -> int | None:
    for m in decoder.modules():
        if isinstance(m, nn.Linear):
            return int(m.in_features)
    return None


def _param(decoder: nn.Module) -> Tensor | None:
    try:
        return next(iter(decoder.parameters()), None)
    except (AttributeError, TypeError):  # pragma: no cover - not an nn.Module
        return None


def invert(
    decoder: nn.Module,
    x: Any,
    *,
    latent_dim: int | None = None,
    restarts: int = 4,
    steps: int = 400,
    lr: float = 0.05,
    prior: float = 1e-3,
    tol: float = 1e-4,
    patience: int = 20,
    batch_size: int = 512,
    seed: int = 0,
    init: Tensor | None = None,
    init_scale: float = 1.0,
    device: Any = None,
) -> Inversion:
    """Codes z with g(z) ≈ x by optimization (GAN inversion, paper §2.3); see the module doc.

    Args:
        decoder: g, N×d codes → outputs of x's per-sample shape.
        x: N×… inputs. latent_dim: d (default: the first Linear layer's input size).
        restarts, steps, lr, prior (λ), tol, patience: the optimization (module doc).
        batch_size: inputs per chunk (each chunk optimizes restarts × batch_size codes).
        init: N×d starting codes for the first restart (e.g. an approximate encoder's).
        init_scale: s.d. of the random restarts. device: where to optimize (default: the
            decoder's); the decoder is moved there.
    """
    if not isinstance(decoder, nn.Module):
        raise DataError(f"invert needs the decoder as a torch.nn.Module, got {type(decoder).__name__}")
    for name, v, lo in (("restarts", restarts, 1), ("steps", steps, 1), ("patience", patience, 1),
                        ("batch_size", batch_size, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise DataError(f"invert: {name} must be an integer >= {lo}, got {v!r}")
    for name, v in (("lr", lr), ("prior", prior), ("tol", tol), ("init_scale", init_scale)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise DataError(f"invert: {name} must be a finite number >= 0, got {v!r}")
    d = latent_dim if latent_dim is not None else _latent_dim(decoder)
    if d is None:
        raise DataError("invert: cannot tell the latent size d from the decoder (no Linear layer): pass latent_dim=d")
    p = _param(decoder)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.get_default_dtype()
    dev = torch.device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
    if device is not None:
        decoder = decoder.to(dev)
    x = torch.as_tensor(x).detach()
    if not x.is_floating_point():
        x = x.to(dtype)
    if x.dim() < 2 or x.shape[0] == 0:
        raise DataError(f"invert: inputs must be N×… with N ≥ 1, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise DataError("invert: the inputs contain NaN or inf")
    n = x.shape[0]
    if init is not None:
        init = torch.as_tensor(init, dtype=dtype).detach()
        if init.shape != (n, d):
            raise DataError(f"invert: init must be N×d = {(n, d)}, got {tuple(init.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    # every random start is drawn up front, so a result does not depend on the chunk size
    starts = torch.randn((restarts - 1, n, d), generator=gen, dtype=torch.float64).to(dtype) * init_scale
    from auditai.modes import _enter_eval, _restore  # eval mode, restored afterwards

    modes = _enter_eval(decoder)
    zs, errs, rels, most = [], [], [], 0
    try:
        for s in range(0, n, batch_size):
            xb = x[s:s + batch_size].to(dev, dtype)
            first = (torch.zeros(xb.shape[0], d, dtype=dtype) if init is None else init[s:s + batch_size])
            z0 = torch.cat([first[None], starts[:, s:s + batch_size]], 0).to(dev)
            z, err, rel, used = _invert_chunk(decoder, xb, z0, steps, lr, prior, tol, patience)
            zs.append(z.cpu())
            errs.append(err.cpu())
            rels.append(rel.cpu())
            most = max(most, used)
    finally:
        _restore(modes)
    return Inversion(torch.cat(zs), torch.cat(errs), torch.cat(rels), most, restarts)


def _invert_chunk(decoder: nn.Module, x: Tensor, z0: Tensor, steps: int, lr: float, prior: float,
                  tol: float, patience: int) -> tuple[Tensor, Tensor, Tensor, int]:
    """One chunk: z0 is R×n×d starts for the n inputs x; returns the best code per input."""
    r, n, d = z0.shape
    xr = x.unsqueeze(0).expand(r, *x.shape).reshape(r * n, *x.shape[1:])
    z = z0.reshape(r * n, d).clone().requires_grad_(True)

    def objective(zz: Tensor) -> tuple[Tensor, Tensor]:
        out = decoder(zz)
        if out.shape != xr.shape:
            raise DataError(f"invert: the decoder produces outputs of shape {tuple(out.shape[1:])} per "
                            f"code, but the inputs have shape {tuple(x.shape[1:])}")
        mse = (out - xr).pow(2).reshape(r * n, -1).mean(1)
        return mse + prior * zz.pow(2).mean(1), mse

    # Adam by hand (β 0.9, 0.999), the step size decaying as a cosine to 1 % of lr, so that
    # codes settle; a finished code (see the module doc) no longer moves
    b1, b2, eps_adam = 0.9, 0.999, 1e-8
    m = torch.zeros_like(z, requires_grad=False)
    v = torch.zeros_like(m)
    best = torch.full((r * n,), math.inf, dtype=z.dtype, device=z.device)
    best_z = z.detach().clone()
    stall = torch.zeros(r * n, dtype=torch.long, device=z.device)
    used = 0
    for used in range(1, steps + 1):
        obj, _ = objective(z)
        (g,) = torch.autograd.grad(obj.sum(), [z])
        with torch.no_grad():
            o = obj.detach()
            improved = o < best - tol * best.abs().clamp_min(1e-12)
            better = (o < best)[:, None]
            best_z = torch.where(better, z.detach(), best_z)
            best = torch.minimum(o, best)
            stall = torch.where(improved, 0, stall + 1)
            moving = (stall < patience)[:, None]
            if used % 10 == 0 and not bool(moving.any()):
                break
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            step = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * used / steps)))
            upd = (m / (1 - b1 ** used)) / ((v / (1 - b2 ** used)).sqrt() + eps_adam)
            z.sub_(torch.where(moving, step * upd, 0.0))
    with torch.no_grad():
        obj, mse = objective(best_z)
        pick = obj.reshape(r, n).argmin(0)
        idx = pick * n + torch.arange(n, device=z.device)
        zb, mse_b = best_z[idx], mse[idx]
        xx = x.reshape(n, -1).pow(2).sum(1)
        sq = mse_b * x[0].numel()
        rel = torch.where(xx > 0, sq / xx.clamp_min(1e-30), torch.where(sq > 0, math.inf, 0.0))
    return zb.detach(), mse_b.detach(), rel.detach(), used


def inversion_options(model: Any) -> dict:
    """Keyword arguments for `invert` from the model's metadata["inversion"] (the designer's
    settings travel with the model file); unknown keys are an error naming them."""
    meta = getattr(model, "metadata", None) or {}
    opts = meta.get("inversion") or {}
    if not isinstance(opts, dict):
        raise DataError(f"the model's metadata 'inversion' must be a mapping of {INVERT_OPTIONS}, got {type(opts).__name__}")
    extra = sorted(set(opts) - set(INVERT_OPTIONS) - {"max_relative_error"})
    if extra:
        raise DataError(f"the model's metadata 'inversion' has unknown key(s) {extra}; expected some of {list(INVERT_OPTIONS)}")
    return {k: v for k, v in opts.items() if k in INVERT_OPTIONS}


def max_relative_error(model: Any, given: float | None = None) -> float:
    """The flagging threshold: `given`, else the model's metadata, else the default."""
    if given is not None:
        return float(given)
    meta = (getattr(model, "metadata", None) or {}).get("inversion") or {}
    v = meta.get("max_relative_error") if isinstance(meta, dict) else None
    return DEFAULT_MAX_RELATIVE_ERROR if v is None else float(v)


def holds_codes(model: Any, x: Tensor) -> bool:
    """Whether x (N×…) are latent codes of the model (N×d) rather than inputs."""
    return x.dim() == 2 and x.shape[1] == int(model.latent_dim)


def encode_inputs(model: Any, x: Any, *, device: Any = None, batch_size: int = 1024,
                  **invert_kwargs: Any) -> tuple[Tensor, Inversion | None]:
    """Codes of inputs x for `model` (an AuditModel): the encoder's when the model has one;
    else, with a decoder, by GAN inversion (the Inversion comes back too); codes N×d pass
    through. A model with neither encoder nor decoder cannot encode inputs: a DataError says so."""
    x = torch.as_tensor(x)
    if getattr(model, "encoder", None) is not None:
        return model.encode(x, batch_size=batch_size, device=device), None
    decoder = getattr(model, "decoder", None)
    if decoder is not None and not holds_codes(model, x):
        opts = {**inversion_options(model), **invert_kwargs}
        inv = invert(decoder, x, latent_dim=int(model.latent_dim), device=device, **opts)
        return inv.z, inv
    if holds_codes(model, x):
        return x, None
    raise DataError(
        f"inputs of shape {tuple(x.shape[1:])} per sample cannot be encoded: the model has neither an "
        f"encoder nor a decoder (for GAN inversion); give latent codes of d={model.latent_dim}"
    )


__all__ = ["DEFAULT_MAX_RELATIVE_ERROR", "Inversion", "encode_inputs", "invert"]
