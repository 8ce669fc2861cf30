"""Certified training through the latent space, and the pixel-space baseline (paper §2.3, App. A.1).

The designer trains the head f_d so that unit tests are likely to pass:

    L = χ·CE(f_d(z0), y) + (1 − χ)·L_spec + δ·L_gen                       (paper Eq. 2, App. A.1)

`L_spec` is the CROWN-IBP loss (Zhang et al. 2019): cross-entropy on the worst-case margins,
i.e. on the vector (0, −m_1, …) where m_j is a sound lower bound of f_y − f_j over the latent
set, with the true class at index 0. At ε = 0 the bounds are the margins themselves and
`L_spec` is the plain cross-entropy. With method "crown-ibp" the lower bound is the mix
β·CROWN-IBP + (1 − β)·IBP, β ramped from 1 to 0 with ε as in CROWN-IBP.

Schedules (`Schedule`, `schedules`): ε is 0 for `warmup` epochs, then ramps to its target over
`ramp` epochs (linear, or "smoothed": polynomial start, then linear, like auto_LiRPA's
SmoothedScheduler); χ ramps from 1 to `kappa_end` and β from 1 to 0 over the same ramp. The
paper's defaults: Adam, learning rate 5e-4, 5 warm-up epochs.

`fit` trains a head on latent codes for one or several unit tests' sets at once (optionally
fine-tuning the encoder with δ·L_gen), reporting the verified error at the target ε per epoch.
`fit_pixel` is the pixel-space baseline: the same algorithm on ℓp balls around the input x,
bounded through encoder and head. `latent_box_of_pixel_ball` and `relative_radius` give the
paper's Table 2 metric; see `relative_radius` for its exact definition.

`FitOptions` holds the options every trainer shares (each is also a keyword argument). The
rooms: `train_schedule` (schedules), `train_loss` (loss, verified error), `train_options`
(options, the latent set-up shared with `auditai.distributed.train`), `train_loop` (the
loop, checkpoints), `train_metrics` (Table 2); this module holds `fit` and `fit_pixel`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from auditai.latent import parse_norm
from auditai.train_loop import FitResult, _pack_history, _params, _progress, _run, _unpack_history  # noqa: F401
from auditai.train_loss import (  # noqa: F401  (re-exported: their home before train_loss.py)
    SetKind,
    _check_zy,
    _eps_list,
    _mix,
    _mixed_lower,
    _named_sets,
    _verified_mask,
    certified_loss,
    label_rows,
    margin_cross_entropy,
    pixel_certified_loss,
    pixel_verified_error,
    verified_error,
)
from auditai.errors import InputError
from auditai.train_metrics import latent_box_of_pixel_ball, radius_at_error, relative_radius
from auditai.train_options import FitOptions, LatentPlan, latent_plan
from auditai.train_schedule import (  # noqa: F401  (re-exported)
    DEFAULT_LR,
    DEFAULT_WARMUP,
    SCHEDULE_KINDS,
    Schedule,
    Schedules,
    schedules,
)

__all__ = [
    "FitOptions",
    "FitResult",
    "LatentPlan",
    "Schedule",
    "certified_loss",
    "fit",
    "fit_pixel",
    "label_rows",
    "latent_box_of_pixel_ball",
    "margin_cross_entropy",
    "pixel_certified_loss",
    "pixel_verified_error",
    "radius_at_error",
    "relative_radius",
    "schedules",
    "verified_error",
]


def fit(
    head: nn.Module,
    z: Tensor | None,
    y: Tensor,
    latents,
    eps,
    epochs: int = 20,
    *,
    reduction: str = "mean",
    encoder: nn.Module | None = None,
    x: Tensor | None = None,
    gen_loss: Callable[[Tensor], Tensor] | None = None,
    gen_module: nn.Module | None = None,
    delta: float = 0.0,
    options: FitOptions | None = None,
    **opts: Any,
) -> FitResult:
    """Certified training of `head` (in place) on latent codes (paper §2.3).

    Args:
        head: f_d; z: N×d training codes (or None with `encoder` and `x`); y: N labels.
        latents, eps: the unit tests' sets and target radii (see `certified_loss`).
        reduction: how the sets' robust losses combine ("mean" or "sum").
        encoder, x: fine-tune the encoder too: codes are `encoder(x)` per batch.
        gen_loss, gen_module, delta: add δ·gen_loss(x_batch) (L_gen, e.g. the demo VAE's
            ELBO: `lambda xb: elbo_loss(vae, xb)`); `gen_module`'s parameters are trained too.
        options / **opts: `FitOptions` (method, lr, weight_decay, batch_size=256, warmup, ramp,
            schedule, kappa_end, crown_ibp_mix, seed, eval_data, eval_method, eval_limit=2000,
            eval_every, checkpoint, resume, progress, log), or its fields as keywords. With an
            encoder, `eval_data` holds (inputs, labels).

    Returns:
        FitResult with `history`: per epoch the schedule values, losses, training accuracy,
        `clean_error` and `verified_error` (set name → fraction) at the target ε.
    """
    o = FitOptions.build(options, opts, "fit")
    plan = latent_plan(latents, eps, epochs, o)
    if encoder is None:
        if z is None:
            raise InputError("give the codes z, or an encoder and inputs x to fine-tune it")
        z, y = _check_zy(z, y)
        n = z.shape[0]
    else:
        if x is None:
            raise InputError("encoder fine-tuning needs the inputs x")
        y = torch.as_tensor(y).long().flatten()
        n = x.shape[0]
        if y.shape[0] != n:
            raise InputError(f"got {y.shape[0]} labels for {n} inputs")
    if delta and gen_loss is None:
        raise InputError("delta > 0 needs gen_loss (L_gen, e.g. the VAE's ELBO)")
    if n == 0:
        raise InputError("no training samples")

    def batch_loss(idx, frac, kappa, beta):
        zb = z[idx] if encoder is None else encoder(x[idx])
        loss, natural, robust, ok = plan.batch(head, zb, y[idx], frac, kappa, beta, reduction)
        if delta:
            loss = loss + delta * gen_loss(x[idx])
        return loss, natural, robust, ok

    ev_in, ev_y = o.eval_split(z if encoder is None else x, y)

    def evaluate() -> dict:
        with torch.no_grad():
            ez = ev_in if encoder is None else torch.cat(
                [encoder(ev_in[i:i + 1024]) for i in range(0, len(ev_in), 1024)])
        return plan.evaluate(head, ez, ev_y)

    modules = {"head": head}
    if encoder is not None:
        modules["encoder"] = encoder
    if gen_module is not None:
        modules["gen"] = gen_module
    tgt = ", ".join(f"{t:g}" for t in plan.targets)
    return _run(modules, n, epochs, batch_loss, evaluate, plan.sched, options=o,
                describe_eps=lambda f: f"ε {f:.2f}×[{tgt}]")


def fit_pixel(
    encoder: nn.Module,
    head: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    epochs: int = 20,
    *,
    p="inf",
    train_encoder: bool = True,
    options: FitOptions | None = None,
    **opts: Any,
) -> FitResult:
    """The pixel-space baseline (paper Table 2): the same certified training on ℓp balls around x,
    bounded through encoder and head (`bound_ball`; the encoder must hold supported layers).

    `train_encoder=True` trains the whole network (standard pixel-space certified training);
    False trains only the head behind a fixed encoder. `options` / keywords as in `fit`, with
    batch_size 128 and eval_limit 500 by default.
    """
    o = FitOptions.build(options, opts, "fit_pixel", batch_size=128, eval_limit=500)
    if not (float(eps) >= 0 and math.isfinite(float(eps))):
        raise InputError(f"eps must be finite and >= 0, got {eps}")
    parse_norm(p)
    method, eval_method = o.methods()
    y = torch.as_tensor(y).long().flatten()
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise InputError(f"need as many labels as inputs (> 0), got {y.shape[0]} and {x.shape[0]}")
    net = nn.Sequential(encoder, head)
    sched = o.schedules(epochs)
    if not train_encoder:
        for q in encoder.parameters():
            q.requires_grad_(False)

    def batch_loss(idx, frac, kappa, beta):
        xb, yb = x[idx], y[idx]
        loss, (natural, robust) = pixel_certified_loss(net, xb, yb, frac * float(eps), p, method,
                                                       kappa=kappa, beta=beta, return_parts=True)
        with torch.no_grad():
            ok = int((net(xb).argmax(1) == yb).sum())
        return loss, natural, robust, ok

    ev_x, ev_y = o.eval_split(x, y)

    def evaluate() -> dict:
        with torch.no_grad():
            clean = 1.0 - (net(ev_x).argmax(1) == ev_y).float().mean().item()
        return {"clean_error": clean,
                "verified_error": {"pixel": pixel_verified_error(net, ev_x, ev_y, float(eps), p, eval_method)}}

    modules = {"encoder": encoder, "head": head} if train_encoder else {"head": head}
    try:
        return _run(modules, len(y), epochs, batch_loss, evaluate, sched, options=o,
                    describe_eps=lambda f: f"pixel ε {f * float(eps):.4g}")
    finally:
        if not train_encoder:
            for q in encoder.parameters():
                q.requires_grad_(True)
