"""`auditai diff old.json new.json`: compare two spec-sheets, flag regressions.

A regression is a verified error that grew by more than --tolerance, or a gate that passed
before and fails now. Exit status 1 when there is any regression, 0 otherwise, 2 on errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from auditai.commands import nonnegative_float

HELP = "compare two spec-sheets per unit test and ε; exit 1 on a regression"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", help="the baseline spec-sheet JSON")
    parser.add_argument("new", help="the new spec-sheet JSON")
    parser.add_argument("--tolerance", type=nonnegative_float("--tolerance"), default=0.01,
                        help="largest allowed growth of a verified error (default 0.01)")
    parser.add_argument("--json", action="store_true", help="print the changes as JSON")


def run(args: argparse.Namespace) -> int:
    from auditai.sheet import SpecSheet, diff_sheets

    old = SpecSheet.from_json(Path(args.old))
    new = SpecSheet.from_json(Path(args.new))
    d = diff_sheets(old, new, tolerance=args.tolerance)
    if args.json:
        json.dump({"old": args.old, "new": args.new, **d.to_dict()}, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(d.to_text())
    return 1 if d.has_regression else 0
