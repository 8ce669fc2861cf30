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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from auditai.bounds import bound, bound_ball
from auditai.bounds.engine import parse_method
from auditai.latent import Basis, Dims, Direction, parse_norm

SetKind = Union[Dims, Direction, Basis]
SCHEDULE_KINDS = ("linear", "smoothed")
DEFAULT_LR = 5e-4
DEFAULT_WARMUP = 5

__all__ = [
    "FitResult",
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


# ----------------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class Schedule:
    """A value that stays at `start` for `warmup` epochs, then moves to `end` over `ramp` epochs.

    `schedule(t)` takes a (fractional) epoch t ≥ 0 (epoch index + fraction of its batches done).
    "linear": start + (end − start)·s with s = (t − warmup)/ramp clipped to [0, 1].
    "smoothed": s ↦ c·(s/m)^k for s ≤ m, then linear to 1 with a continuous slope (m = `mid`,
    k = `power`), like auto_LiRPA's SmoothedScheduler: a gentle start avoids the early blow-up
    of the bounds that makes certified training unstable.
    """

    start: float
    end: float
    warmup: float = DEFAULT_WARMUP
    ramp: float = 1.0
    kind: str = "smoothed"
    mid: float = 0.25
    power: float = 4.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"schedule kind must be one of {SCHEDULE_KINDS}, got {self.kind!r}")
        if self.warmup < 0 or self.ramp < 0:
            raise ValueError(f"warmup and ramp must be >= 0 epochs, got {self.warmup}, {self.ramp}")
        if not 0 < self.mid < 1 or self.power < 1:
            raise ValueError(f"need 0 < mid < 1 and power >= 1, got {self.mid}, {self.power}")

    def fraction(self, t: float) -> float:
        """The ramp's progress in [0, 1] at epoch t."""
        if t < self.warmup:
            return 0.0
        if self.ramp == 0:
            return 1.0
        s = min(max((t - self.warmup) / self.ramp, 0.0), 1.0)
        if self.kind == "linear":
            return s
        m, k = self.mid, self.power
        c = m / (m + k * (1 - m))  # value at m: matches value and slope of the linear part
        if s <= m:
            return c * (s / m) ** k
        return c + (1 - c) * (s - m) / (1 - m)

    def __call__(self, t: float) -> float:
        return self.start + (self.end - self.start) * self.fraction(t)


@dataclass(frozen=True)
class Schedules:
    """The three schedules of certified training: ε fraction of the target, χ, β."""

    eps: Schedule
    kappa: Schedule
    beta: Schedule

    def at(self, t: float) -> tuple[float, float, float]:
        """(fraction of the target ε, χ, β) at epoch t."""
        return self.eps(t), self.kappa(t), self.beta(t)


def schedules(epochs: int, warmup: int = DEFAULT_WARMUP, ramp: int | None = None,
              kind: str = "smoothed", kappa_end: float = 0.0) -> Schedules:
    """ε (as a fraction of its target), χ and β schedules for `epochs` epochs.

    `ramp` defaults to half the epochs after warm-up (then the rest train at the target ε,
    as CROWN-IBP does). χ goes 1 → `kappa_end` linearly over the ramp; β goes 1 → 0 with ε.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0 <= warmup < epochs:
        raise ValueError(
            f"warmup={warmup} leaves no epoch of certified training in epochs={epochs} "
            "(need 0 <= warmup < epochs)")
    if ramp is None:
        ramp = max(1, (epochs - warmup) // 2)
    if ramp < 0:
        raise ValueError(f"ramp must be >= 0 epochs, got {ramp}")
    if not 0 <= kappa_end <= 1:
        raise ValueError(f"kappa_end (the final natural-loss weight χ) must be in [0, 1], got {kappa_end}")
    eps = Schedule(0.0, 1.0, warmup, ramp, kind)
    return Schedules(eps, Schedule(1.0, kappa_end, warmup, ramp, "linear"), Schedule(1.0, 0.0, warmup, ramp, kind))


# ----------------------------------------------------------------------------- the loss
def label_rows(y: Tensor, num_classes: int, dtype=torch.float32) -> Tensor:
    """C with rows e_y − e_j for j ≠ y (N×(K−1)×K): the 'label' specification's margins."""
    y = torch.as_tensor(y).long().flatten()
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        bad = ((y < 0) | (y >= num_classes)).nonzero().flatten()[:5].tolist()
        raise ValueError(f"labels out of range for a head with {num_classes} outputs "
                         f"(valid 0..{num_classes - 1}) at rows {bad}")
    if num_classes < 2:
        raise ValueError(f"certified training needs a classifier with >= 2 outputs, got {num_classes}")
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    j = torch.arange(num_classes - 1, device=y.device).expand(y.shape[0], -1)
    others = j + (j >= y.unsqueeze(1)).long()
    return eye[y].unsqueeze(1) - eye[others]


