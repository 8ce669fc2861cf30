"""Certified training under DistributedDataParallel, with atomic step checkpoints (paper §2.3).

`fit_ddp` is `auditai.train.fit`'s algorithm (same schedules, same seeded permutation per
epoch, Adam) on a torchrun group: the global batch `perm[b·B:(b+1)·B]` is split as
`batch[rank::W]`, and the certified loss runs inside the wrapped module's forward
(`CertifiedLoss`, so DDP's hooks average the gradients of the bounds too). Each rank's loss is
its mean times n_rank·W/n_batch, so DDP's average of the gradients is the gradient of the global
batch's mean: 2 ranks and 1 process give the same head (float rounding aside).

Checkpoints (rank 0, temp file + `os.replace`): head and optimizer state, epoch, next batch,
global step, the ε schedule's time, RNG state and history. A restarted run (torchrun
`--max-restarts`, or `resume=True`) continues from the last one at the same batch.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from auditai.distributed import group as grp
from auditai.errors import InputError
from auditai.train_loop import FitResult, _pack_history, _unpack_history
from auditai.train_loss import _check_zy
from auditai.train_options import FitOptions, LatentPlan, latent_plan

#: test-only fault injection: "RANK:STEP" makes that rank SIGKILL itself before global step STEP
#: (first torchrun attempt only)
TEST_KILL_STEP_ENV = "AUDITAI_TEST_KILL_RANK_AT_STEP"


class CertifiedLoss(nn.Module):
    """The head wrapped so that `forward` is the certified loss (what DDP wraps)."""

    def __init__(self, head: nn.Module, plan: LatentPlan, reduction: str) -> None:
        super().__init__()
        self.head = head
        self.plan, self.reduction = plan, reduction

    def forward(self, z: Tensor, y: Tensor, frac: float, kappa: float, beta: float, weight: float):
        """(weighted loss, natural loss, robust loss, correct count) of this rank's samples."""
        if z.shape[0] == 0:  # a rank without samples in a short last batch: zero gradients
            zero = sum(p.sum() for p in self.head.parameters()) * 0.0
            return zero, 0.0, 0.0, 0
        loss, nat, rob, ok = self.plan.batch(self.head, z, y, frac, kappa, beta, self.reduction)
        return loss * weight, float(nat), float(rob), ok


