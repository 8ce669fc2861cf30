"""The training loop shared by `fit` and `fit_pixel`: Adam, a seeded permutation per epoch,
the schedules per batch, an evaluation per epoch, atomic checkpoints that resume."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from auditai.train_schedule import Schedules
from auditai.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from auditai.train_options import FitOptions


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
    options: FitOptions,
    describe_eps: Callable[[float], str],
) -> FitResult:
    """The shared loop: Adam, seeded permutations per epoch, schedules per batch, eval per epoch."""
    o = options
    lr, weight_decay, batch_size, seed = o.lr, o.weight_decay, o.batch_size, o.seed
    checkpoint, resume, progress, log, eval_every = o.checkpoint, o.resume, o.progress, o.log, o.eval_every
    params = _params(*modules.values())
    if not params:
        raise InputError("nothing to train: the modules have no parameters that require gradients")
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