def margin_cross_entropy(lower: Tensor) -> Tensor:
    """CE of (0, −lower_1, …, −lower_{K−1}) against class 0, averaged (the CROWN-IBP loss).

    `lower` (N×(K−1)) bounds f_y − f_j from below; −lower bounds f_j − f_y from above, so this
    is the cross-entropy of the worst-case logits ẑ (paper §2.3) shifted by f_y.
    """
    logits = torch.cat([lower.new_zeros(lower.shape[0], 1), -lower], dim=1)
    return F.cross_entropy(logits, logits.new_zeros(lower.shape[0], dtype=torch.long))


def _named_sets(latents) -> list[tuple[str, SetKind]]:
    if isinstance(latents, (Dims, Direction, Basis)):
        return [(latents.describe(), latents)]
    if isinstance(latents, Mapping):
        items = list(latents.items())
    else:
        items = [(k.describe() if hasattr(k, "describe") else str(i), k) for i, k in enumerate(latents)]
    if not items:
        raise ValueError("no latent set given: pass a Dims, Direction or Basis (or a list or dict of them)")
    for name, k in items:
        if not isinstance(k, (Dims, Direction, Basis)):
            raise TypeError(f"latent set {name!r} must be an auditai.latent Dims, Direction or Basis, "
                            f"got {type(k).__name__}")
    return [(str(n), k) for n, k in items]


def _eps_list(eps, n_sets: int, names: Sequence[str]) -> list[float]:
    if isinstance(eps, Mapping):
        missing = [n for n in names if n not in eps]
        if missing:
            raise ValueError(f"eps has no value for set(s) {missing}; it names {sorted(eps)}")
        vals = [eps[n] for n in names]
    elif isinstance(eps, (int, float)) or (isinstance(eps, Tensor) and eps.dim() == 0):
        vals = [float(eps)] * n_sets
    else:
        vals = [float(e) for e in eps]
        if len(vals) != n_sets:
            raise ValueError(f"eps has {len(vals)} values for {n_sets} latent sets (give one, or one per set)")
    vals = [float(v) for v in vals]
    for v in vals:
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"eps must be finite and >= 0, got {v}")
    return vals


def _mixed_lower(bound_fn: Callable[[str], Tensor], method: str, beta: float) -> Tensor:
    """Lower bound by `method`; for crown-ibp the β-mix with IBP (both sound, so is the mix)."""
    if method != "crown-ibp" or beta >= 1.0:
        return bound_fn(method)
    if beta <= 0.0:
        return bound_fn("ibp")
    return beta * bound_fn("crown-ibp") + (1.0 - beta) * bound_fn("ibp")


def _mix(natural: Tensor, robust: Tensor, kappa: float) -> Tensor:
    if not 0 <= kappa <= 1:
        raise ValueError(f"kappa (χ, the natural-loss weight) must be in [0, 1], got {kappa}")
    return kappa * natural + (1.0 - kappa) * robust


