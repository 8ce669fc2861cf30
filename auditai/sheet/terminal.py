"""Terminal table of a spec-sheet (tabulate), as in the pytest plugin's summary section.

One row per unit test and ε: set, clean error, verified error, falsified fraction, median
certified radius and the gate. `lines()` yields strings, so the table is testable as data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tabulate import tabulate

from auditai.sheet.record import SheetRecord

HEADERS = ["unit test", "set", "ε", "clean err", "verified err", "falsified", "unknown", "radius(med)", "gate"]


def _n(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def rows(sheet: SheetRecord) -> list[list[str]]:
    out = []
    for ut in sheet.unit_tests:
        for r in ut.rows:
            if r.gated and r.passed is not None:
                gate = f"{ut.threshold_text()} {'pass' if r.passed else 'FAIL'}"
            else:
                gate = "report"
            out.append(
                [
                    _clean(ut.name),
                    _clean(ut.set_text),
                    f"{r.eps:g}",
                    _n(r.clean_error),
                    _n(r.verified_error),
                    _n(r.falsified_fraction),
                    _n(r.unknown_fraction),
                    ut.radius_text(r, _n),
                    gate,
                ]
            )
    return out


def _clean(s: object) -> str:
    """One printable line: control characters (terminal escapes) replaced."""
    return "".join(c if c.isprintable() else "?" for c in str(s))


def lines(sheet: SheetRecord, reports: Sequence[str] = ()) -> Iterator[str]:
    yield from tabulate(rows(sheet), headers=HEADERS, disable_numparse=True).splitlines()
    if reports:
        yield "reports: " + ", ".join(str(r) for r in reports)


def to_terminal(sheet: SheetRecord, reports: Sequence[str] = ()) -> str:
    return "\n".join(lines(sheet, reports))
