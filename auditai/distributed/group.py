"""The process group: torch.distributed under torchrun, or one process without it.

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT set) the group uses gloo on
CPU and NCCL on CUDA, and rank r uses GPU LOCAL_RANK. Without torchrun every collective is the
identity, so the same code runs in one plain process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: test-only fault injection: "RANK:N" makes that rank SIGKILL itself while writing its (N+1)-th
#: chunk (temporary file written, not yet renamed) — only on torchrun's first attempt
TEST_KILL_ENV = "AUDITAI_TEST_KILL_RANK_AFTER_CHUNKS"


def under_torchrun() -> bool:
    """True when launched by torchrun (or another launcher that sets the env:// variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0.0 where unavailable), to account for
    the interpreter's start and the imports that precede the command."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(stat[19])  # field 22 (starttime), counted after the ')' of the name
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def restart_count() -> int:
    """torchrun's TORCHELASTIC_RESTART_COUNT (0 on the first attempt and without torchrun)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


@dataclass
class Group:
    """rank, world size, local rank and the device this rank computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    distributed: bool = False

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (small, picklable objects only), in rank order."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.distributed = False


def _hosts_store(rank: int) -> bool:
    """Whether this process must start the TCPStore server: not when torchrun's agent hosts it."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" and rank == 0


def init_group(device: str = "auto", timeout_s: float = 1800.0) -> Group:
    """Join torchrun's group (gloo on CPU, NCCL on CUDA) or return a one-process group.

    `device` is 'auto', 'cpu', 'cuda' or 'cuda:N'; under torchrun 'auto'/'cuda' mean
    cuda:LOCAL_RANK when CUDA is available.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not under_torchrun():
        return Group(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    import torch.distributed as dist

    if device.startswith("cuda"):
        if device == "cuda":
            device = f"cuda:{local}"
        torch.cuda.set_device(torch.device(device))
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        # torchrun's store can outlive a restart: keys of the killed attempt (its ranks' old
        # addresses) would make gloo connect to dead ports, so each attempt gets its own prefix.
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                              is_master=_hosts_store(rank), timeout=timeout)
        store = dist.PrefixStore(f"auditai/attempt_{restart_count()}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return Group(rank=rank, world_size=world, local_rank=local, device=device, distributed=True)


def fault_hook_for_tests(rank: int, written: int):
    """The fault-injection hook for a chunk write (see TEST_KILL_ENV), or None. Test-only."""
    spec = os.environ.get(TEST_KILL_ENV)
    if not spec or restart_count() != 0:
        return None
    try:
        r, n = (int(x) for x in spec.split(":"))
    except ValueError:
        return None
    if r != rank or written != n:
        return None

    def kill(_tmp: Any) -> None:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    return kill
