"""The `auditai` command: one sub-command per module in `auditai.commands`.

Each module there defines `add_arguments(parser)` and `run(args) -> int` (the exit status) and
a one-line `HELP`. Modules are imported only when listed here, so `auditai --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from auditai.errors import AuditaiError

COMMANDS = {
    "verify": "auditai.commands.verify",
    "check": "auditai.commands.check",
    "diff": "auditai.commands.diff",
    "train": "auditai.commands.train",
    "export-vnnlib": "auditai.commands.export_vnnlib",
    "merge": "auditai.commands.merge",
    "vnnlib": "auditai.commands.vnnlib",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditai", description="Semantic unit tests for trained models (AuditAI)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            mod = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                continue
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except AuditaiError as e:
        print(f"auditai {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
