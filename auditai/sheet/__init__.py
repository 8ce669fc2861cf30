"""The model spec-sheet (paper Fig. 1, §2.4): record, JSON, merge, diff and renderers.

`SpecSheet` is the record (`record.py`); renderers live one per module (`markdown`, `html`,
`terminal`, `plots`, `modelcard`) and are imported only when used.
"""

from __future__ import annotations

from auditai.sheet.diff import RowChange, SheetDiff, diff_sheets
from auditai.sheet.record import (
    SCHEMA,
    EpsRow,
    SheetEntry,
    SpecSheet,
    UnitTestSheet,
    gate_passes,
    write_atomic,
)

__all__ = [
    "SCHEMA",
    "EpsRow",
    "RowChange",
    "SheetDiff",
    "SheetEntry",
    "SpecSheet",
    "UnitTestSheet",
    "diff_sheets",
    "gate_passes",
    "write_atomic",
]