def _kill_at(rank: int, step: int) -> None:
    spec = os.environ.get(TEST_KILL_STEP_ENV)
    if not spec or grp.restart_count() != 0:
        return
    r, s = (int(x) for x in spec.split(":"))
    if r == rank and s == step:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save via a temporary file in the same folder and os.replace (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def fit_ddp(
    head: nn.Module,
    z: Tensor,
    y: Tensor,
    latents: Any,
    eps: Any,
    epochs: int = 20,
    *,
    reduction: str = "mean",
    checkpoint_every: int = 0,
    device: str = "auto",
    options: FitOptions | None = None,
    **opts: Any,
) -> FitResult:
    """`auditai.train.fit` on latent codes under torchrun (DDP), or in one process without it.

    The options are `fit`'s (`FitOptions`, or its fields as keywords; `progress` is ignored:
    one line per epoch is enough across ranks). Every rank holds the codes; the head ends
    identical on every rank. `checkpoint` is written by rank 0 after every epoch and every
    `checkpoint_every` steps (0: epochs only); it is loaded when `resume` or on a torchrun
    restart. Only rank 0 evaluates and logs.
    """
    o = FitOptions.build(options, opts, "fit_ddp")
    plan = latent_plan(latents, eps, epochs, o)
    z, y = _check_zy(z, y)
    if z.shape[0] == 0:
        raise InputError("no training samples")
    g = grp.init_group(device)
    try:
        return _loop(g, head, z, y, plan, o, epochs, reduction, checkpoint_every,
                     o.resume or grp.restart_count() > 0)
    finally:
        g.close()


def _loop(g: grp.Group, head: nn.Module, z: Tensor, y: Tensor, plan: LatentPlan, o: FitOptions, epochs: int,
          reduction: str, checkpoint_every: int, resume: bool) -> FitResult:
    dev = torch.device(g.device)
    sched, batch_size, seed, log, eval_every = plan.sched, o.batch_size, o.seed, o.log, o.eval_every
    n = z.shape[0]
    head.to(dev)
    z, y = z.to(dev), y.to(dev)
    params = [p for p in head.parameters() if p.requires_grad]
    if not params:
        raise InputError("nothing to train: the head has no parameters that require gradients")
    opt = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    result, start_epoch, start_batch, step = FitResult(), 0, 0, 0
    sums = torch.zeros(4, dtype=torch.float64)  # loss, natural, robust, correct of the epoch so far
    ck = Path(o.checkpoint) if o.checkpoint is not None else None
    if ck is not None and resume and ck.is_file():
        state = torch.load(ck, map_location="cpu", weights_only=True)
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, start_batch, step = int(state["epoch"]), int(state["batch"]), int(state["step"])
        torch.set_rng_state(state["rng"])
        sums = state.get("sums", sums).to(torch.float64)
        result.history = list(_unpack_history(state.get("history", {})))
        if log and g.rank == 0:
            log(f"resumed from {ck} at epoch {start_epoch + 1}, batch {start_batch + 1} (step {step})")
    module: nn.Module = CertifiedLoss(head, plan, reduction)
    if g.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        module = DDP(module, device_ids=[dev.index] if dev.type == "cuda" else None)
    head.eval()  # bounds treat BatchNorm/Dropout as fixed (eval) layers: train what is bounded
    nb = max(1, math.ceil(n / batch_size))
    ev_z, ev_y = o.eval_split(z, y)
    ev_z, ev_y = torch.as_tensor(ev_z).to(dev), ev_y.to(dev)

    def checkpoint_now(epoch: int, batch: int) -> None:
        if ck is None or g.rank != 0:
            return
        save_checkpoint(ck, {
            "head": head.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "batch": batch,
            "step": step, "schedule_t": epoch + batch / nb, "rng": torch.get_rng_state(),
            "history": _pack_history(result.history), "world_size": g.world_size,
            "sums": sums.clone(),
        })
        result.checkpoint = str(ck)

    t_all = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)  # as auditai.train.fit
        perm = torch.randperm(n, generator=gen)
        if epoch != start_epoch or start_batch == 0:
            sums.zero_()
        for b in range(start_batch if epoch == start_epoch else 0, nb):
            _kill_at(g.rank, step)
            idx = perm[b * batch_size:(b + 1) * batch_size]
            mine = idx[g.rank::g.world_size].to(dev)
            frac, kappa, beta = sched.at(epoch + b / nb)
            weight = len(mine) * g.world_size / len(idx)
            loss, nat, rob, ok = module(z[mine], y[mine], frac, kappa, beta, weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"certified training diverged at epoch {epoch + 1}, batch {b + 1}: "
                                         f"loss {loss.item()} (try a smaller learning rate or a longer ramp)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            part = torch.tensor([float(loss.detach()) / weight * len(mine) if len(mine) else 0.0,
                                 nat * len(mine), rob * len(mine), float(ok)], dtype=torch.float64)
            if g.distributed:  # NCCL reduces device tensors only
                import torch.distributed as dist

                part = part.to(dev)
                dist.all_reduce(part)
            sums += part.cpu()
            if checkpoint_every and step % checkpoint_every == 0 and b + 1 < nb:
                checkpoint_now(epoch, b + 1)
        frac, kappa, beta = sched.at(epoch + 1 - 1e-9)
        rec = {"epoch": epoch + 1, "eps_fraction": frac, "kappa": kappa, "beta": beta,
               "loss": float(sums[0]) / n, "natural_loss": float(sums[1]) / n,
               "robust_loss": float(sums[2]) / n, "train_accuracy": float(sums[3]) / n}
        if g.rank == 0 and eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            rec.update(plan.evaluate(head, ev_z, ev_y))
        rec["time_s"] = time.perf_counter() - t0
        result.history.append(rec)
        if log and g.rank == 0:
            line = f"epoch {epoch + 1}/{epochs} ({g.world_size} rank(s)): χ {kappa:.2f} loss {rec['loss']:.4f}"
            if "verified_error" in rec:
                line += " | verified err @target: " + ", ".join(f"{k} {v:.3f}" for k, v in rec["verified_error"].items())
            log(line)
        checkpoint_now(epoch + 1, 0)
        start_batch = 0
    result.time_s = time.perf_counter() - t_all
    head.cpu()
    return result
