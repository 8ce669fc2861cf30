"""Gates, baselines and the failure text: the one place that decides whether a unit test passes.

Used by the pytest plugin (one test item per gated ε) and by `auditai verify` (one table row
per ε, exit 1 on a failed gate), so both pass and fail the same unit tests with the same words:

- `rows_for(ut, result)`: one plain row per ε (gated or report-only, passed or not);
- `failure_message(ut, result, eps)`: what a release engineer reads when a gate fails;
- `read_baseline(path)` / `baseline_error(...)` / `regression_message(...)`: a previous JSON
  spec-sheet as a baseline, and the text when a verified error grew past the tolerance;
- `check(ut, result, eps, ...)`: the gate and the baseline at one ε, as a failure text or None.

`ut` is an `auditai.suite.UnitTest`, `result` an `auditai.verify.VerificationResult` (any
object with the same fields works). Imports neither torch nor pytest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from auditai.errors import SheetError

DEFAULT_BASELINE_TOLERANCE = 0.01
_REL, _ABS = 1e-9, 1e-12  # ε values are compared with this tolerance (float round trips)


class BaselineError(SheetError):
    """A baseline file that cannot be read or is not an auditai JSON spec-sheet."""


def same_eps(a: float, b: float) -> bool:
    """Whether two radii are the same ε (tolerant to float round trips through JSON)."""
    return math.isclose(float(a), float(b), rel_tol=_REL, abs_tol=_ABS)


def eps_index(eps_list: list[float], eps: float) -> int:
    """Index of ε in a result's ε list (tolerant to float round trips)."""
    for i, e in enumerate(eps_list):
        if same_eps(e, eps):
            return i
    raise KeyError(f"ε={eps} not in the verified ε {eps_list}")


def is_gated(ut: Any, eps: float) -> bool:
    """Whether ε is one of the unit test's gated radii (report-only radii and gate-less unit
    tests are only measured)."""
    return bool(ut.has_gate) and any(same_eps(eps, g) for g in ut.eps)


def unit_test_dict(ut: Any) -> dict:
    """The unit test as plain JSON data (crosses processes; read back by the plugin's items)."""
    s = dict(ut.set)
    if "dims" in s and not isinstance(s["dims"], str):
        s["dims"] = list(s["dims"])
    return {
        "name": ut.name, "set": s, "set_text": ut.set_text, "norm": ut.norm, "eps": list(ut.eps),
        "report_eps": list(ut.report_eps), "max_verified_error": ut.max_verified_error,
        "min_verified_accuracy": ut.min_verified_accuracy, "spec": ut.spec, "method": ut.method,
        "target": getattr(ut, "target", None) or "head",
        "path": ut.path, "line": ut.line, "gate": ut.gate_text, "threshold_error": ut.threshold_error,
    }


def rows_for(ut: Any, result: Any) -> list[dict]:
    """One plain row per ε of a VerificationResult (the summary's and the CLI's table rows)."""
    radius = getattr(result, "certified_radius", None)
    med = None
    if radius is not None:
        try:
            med = float(radius.float().median())
        except (AttributeError, RuntimeError, TypeError):
            med = None
    rows = []
    for i, e in enumerate(result.eps):
        gated = is_gated(ut, e)
        ve = float(result.verified_error[i])
        rows.append({
            "unit_test": ut.name, "set": ut.set_text, "eps": float(e), "gated": gated,
            "clean_error": float(result.clean_error[i]), "verified_error": ve,
            "falsified_fraction": float(result.falsified_fraction[i]),
            "unknown_fraction": float(result.unknown_fraction[i]),
            "radius_median": med, "gate": ut.gate_text if gated else "",
            "threshold_error": ut.threshold_error if gated else None,
            "passed": ut.gate(ve) if gated else None,
            "n": int(result.n), "method": result.method, "spec": result.spec,
        })
    return rows


def failure_message(ut: Any, result: Any, eps: float, method_hint: str = "--method complete") -> str:
    """What a release engineer reads when a gate fails at ε (docs/what-users-see.md).

    `method_hint` is how the caller's user asks for the complete method (the plugin passes
    its `--auditai-method complete`)."""
    i = eps_index(list(result.eps), eps)
    ve, fal, unk = (float(result.verified_error[i]), float(result.falsified_fraction[i]),
                    float(result.unknown_fraction[i]))
    n = int(result.n)
    if ut.max_verified_error is not None:
        head = f"verified error {ve:.3g} > max {ut.max_verified_error:g}"
    else:
        head = (f"verified accuracy {1 - ve:.3g} < min {ut.min_verified_accuracy:g} "
                f"(verified error {ve:.3g} > {ut.threshold_error:.3g})")
    norm = "ℓ∞" if ut.norm == "inf" else f"ℓ{ut.norm}"
    lines = [
        f"unit test '{ut.name}' at ε={eps:g}: {head}",
        f"  set {ut.set_text} ({norm}, {result.method}, spec {result.spec}, {n:,} samples)",
        f"  falsified {fal:.3g} ({round(fal * n):,} samples with a counterexample) · unknown {unk:.3g}"
        f" · clean error {float(result.clean_error[i]):.3g}",
    ]
    try:
        cex = result.worst_counterexample(i)
    except (AttributeError, IndexError, KeyError, ValueError):
        cex = None
    if cex is not None:
        delta = ", ".join(f"{float(d):+.3g}" for d in cex.delta)
        outs = ", ".join(f"{float(o):.3g}" for o in cex.outputs)
        lines.append(
            f"  worst counterexample: sample {cex.sample}, δ=[{delta}] in {ut.set_text}, "
            f"violated row {cex.row} '{cex.row_name}': margin {float(cex.margin):.3g} (outputs [{outs}])"
        )
    else:
        lines.append("  no counterexample found: the failure is the bound's looseness (unknown samples)")
    if unk > 0 and result.method != "complete":
        lines.append(f"  hint: {method_hint} (or `method: complete`) decides the "
                     f"{unk:.1%} unknown; see the spec-sheet for the curve")
    elif fal > 0:
        lines.append("  hint: the counterexamples are real: retrain the head (auditai train) "
                     "or narrow ε; see the spec-sheet for the curve")
    return "\n".join(lines)