def certified_loss(
    head: nn.Module,
    z: Tensor,
    y: Tensor,
    latent,
    eps,
    method: str = "crown-ibp",
    *,
    kappa: float = 0.0,
    beta: float = 1.0,
    reduction: str = "mean",
    return_parts: bool = False,
):
    """χ·CE(head(z), y) + (1 − χ)·L_spec over the latent set(s) around z (paper §2.3, App. A.1).

    Args:
        head: f_d (supported layers only); z: N×d codes (may carry gradients to an encoder);
        y: N labels.
        latent: a set kind (`Dims`, `Direction`, `Basis`), a list of them, or a dict name → kind
            (several unit tests trained at once).
        eps: one radius for every set, one per set, or a dict name → radius.
        method: "ibp", "crown-ibp" or "crown" (bounds of the margins f_y − f_j).
        kappa: χ, the natural-loss weight (1 = plain training).
        beta: for "crown-ibp", the lower bound is β·CROWN-IBP + (1 − β)·IBP.
        reduction: how the sets' L_spec combine: "mean" or "sum".
        return_parts: also return (natural, robust) losses, detached.

    Returns:
        The scalar loss (and the parts). At ε = 0 it equals `F.cross_entropy(head(z), y)`.
    """
    method = parse_method(method)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    sets = _named_sets(latent)
    eps_v = _eps_list(eps, len(sets), [n for n, _ in sets])
    z, y = _check_zy(z, y)
    out = head(z)
    C = label_rows(y, out.shape[1], out.dtype)
    natural = F.cross_entropy(out, y)
    robust_terms = []
    if kappa < 1.0:
        for (_name, kind), e in zip(sets, eps_v):
            s = kind.make(z, e)

            def fn(m: str, s=s) -> Tensor:
                return bound(head, s, C, m, bound_upper=False)[0]

            robust_terms.append(margin_cross_entropy(_mixed_lower(fn, method, beta)))
        robust = torch.stack(robust_terms).sum() if reduction == "sum" else torch.stack(robust_terms).mean()
    else:
        robust = natural.new_zeros(())
    loss = _mix(natural, robust, kappa)
    if return_parts:
        return loss, (natural.detach(), robust.detach())
    return loss


def pixel_certified_loss(
    module: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    p="inf",
    method: str = "crown-ibp",
    *,
    kappa: float = 0.0,
    beta: float = 1.0,
    return_parts: bool = False,
):
    """The same loss over the pixel ball ‖x' − x‖_p ≤ ε through the whole network (encoder + head).

    This is the pixel-space baseline of paper Table 2 (standard CROWN-IBP certified training).
    """
    method = parse_method(method)
    y = torch.as_tensor(y).long().flatten()
    out = module(x)
    C = label_rows(y, out.shape[1], out.dtype)
    natural = F.cross_entropy(out, y)
    if kappa < 1.0:

        def fn(m: str) -> Tensor:
            return bound_ball(module, x, float(eps), p, C, m, bound_upper=False)[0]

        robust = margin_cross_entropy(_mixed_lower(fn, method, beta))
    else:
        robust = natural.new_zeros(())
    loss = _mix(natural, robust, kappa)
    return (loss, (natural.detach(), robust.detach())) if return_parts else loss


def _check_zy(z, y) -> tuple[Tensor, Tensor]:
    if not isinstance(z, Tensor):
        z = torch.as_tensor(z, dtype=torch.get_default_dtype())
    y = torch.as_tensor(y, device=z.device)
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise ValueError("labels y must be integer class indices")
    y = y.long().flatten()
    if z.dim() != 2 or y.shape[0] != z.shape[0]:
        raise ValueError(f"need codes z of N×d and labels y of N, got shapes {tuple(z.shape)} and {tuple(y.shape)}")
    return z, y


# ----------------------------------------------------------------------------- verified error
@torch.no_grad()
def _verified_mask(lower_fn: Callable[[slice], Tensor], out_fn: Callable[[slice], Tensor], y: Tensor,
                   n: int, batch_size: int) -> Tensor:
    ok = torch.zeros(n, dtype=torch.bool)
    for i in range(0, n, batch_size):
        sl = slice(i, min(n, i + batch_size))
        correct = out_fn(sl).argmax(1).cpu() == y[sl].cpu()
        ok[sl] = (lower_fn(sl) > 0).all(dim=1).cpu() & correct
    return ok


