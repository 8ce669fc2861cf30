"""The unit test that `auditai verify`'s options describe when no suite file is given; used by
the single-process command and by the sharded run (`auditai.distributed.run`), which import
this module and not each other."""

from __future__ import annotations

import argparse
from typing import Any


def single_test(args: argparse.Namespace) -> Any:
    """The one-unit-test `Suite` that the options of `auditai verify` (no suite file) describe."""
    from auditai.suite import Suite, make_unit_test

    dims: Any = args.dims
    if dims is not None and all(p.strip().isdigit() for p in dims.split(",")):
        dims = [int(p) for p in dims.split(",")]
    fields = {k: v for k, v in {
        "name": args.name, "direction": args.direction, "dims": dims, "basis": args.basis,
        "norm": args.norm, "eps": args.eps, "report_eps": args.report_eps or None,
        "max_verified_error": args.max_verified_error,
        "min_verified_accuracy": args.min_verified_accuracy, "spec": args.spec, "method": args.method,
        "target": getattr(args, "target", None),
    }.items() if v is not None}
    ut = make_unit_test(fields, where="command line")
    return Suite(name=args.name, path=None, model=None, data=None, spec=ut.spec or "label",
                 method=args.method, engine=args.engine, unit_tests=(ut,))