# --------------------------------------------------------------------------- baselines
def baseline_errors(data: Any) -> dict[tuple[str, float], float] | None:
    """(unit test, ε) → verified error of a JSON spec-sheet (None when `data` is not one)."""
    if not isinstance(data, dict):
        return None
    from auditai.sheet import SpecSheet

    try:
        sheet = SpecSheet.from_dict(data)
    except SheetError:
        return None
    out = {}
    for ut in sheet.unit_tests:
        for row in ut.rows:
            ve = row.verified_error
            if ve is not None and not math.isnan(ve):
                out[(ut.name, float(row.eps))] = float(ve)
    return out


def read_baseline(path: str | Path) -> dict[tuple[str, float], float]:
    """(unit test, ε) → verified error from a previous JSON spec-sheet; BaselineError names the
    file and the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BaselineError(f"cannot read {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise BaselineError(f"{path} is not JSON: {e}") from None
    out = baseline_errors(data)
    if out is None:
        raise BaselineError(f"{path} is not an auditai JSON report")
    return out


def baseline_error(baseline: dict[tuple[str, float], float], name: str, eps: float) -> float | None:
    """The baseline's verified error of unit test `name` at ε, or None when it has none."""
    for (n, e), v in baseline.items():
        if n == name and same_eps(e, eps):
            return v
    return None


def regression_message(ut: Any, eps: float, old: float, new: float, tolerance: float,
                       source: str, tolerance_name: str = "tolerance") -> str:
    """The failure text of a verified error that grew past the baseline's tolerance."""
    return (f"unit test '{ut.name}' at ε={eps:g}: verified error grew from {old:.3g} "
            f"(baseline {source}) to {new:.3g}, more than the tolerance "
            f"{tolerance:g} ({tolerance_name}); it is still under its gate "
            f"{ut.gate_text}\n  hint: compare the reports with `auditai diff`")


def check(ut: Any, result: Any, eps: float, baseline: dict | None = None,
          tolerance: float = DEFAULT_BASELINE_TOLERANCE, baseline_source: str = "",
          tolerance_name: str = "tolerance", method_hint: str = "--method complete") -> str | None:
    """The failure text at ε (the gate first, then the baseline), or None when it passes."""
    i = eps_index(list(result.eps), eps)
    ve = float(result.verified_error[i])
    if not ut.gate(ve):
        return failure_message(ut, result, eps, method_hint)
    old = None if baseline is None else baseline_error(baseline, ut.name, eps)
    if old is not None and ve > old + tolerance + 1e-12:
        return regression_message(ut, eps, old, ve, tolerance, baseline_source, tolerance_name)
    return None


# --------------------------------------------------------------------------- the CLI's table
TABLE_HEAD = ["unit test", "set", "ε", "clean err", "verified err", "falsified", "unknown", "gate"]


def table_row(ut: Any, eps: float, clean_error: float, verified_error: float, falsified: float,
              unknown: float) -> tuple[list[str], bool]:
    """One row of `auditai verify`'s table at ε and whether its gate failed there."""
    gated, ok = is_gated(ut, eps), ut.gate(verified_error)
    cells = [ut.name, ut.set_text, f"{eps:g}", f"{clean_error:.3g}", f"{verified_error:.3g}",
             f"{falsified:.3g}", f"{unknown:.3g}", f"{ut.gate_text} {'pass' if ok else 'FAIL'}" if gated else ""]
    return cells, gated and not ok


def result_rows(ut: Any, result: Any) -> tuple[list[list[str]], list[str]]:
    """`auditai verify`'s table rows of a VerificationResult and the failure text of each
    failed gate (the same text the plugin shows)."""
    table, failures = [], []
    for i, e in enumerate(result.eps):
        cells, failed = table_row(ut, float(e), float(result.clean_error[i]), float(result.verified_error[i]),
                                  float(result.falsified_fraction[i]), float(result.unknown_fraction[i]))
        table.append(cells)
        if failed:
            failures.append(failure_message(ut, result, float(e)))
    return table, failures