def verified_error(head: nn.Module, z: Tensor, y: Tensor, latent: SetKind, eps,
                   method: str = "crown-ibp", batch_size: int = 4096) -> float | list[float]:
    """Fraction of samples NOT proven robust: some margin's lower bound ≤ 0 over the set, or
    misclassified at z0 (the spec-sheet's verified error for spec 'label', computed with the
    bound engine directly; `auditai.verify.verify` gives the same number for the same method).

    `eps` a float → a float; a sequence of radii → a list, one per radius.
    """
    z, y = _check_zy(z, y)
    method = parse_method(method)
    scalar = isinstance(eps, (int, float))
    eps_l = [float(eps)] if scalar else [float(e) for e in eps]
    was = head.training
    head.eval()
    try:
        with torch.no_grad():
            k = head(z[:1]).shape[1] if len(z) else 2
        C = label_rows(y, k, z.dtype)
        res = []
        for e in eps_l:
            mask = _verified_mask(
                lambda sl, e=e: bound(head, latent.make(z[sl], e), C[sl], method, bound_upper=False)[0],
                lambda sl: head(z[sl]), y, len(y), batch_size)
            res.append(1.0 - mask.double().mean().item() if len(y) else float("nan"))
    finally:
        head.train(was)
    return res[0] if scalar else res


def pixel_verified_error(module: nn.Module, x: Tensor, y: Tensor, eps, p="inf",
                         method: str = "crown-ibp", batch_size: int = 256) -> float | list[float]:
    """Verified error of `module` (encoder + head) over pixel balls ‖x' − x‖_p ≤ ε (see `verified_error`)."""
    y = torch.as_tensor(y).long().flatten()
    method = parse_method(method)
    scalar = isinstance(eps, (int, float))
    eps_l = [float(eps)] if scalar else [float(e) for e in eps]
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            k = module(x[:1]).shape[1]
        C = label_rows(y, k, x.dtype)
        res = []
        for e in eps_l:
            mask = _verified_mask(
                lambda sl, e=e: bound_ball(module, x[sl], e, p, C[sl], method, bound_upper=False)[0],
                lambda sl: module(x[sl]), y, len(y), batch_size)
            res.append(1.0 - mask.double().mean().item() if len(y) else float("nan"))
    finally:
        module.train(was)
    return res[0] if scalar else res


# ----------------------------------------------------------------------------- training loop
@dataclass
class FitResult:
    """What `fit`/`fit_pixel` did: the per-epoch history and where checkpoints went."""

    history: list[dict] = field(default_factory=list)
    checkpoint: str | None = None
    time_s: float = 0.0

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _params(*modules) -> list[nn.Parameter]:
    seen, out = set(), []
    for m in modules:
        if m is None:
            continue
        for p in m.parameters():
            if id(p) not in seen and p.requires_grad:
                seen.add(id(p))
                out.append(p)
    return out


