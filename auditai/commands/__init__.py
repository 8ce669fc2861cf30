"""Sub-commands of `auditai` (see auditai/cli.py) and the argument types they share."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def nonnegative_float(flag: str) -> Callable[[str], float]:
    """An argparse `type=` that accepts a finite number >= 0 and names `flag` otherwise."""

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {s!r}") from None
        if not math.isfinite(v) or v < 0:
            raise argparse.ArgumentTypeError(f"{flag} must be finite and >= 0, got {s!r}")
        return v

    return parse
