"""The model spec-sheet (paper Fig. 1, §2.4): record, JSON, merge, diff and renderers.

The rooms, each importing only those above it:

- `fields`, `coords`, `report_record`: plain values, the tested coordinates, the deployment
  section's record;
- `entry` (`SheetEntry`, one result reduced) and `record` (`SheetRecord`, `UnitTestSheet`,
  `EpsRow`: data, JSON, merge);
- one renderer per module (`markdown`, `html`, `terminal`, `plots`, `modelcard`,
  `deployment`) and `diff`, which import the record, never the reverse;
- `write` (`SpecSheet`: the record plus its renderers, the diff and the deployment check).
"""

from __future__ import annotations

from auditai.sheet.diff import RowChange, SheetDiff, diff_sheets
from auditai.sheet.record import (
    SCHEMA,
    EpsRow,
    SheetEntry,
    SheetRecord,
    UnitTestSheet,
    gate_passes,
    write_atomic,
)
from auditai.sheet.write import SpecSheet

__all__ = [
    "SCHEMA",
    "EpsRow",
    "RowChange",
    "SheetDiff",
    "SheetEntry",
    "SheetRecord",
    "SpecSheet",
    "UnitTestSheet",
    "diff_sheets",
    "gate_passes",
    "write_atomic",
]