def _run(
    modules: dict[str, nn.Module],
    n: int,
    epochs: int,
    batch_loss: Callable[[Tensor, float, float, float], tuple[Tensor, Tensor, Tensor, int]],
    evaluate: Callable[[], dict],
    sched: Schedules,
    *,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    checkpoint: str | Path | None,
    resume: bool,
    progress: bool,
    log: Callable[[str], None] | None,
    describe_eps: Callable[[float], str],
    eval_every: int = 1,
) -> FitResult:
    """The shared loop: Adam, seeded permutations per epoch, schedules per batch, eval per epoch."""
    params = _params(*modules.values())
    if not params:
        raise ValueError("nothing to train: the modules have no parameters that require gradients")
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    result, start = FitResult(), 0
    ck = Path(checkpoint) if checkpoint is not None else None
    if ck is not None and resume and ck.is_file():
        state = torch.load(ck, map_location="cpu", weights_only=True)
        for name, m in modules.items():
            m.load_state_dict(state["modules"][name])
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        result.history = list(_unpack_history(state.get("history", {})))
        if log:
            log(f"resumed from {ck} after epoch {start}")
    modes = {k: m.training for k, m in modules.items()}
    for m in modules.values():
        m.eval()  # bounds treat BatchNorm/Dropout as fixed (eval) layers: train what is bounded
    nb = max(1, math.ceil(n / batch_size))
    t_all = time.perf_counter()
    try:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
            perm = torch.randperm(n, generator=gen)
            tot = nat = rob = 0.0
            correct = 0
            it = _progress(range(nb), nb, f"epoch {epoch + 1}/{epochs}", progress)
            for b in it:
                idx = perm[b * batch_size:(b + 1) * batch_size]
                frac, kappa, beta = sched.at(epoch + b / nb)
                loss, natural, robust, ok = batch_loss(idx, frac, kappa, beta)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"certified training diverged at epoch {epoch + 1}, batch {b + 1}: loss {loss.item()} "
                        f"(try a smaller learning rate or a longer ramp)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += loss.item() * len(idx)
                nat += float(natural) * len(idx)
                rob += float(robust) * len(idx)
                correct += ok
            frac, kappa, beta = sched.at(epoch + 1 - 1e-9)
            rec = {"epoch": epoch + 1, "eps_fraction": frac, "kappa": kappa, "beta": beta,
                   "loss": tot / n, "natural_loss": nat / n, "robust_loss": rob / n,
                   "train_accuracy": correct / n}
            if eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
                rec.update(evaluate())
            rec["time_s"] = time.perf_counter() - t0
            result.history.append(rec)
            if log:
                line = (f"epoch {epoch + 1}/{epochs}: {describe_eps(frac)} χ {kappa:.2f} loss {rec['loss']:.4f} "
                        f"train acc {rec['train_accuracy']:.3f}")
                if "verified_error" in rec:
                    ve = ", ".join(f"{k} {v:.3f}" for k, v in rec["verified_error"].items())
                    line += f" | clean err {rec['clean_error']:.3f} verified err @target: {ve}"
                log(f"{line} ({rec['time_s']:.1f} s)")
            if ck is not None:
                ck.parent.mkdir(parents=True, exist_ok=True)
                tmp = ck.with_name(ck.name + ".tmp")
                torch.save({"epoch": epoch + 1, "modules": {k: m.state_dict() for k, m in modules.items()},
                            "optimizer": opt.state_dict(), "history": _pack_history(result.history)}, tmp)
                tmp.replace(ck)
                result.checkpoint = str(ck)
    finally:
        for k, m in modules.items():
            m.train(modes[k])
    result.time_s = time.perf_counter() - t_all
    return result


def _pack_history(history: list[dict]) -> dict:
    """History as tensors (checkpoints load with weights_only=True): key → 1-D tensor."""
    flat: dict[str, list[float]] = {}
    for rec in history:
        for k, v in rec.items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    flat.setdefault(f"{k}/{k2}", []).append(float(v2))
            else:
                flat.setdefault(k, []).append(float(v))
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in flat.items()}


def _unpack_history(packed: dict):
    n = len(next(iter(packed.values()))) if packed else 0
    for i in range(n):
        rec: dict[str, Any] = {}
        for k, v in packed.items():
            if "/" in k:
                a, b = k.split("/", 1)
                rec.setdefault(a, {})[b] = float(v[i])
            else:
                rec[k] = int(v[i]) if k == "epoch" else float(v[i])
        yield rec


