"""The library's vocabulary that needs no torch: norm names and their parser.

Imports only the standard library, so the engine (`auditai.bounds`), the suite, the CLI and
the plugin can all use it without loading torch. `auditai.latent` re-exports these names.
"""

from __future__ import annotations

import math

NORMS = {"inf": math.inf, "linf": math.inf, "2": 2.0, "l2": 2.0, "1": 1.0, "l1": 1.0}


def parse_norm(norm: str | float) -> float:
    """Normalise a norm name ("inf", 2, "l1", math.inf, ...) to math.inf, 2.0 or 1.0."""
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        if float(norm) in (math.inf, 2.0, 1.0):
            return float(norm)
    elif isinstance(norm, str) and norm.strip().lower() in NORMS:
        return NORMS[norm.strip().lower()]
    raise ValueError(f"norm must be one of 'inf', 2 or 1, got {norm!r}")


def norm_name(p: float) -> str:
    """'inf', '2' or '1' for a parsed norm (for reports and JSON)."""
    return "inf" if math.isinf(p) else str(int(p))
