"""The options certified training shares (`FitOptions`: the keyword arguments of `fit`,
`fit_pixel` and `fit_ddp`) and the set-up of training on latent sets (`LatentPlan`: the named
sets, their target ε, the methods and the schedules), shared by `fit` and `fit_ddp`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from auditai.bounds.engine import parse_method
from auditai.train_loss import SetKind, _eps_list, _named_sets, certified_loss, verified_error
from auditai.train_schedule import DEFAULT_LR, DEFAULT_WARMUP, Schedule, Schedules, schedules
from auditai.errors import InputError, InputTypeError


@dataclass(frozen=True, eq=False)
class FitOptions:
    """How to train: optimizer, schedules, evaluation, checkpoints and output.

    Each field is also a keyword argument of `fit`, `fit_pixel` and `fit_ddp`; pass either
    `options=FitOptions(...)` or the keywords (keywords override the options given).

    method: "ibp", "crown-ibp" or "crown" for the bounds of the loss. lr, weight_decay: Adam's.
    warmup, ramp, schedule, kappa_end: see `auditai.train.schedules`; β ramps 1 → 0 with ε when
    `crown_ibp_mix` (CROWN-IBP's mix of CROWN-IBP and IBP bounds), else stays 1.
    eval_data: (codes or inputs, labels) for the verified error each epoch (default: the
    first `eval_limit` training samples); `eval_method` (default `method`); `eval_every`: only
    every that many epochs and the last (0: never). checkpoint: a file written after each epoch;
    `resume=True` continues from it. progress: a tqdm bar per epoch when tqdm is installed;
    `log` gets one line per epoch (None: silent).
    """

    method: str = "crown-ibp"
    lr: float = DEFAULT_LR
    weight_decay: float = 0.0
    batch_size: int = 256
    warmup: int = DEFAULT_WARMUP
    ramp: int | None = None
    schedule: str = "smoothed"
    kappa_end: float = 0.0
    crown_ibp_mix: bool = True
    seed: int = 0
    eval_data: tuple[Tensor, Tensor] | None = None
    eval_method: str | None = None
    eval_limit: int | None = 2000
    eval_every: int = 1
    checkpoint: str | Path | None = None
    resume: bool = False
    progress: bool = True
    log: Callable[[str], None] | None = print

    @classmethod
    def build(cls, options: FitOptions | None, given: Mapping[str, Any], where: str, **defaults: Any) -> FitOptions:
        """`options` (or the defaults, with `where`'s own `defaults` over them) with the
        keywords `given` on top; an unknown keyword is a TypeError naming it, as Python's."""
        known = {f.name for f in fields(cls)}
        for k in given:
            if k not in known:
                raise InputTypeError(f"{where}() got an unexpected keyword argument {k!r}")
        base = options if options is not None else cls(**defaults)
        if not isinstance(base, cls):
            raise InputTypeError(f"{where}(): options must be a FitOptions, got {type(base).__name__}")
        return replace(base, **given) if given else base

    def schedules(self, epochs: int) -> Schedules:
        """ε, χ and β schedules for `epochs` epochs (β held at 1 without the CROWN-IBP mix)."""
        sched = schedules(epochs, self.warmup, self.ramp, self.schedule, self.kappa_end)
        if not self.crown_ibp_mix:
            sched = Schedules(sched.eps, sched.kappa, Schedule(1.0, 1.0, self.warmup, 0, "linear"))
        return sched

    def methods(self) -> tuple[str, str]:
        """(training method, evaluation method), parsed."""
        method = parse_method(self.method)
        return method, parse_method(self.eval_method or method)

    def eval_split(self, inputs: Tensor, y: Tensor) -> tuple[Any, Tensor]:
        """(inputs, labels) to evaluate on: `eval_data`, else the first `eval_limit` samples."""
        if self.eval_data is not None:
            return self.eval_data[0], torch.as_tensor(self.eval_data[1]).long().flatten()
        n = len(y)
        lim = n if self.eval_limit is None else min(n, self.eval_limit)
        return inputs[:lim], y[:lim]


@dataclass(frozen=True)
class LatentPlan:
    """Training on latent sets: the named sets, their target ε, the methods and schedules."""

    sets: list[tuple[str, SetKind]]
    targets: list[float]
    method: str
    eval_method: str
    sched: Schedules

    @property
    def names(self) -> list[str]:
        return [nm for nm, _ in self.sets]

    def batch(self, head: nn.Module, z: Tensor, y: Tensor, frac: float, kappa: float, beta: float,
              reduction: str) -> tuple[Tensor, Tensor, Tensor, int]:
        """(loss, natural loss, robust loss, correct count) of one batch at ε = frac·target."""
        loss, (natural, robust) = certified_loss(
            head, z, y, dict(self.sets), {nm: frac * t for nm, t in zip(self.names, self.targets)},
            self.method, kappa=kappa, beta=beta, reduction=reduction, return_parts=True)
        with torch.no_grad():
            ok = int((head(z.detach()).argmax(1) == y).sum())
        return loss, natural, robust, ok

    def evaluate(self, head: nn.Module, z: Tensor, y: Tensor) -> dict:
        """{"clean_error": …, "verified_error": {set name: fraction at its target ε}}."""
        with torch.no_grad():
            clean = 1.0 - (head(z).argmax(1) == y).float().mean().item()
        ve = {nm: verified_error(head, z, y, kind, t, self.eval_method) for (nm, kind), t in zip(self.sets, self.targets)}
        return {"clean_error": clean, "verified_error": ve}


def latent_plan(latents: Any, eps: Any, epochs: int, options: FitOptions) -> LatentPlan:
    """Check `epochs`, name the sets, read their targets, parse the methods, build the schedules."""
    if epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    sets = _named_sets(latents)
    targets = _eps_list(eps, len(sets), [nm for nm, _ in sets])
    method, eval_method = options.methods()
    return LatentPlan(sets, targets, method, eval_method, options.schedules(epochs))