def fit(
    head: nn.Module,
    z: Tensor | None,
    y: Tensor,
    latents,
    eps,
    epochs: int = 20,
    *,
    method: str = "crown-ibp",
    lr: float = DEFAULT_LR,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    warmup: int = DEFAULT_WARMUP,
    ramp: int | None = None,
    schedule: str = "smoothed",
    kappa_end: float = 0.0,
    crown_ibp_mix: bool = True,
    reduction: str = "mean",
    seed: int = 0,
    encoder: nn.Module | None = None,
    x: Tensor | None = None,
    gen_loss: Callable[[Tensor], Tensor] | None = None,
    gen_module: nn.Module | None = None,
    delta: float = 0.0,
    eval_data: tuple[Tensor, Tensor] | None = None,
    eval_method: str | None = None,
    eval_limit: int | None = 2000,
    eval_every: int = 1,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> FitResult:
    """Certified training of `head` (in place) on latent codes (paper §2.3).

    Args:
        head: f_d; z: N×d training codes (or None with `encoder` and `x`); y: N labels.
        latents, eps: the unit tests' sets and target radii (see `certified_loss`).
        epochs, warmup, ramp, schedule, kappa_end: see `schedules`; β ramps 1 → 0 when
            `crown_ibp_mix` (CROWN-IBP's mix of CROWN-IBP and IBP bounds), else stays 1.
        encoder, x: fine-tune the encoder too: codes are `encoder(x)` per batch.
        gen_loss, gen_module, delta: add δ·gen_loss(x_batch) (L_gen, e.g. the demo VAE's
            ELBO: `lambda xb: elbo_loss(vae, xb)`); `gen_module`'s parameters are trained too.
        eval_data: (codes, labels) — or (inputs, labels) with an encoder — for the verified error
            reported each epoch at the target ε (default: the first `eval_limit` training samples);
            `eval_every`: only every that many epochs (and the last; 0: never).
        checkpoint: a file written after each epoch (state dicts; `resume=True` continues from it).
        progress: a tqdm bar per epoch when tqdm is installed; `log` gets one line per epoch.

    Returns:
        FitResult with `history`: per epoch the schedule values, losses, training accuracy,
        `clean_error` and `verified_error` (set name → fraction) at the target ε.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    sets = _named_sets(latents)
    names = [nm for nm, _ in sets]
    targets = _eps_list(eps, len(sets), names)
    method = parse_method(method)
    eval_method = parse_method(eval_method or method)
    if encoder is None:
        if z is None:
            raise ValueError("give the codes z, or an encoder and inputs x to fine-tune it")
        z, y = _check_zy(z, y)
        n = z.shape[0]
    else:
        if x is None:
            raise ValueError("encoder fine-tuning needs the inputs x")
        y = torch.as_tensor(y).long().flatten()
        n = x.shape[0]
        if y.shape[0] != n:
            raise ValueError(f"got {y.shape[0]} labels for {n} inputs")
    if delta and gen_loss is None:
        raise ValueError("delta > 0 needs gen_loss (L_gen, e.g. the VAE's ELBO)")
    if n == 0:
        raise ValueError("no training samples")
    sched = schedules(epochs, warmup, ramp, schedule, kappa_end)
    if not crown_ibp_mix:
        sched = Schedules(sched.eps, sched.kappa, Schedule(1.0, 1.0, warmup, 0, "linear"))

    def codes(idx: Tensor) -> Tensor:
        return z[idx] if encoder is None else encoder(x[idx])

    def batch_loss(idx, frac, kappa, beta):
        zb = codes(idx)
        yb = y[idx]
        loss, (natural, robust) = certified_loss(
            head, zb, yb, dict(sets), {nm: frac * t for nm, t in zip(names, targets)}, method,
            kappa=kappa, beta=beta, reduction=reduction, return_parts=True)
        if delta:
            loss = loss + delta * gen_loss(x[idx])
        with torch.no_grad():
            ok = int((head(zb.detach()).argmax(1) == yb).sum())
        return loss, natural, robust, ok

    if eval_data is not None:
        ev_in, ev_y = eval_data
        ev_y = torch.as_tensor(ev_y).long().flatten()
    else:
        lim = n if eval_limit is None else min(n, eval_limit)
        ev_in, ev_y = (z if encoder is None else x)[:lim], y[:lim]

    def evaluate() -> dict:
        with torch.no_grad():
            ez = ev_in if encoder is None else torch.cat(
                [encoder(ev_in[i:i + 1024]) for i in range(0, len(ev_in), 1024)])
            clean = 1.0 - (head(ez).argmax(1) == ev_y).float().mean().item()
        ve = {nm: verified_error(head, ez, ev_y, kind, t, eval_method) for (nm, kind), t in zip(sets, targets)}
        return {"clean_error": clean, "verified_error": ve}

    modules = {"head": head}
    if encoder is not None:
        modules["encoder"] = encoder
    if gen_module is not None:
        modules["gen"] = gen_module
    tgt = ", ".join(f"{t:g}" for t in targets)
    return _run(modules, n, epochs, batch_loss, evaluate, sched, lr=lr, weight_decay=weight_decay,
                batch_size=batch_size, seed=seed, checkpoint=checkpoint, resume=resume,
                progress=progress, log=log, describe_eps=lambda f: f"ε {f:.2f}×[{tgt}]",
                eval_every=eval_every)


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
    method: str = "crown-ibp",
    lr: float = DEFAULT_LR,
    weight_decay: float = 0.0,
    batch_size: int = 128,
    warmup: int = DEFAULT_WARMUP,
    ramp: int | None = None,
    schedule: str = "smoothed",
    kappa_end: float = 0.0,
    crown_ibp_mix: bool = True,
    seed: int = 0,
    eval_data: tuple[Tensor, Tensor] | None = None,
    eval_method: str | None = None,
    eval_limit: int | None = 500,
    eval_every: int = 1,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> FitResult:
    """The pixel-space baseline (paper Table 2): the same certified training on ℓp balls around x,
    bounded through encoder and head (`bound_ball`; the encoder must hold supported layers).

    `train_encoder=True` trains the whole network (standard pixel-space certified training);
    False trains only the head behind a fixed encoder. Other arguments as in `fit`.
    """
    if not (float(eps) >= 0 and math.isfinite(float(eps))):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    parse_norm(p)
    method = parse_method(method)
    eval_method = parse_method(eval_method or method)
    y = torch.as_tensor(y).long().flatten()
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"need as many labels as inputs (> 0), got {y.shape[0]} and {x.shape[0]}")
    net = nn.Sequential(encoder, head)
    sched = schedules(epochs, warmup, ramp, schedule, kappa_end)
    if not crown_ibp_mix:
        sched = Schedules(sched.eps, sched.kappa, Schedule(1.0, 1.0, warmup, 0, "linear"))
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

    if eval_data is not None:
        ev_x, ev_y = eval_data[0], torch.as_tensor(eval_data[1]).long().flatten()
    else:
        lim = len(y) if eval_limit is None else min(len(y), eval_limit)
        ev_x, ev_y = x[:lim], y[:lim]

    def evaluate() -> dict:
        with torch.no_grad():
            clean = 1.0 - (net(ev_x).argmax(1) == ev_y).float().mean().item()
        return {"clean_error": clean,
                "verified_error": {"pixel": pixel_verified_error(net, ev_x, ev_y, float(eps), p, eval_method)}}

    modules = {"encoder": encoder, "head": head} if train_encoder else {"head": head}
    try:
        return _run(modules, len(y), epochs, batch_loss, evaluate, sched, lr=lr, weight_decay=weight_decay,
                    batch_size=batch_size, seed=seed, checkpoint=checkpoint, resume=resume,
                    progress=progress, log=log, describe_eps=lambda f: f"pixel ε {f * float(eps):.4g}",
                    eval_every=eval_every)
    finally:
        if not train_encoder:
            for q in encoder.parameters():
                q.requires_grad_(True)


# ----------------------------------------------------------------------------- Table 2 metric
@torch.no_grad()
def latent_box_of_pixel_ball(encoder: nn.Module, x: Tensor, eps: float, p="inf",
                             method: str = "crown-ibp", batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """(lower, upper), each N×d: a sound box around e(x') for every ‖x' − x‖_p ≤ ε.

    The box contains the true image of the pixel ball (it over-approximates it), so a radius
    read from it favours the pixel-space approach in `relative_radius`.
    """
    was = encoder.training
    encoder.eval()
    try:
        lows, ups = [], []
        for i in range(0, x.shape[0], batch_size):
            lo, up = bound_ball(encoder, x[i:i + batch_size], float(eps), p, None, method, bound_upper=True)
            lows.append(lo)
            ups.append(up)
    finally:
        encoder.train(was)
    return torch.cat(lows), torch.cat(ups)


def relative_radius(half_widths: Tensor, z_nominal: Tensor, dims: Sequence[int] | None = None) -> float:
    """ε/‖z_nom‖ of paper Table 2, in ℓ2, over the tested latent coordinates `dims` (default all):

        sqrt(mean_n ‖h_n[dims]‖²) / sqrt(mean_n ‖z0_n[dims]‖²)

    `half_widths` is N×d (per sample and coordinate) or a scalar. For the latent approach, the
    unit test is the ℓ∞ box of radius ε1 on `dims`, so h = ε1 for every sample and coordinate
    and the value is ε1·√k / ‖z_nom‖ (the ℓ2 length of the box's half-diagonal relative to the
    ℓ2 length of the nominal code there). For the pixel approach, h_n = (u_n − l_n)/2 of the
    latent box that the pixel ball of radius ε2 around x_n maps into (ε21 of the paper, from
    `latent_box_of_pixel_ball` on that approach's own encoder), and z0 are its own codes. Both
    are a displacement in the latent space relative to the size of the nominal codes; the
    pixel one is an over-approximation (a box containing the image), which favours pixels.
    """
    z = z_nominal if dims is None else z_nominal[:, list(dims)]
    k = z.shape[1]
    h = torch.as_tensor(half_widths, dtype=z.dtype)
    if h.dim() == 0:
        num = float(h) * math.sqrt(k)
    else:
        h = h if dims is None else h[:, list(dims)]
        num = h.pow(2).sum(1).mean().sqrt().item()
    den = z.pow(2).sum(1).mean().sqrt().item()
    if den == 0:
        raise ValueError("the nominal codes are all zero on the tested coordinates: no scale to compare to")
    return num / den


def radius_at_error(eps_grid: Sequence[float], errors: Sequence[float], level: float,
                    values: Sequence[float] | None = None) -> float | None:
    """The radius ε at which the verified-error curve reaches `level` (linear interpolation).

    The curve is made monotone first (running maximum over increasing ε: each ε has its own
    trained head, so noise can break monotonicity). With `values` (one per grid point, e.g. the
    relative radius of each trained model), the value interpolated at the same point is
    returned instead of ε. Returns the last grid point's value if the curve never reaches the
    level (a lower bound: check `max(errors) < level`), None if it starts above it.
    """
    vals = [float(e) for e in eps_grid] if values is None else [float(v) for v in values]
    if len(vals) != len(eps_grid) or len(errors) != len(eps_grid):
        raise ValueError(f"eps_grid, errors and values must have one entry per grid point, got "
                         f"{len(eps_grid)}, {len(errors)}, {len(vals)}")
    pts = sorted(zip((float(e) for e in eps_grid), (float(v) for v in errors), vals))
    if not pts:
        return None
    es = [p[2] for p in pts]
    vs, run = [], -math.inf
    for _, v, _ in pts:
        run = max(run, v)
        vs.append(run)
    if vs[0] > level:
        return None
    for i in range(1, len(es)):
        if vs[i] >= level:
            if vs[i] == vs[i - 1]:
                return es[i - 1]
            t = (level - vs[i - 1]) / (vs[i] - vs[i - 1])
            return es[i - 1] + t * (es[i] - es[i - 1])
    return es[-1]
