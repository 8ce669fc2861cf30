"""`auditai merge DIR`: merge the chunks of a sharded `auditai verify --out DIR` run offline.

Checks that every (unit test, sample) appears exactly once, then writes DIR/results.json,
DIR/sheet.json and the --report files and prints the table (exit 1 when a gate fails). The
model and data are loaded from the manifest's sources and their hashes checked.
"""

from __future__ import annotations

import argparse

HELP = "merge a sharded verification run folder (auditai verify --out DIR) into its spec-sheet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="the run folder of `auditai verify --out DIR`")
    parser.add_argument("--report", action="append", default=[], metavar="PATH",
                        help="also write the spec-sheet to PATH (.json/.md/.html; repeatable)")


def run(args: argparse.Namespace) -> int:
    from auditai.distributed.run import merge_command

    return merge_command(args.dir, reports=args.report)
