"""Release comparison of two spec-sheets (`auditai diff`, the plugin's `--auditai-baseline`).

Per unit test and ε, the change of each figure. A *regression* is a verified error that grew
by more than `tolerance`, or a gate that passed in the old sheet and fails in the new one.
Unit tests or ε values that disappeared are reported (not regressions: the suite changed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from auditai.sheet.record import SheetRecord, _eps_close
from auditai.errors import InputError

FIGURES = (
    "clean_error",
    "verified_error",
    "falsified_fraction",
    "unknown_fraction",
    "median_certified_radius",
)


@dataclass
class RowChange:
    """The change of one unit test at one ε between two sheets."""

    unit_test: str
    eps: float
    old: dict  # figure -> value (None when absent)
    new: dict
    delta: dict  # figure -> new − old (None when either is absent)
    old_passed: bool | None
    new_passed: bool | None
    regression: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "unit_test": self.unit_test,
            "eps": self.eps,
            "old": self.old,
            "new": self.new,
            "delta": self.delta,
            "old_passed": self.old_passed,
            "new_passed": self.new_passed,
            "regression": self.regression,
            "reasons": list(self.reasons),
        }


@dataclass
class SheetDiff:
    """All changes between two sheets; `regressions` is what a release gate looks at."""

    changes: list[RowChange]
    tolerance: float
    added: list[str]  # "name" or "name@eps" present only in the new sheet
    removed: list[str]  # present only in the old sheet
    model_changed: bool
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[RowChange]:
        return [c for c in self.changes if c.regression]

    @property
    def has_regression(self) -> bool:
        return bool(self.regressions)

    def regression_for(self, unit_test: str, eps: float) -> RowChange | None:
        for c in self.regressions:
            if c.unit_test == unit_test and _eps_close(c.eps, eps):
                return c
        return None

    def to_dict(self) -> dict:
        return {
            "tolerance": self.tolerance,
            "regression": self.has_regression,
            "n_regressions": len(self.regressions),
            "model_changed": self.model_changed,
            "added": list(self.added),
            "removed": list(self.removed),
            "notes": list(self.notes),
            "changes": [c.to_dict() for c in self.changes],
        }

    def to_text(self) -> str:
        from tabulate import tabulate

        def fmt(x):
            return "–" if x is None else f"{x:.4g}"

        def sfmt(x):
            return "–" if x is None else f"{x:+.4g}"

        rows = []
        for c in self.changes:
            gate = {None: "", True: "pass", False: "FAIL"}
            rows.append(
                [
                    c.unit_test,
                    f"{c.eps:g}",
                    fmt(c.old.get("verified_error")),
                    fmt(c.new.get("verified_error")),
                    sfmt(c.delta.get("verified_error")),
                    sfmt(c.delta.get("falsified_fraction")),
                    sfmt(c.delta.get("clean_error")),
                    f"{gate[c.old_passed]}→{gate[c.new_passed]}" if (c.old_passed, c.new_passed) != (None, None) else "",
                    "REGRESSION: " + "; ".join(c.reasons) if c.regression else "",
                ]
            )
        out = [
            tabulate(
                rows,
                headers=["unit test", "ε", "verified err (old)", "(new)", "Δ", "Δ falsified", "Δ clean", "gate", ""],
            )
        ]
        for n in self.notes:
            out.append(f"note: {n}")
        if self.added:
            out.append("only in the new sheet: " + ", ".join(self.added))
        if self.removed:
            out.append("only in the old sheet: " + ", ".join(self.removed))
        k = len(self.regressions)
        out.append(
            f"{k} regression(s) beyond tolerance {self.tolerance:g}" if k else f"no regression beyond tolerance {self.tolerance:g}"
        )
        return "\n".join(out)


def diff_sheets(old: SheetRecord, new: SheetRecord, tolerance: float = 0.01) -> SheetDiff:
    """Compare `new` against the baseline `old`, per unit test (by name) and ε."""
    if not tolerance >= 0:
        raise InputError(f"tolerance must be >= 0, got {tolerance}")
    changes: list[RowChange] = []
    added: list[str] = []
    removed: list[str] = []
    notes: list[str] = []
    ma, mb = old.model.get("sha256"), new.model.get("sha256")
    model_changed = bool(ma and mb and ma != mb)
    if model_changed:
        notes.append(f"model changed: sha256 {ma[:12]}… → {mb[:12]}…")
    da, db = old.data.get("sha256"), new.data.get("sha256")
    if da and db and da != db:
        notes.append(f"data changed: sha256 {da[:12]}… → {db[:12]}… (figures measured on different samples)")
    for ut_new in new.unit_tests:
        ut_old = old.unit_test(ut_new.name)
        if ut_old is None:
            added.append(ut_new.name)
            continue
        if ut_old.set_kind != ut_new.set_kind or ut_old.norm != ut_new.norm:
            notes.append(f"unit test '{ut_new.name}': set changed ({ut_old.set_description} → {ut_new.set_description})")
        if ut_old.target != ut_new.target:
            notes.append(f"unit test '{ut_new.name}': target changed ({ut_old.target_text} → {ut_new.target_text})")
        for r_new in ut_new.rows:
            r_old = ut_old.row(r_new.eps)
            if r_old is None:
                added.append(f"{ut_new.name}@ε={r_new.eps:g}")
                continue
            o = {f: getattr(r_old, f) for f in FIGURES}
            n = {f: getattr(r_new, f) for f in FIGURES}
            delta = {f: (None if o[f] is None or n[f] is None else n[f] - o[f]) for f in FIGURES}
            reasons = []
            dv = delta["verified_error"]
            if dv is not None and dv > tolerance:
                reasons.append(f"verified error {o['verified_error']:.4g} → {n['verified_error']:.4g} (+{dv:.4g} > {tolerance:g})")
            if r_old.passed is True and r_new.passed is False:
                reasons.append("gate passed before and fails now")
            changes.append(
                RowChange(ut_new.name, r_new.eps, o, n, delta, r_old.passed, r_new.passed, bool(reasons), reasons)
            )
        for r_old in ut_old.rows:
            if ut_new.row(r_old.eps) is None:
                removed.append(f"{ut_old.name}@ε={r_old.eps:g}")
    for ut_old in old.unit_tests:
        if new.unit_test(ut_old.name) is None:
            removed.append(ut_old.name)
    return SheetDiff(changes, float(tolerance), added, removed, model_changed, notes)
