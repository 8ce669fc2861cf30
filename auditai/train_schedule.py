"""The schedules of certified training (paper App. A.1): ε as a fraction of its target, the
natural-loss weight χ and CROWN-IBP's mix β, each a function of the (fractional) epoch."""

from __future__ import annotations

from dataclasses import dataclass
from auditai.errors import InputError

SCHEDULE_KINDS = ("linear", "smoothed")
DEFAULT_LR = 5e-4
DEFAULT_WARMUP = 5


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
            raise InputError(f"schedule kind must be one of {SCHEDULE_KINDS}, got {self.kind!r}")
        if self.warmup < 0 or self.ramp < 0:
            raise InputError(f"warmup and ramp must be >= 0 epochs, got {self.warmup}, {self.ramp}")
        if not 0 < self.mid < 1 or self.power < 1:
            raise InputError(f"need 0 < mid < 1 and power >= 1, got {self.mid}, {self.power}")

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
        raise InputError(f"epochs must be >= 1, got {epochs}")
    if not 0 <= warmup < epochs:
        raise InputError(
            f"warmup={warmup} leaves no epoch of certified training in epochs={epochs} "
            "(need 0 <= warmup < epochs)")
    if ramp is None:
        ramp = max(1, (epochs - warmup) // 2)
    if ramp < 0:
        raise InputError(f"ramp must be >= 0 epochs, got {ramp}")
    if not 0 <= kappa_end <= 1:
        raise InputError(f"kappa_end (the final natural-loss weight χ) must be in [0, 1], got {kappa_end}")
    eps = Schedule(0.0, 1.0, warmup, ramp, kind)
    return Schedules(eps, Schedule(1.0, kappa_end, warmup, ramp, "linear"), Schedule(1.0, 0.0, warmup, ramp, kind))
