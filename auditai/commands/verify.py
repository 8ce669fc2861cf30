"""`auditai verify`: run a YAML suite, or one unit test given by options, without pytest.

Prints one row per unit test and ε and exits 1 when a gate fails (2 on a usage or input error,
via `auditai.cli`). A unit test without a threshold is only measured (report-only). `--report`
writes the spec-sheet (.json/.md/.html) like the plugin does.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

HELP = "verify a YAML suite (or one unit test given by options) and print the results table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", help="a YAML suite file (omit to give one unit test by options)")
    parser.add_argument("--model", help="model file or package.module:attribute (overrides the suite's)")
    parser.add_argument("--data", help="data file, image folder or package.module:attribute (overrides the suite's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--method", help="default method: ibp, crown-ibp, crown or complete")
    parser.add_argument("--target", default=None, choices=("head", "classifier"),
                        help="default target of unit tests that name none: head (default) or classifier "
                             "(the model's image classifier on the decoder's images)")
    parser.add_argument("--engine", default=None, choices=("auditai", "auto_lirpa"),
                        help="auditai (default) or auto_lirpa (for heads with layers ours rejects); "
                             "overrides the suite's `engine:`")
    parser.add_argument("--report", action="append", default=[], metavar="PATH",
                        help="write the spec-sheet to PATH (.json/.md/.html; repeatable)")
    parser.add_argument("--trust-pickle", action="store_true", help="allow pickled model files")
    shard = parser.add_argument_group("sharded, resumable runs (torchrun or one process)")
    shard.add_argument("--out", metavar="DIR", default=None,
                       help="run folder: chunks, manifest, results.json and sheet.json; rerunning resumes "
                            "(needed under torchrun)")
    shard.add_argument("--chunk-size", type=int, default=None, metavar="C",
                       help="samples per chunk, independent of the number of ranks (default: the run "
                            "folder's, else 256)")
    shard.add_argument("--dist-timeout", type=float, default=1800.0, metavar="S",
                       help="seconds a rank waits at a barrier (default 1800)")
    one = parser.add_argument_group("one unit test (instead of a suite)")
    one.add_argument("--name", default="unit_test")
    one.add_argument("--direction")
    one.add_argument("--dims", help="latent indices 3,4 or a named dims entry")
    one.add_argument("--basis")
    one.add_argument("--norm", default="inf")
    one.add_argument("--eps", type=float, nargs="+")
    one.add_argument("--report-eps", type=float, nargs="+", default=[])
    one.add_argument("--max-verified-error", type=float)
    one.add_argument("--min-verified-accuracy", type=float)
    one.add_argument("--spec", default=None, help="label, prediction, binary or band (default label)")


def _device(name: str) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _single_test(args: argparse.Namespace) -> Any:
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


def run(args: argparse.Namespace) -> int:
    from auditai.distributed.group import under_torchrun

    if getattr(args, "out", None) or under_torchrun():
        from auditai.distributed.run import run_sharded

        return run_sharded(args)
    from tabulate import tabulate

    from auditai.data import load_data
    from auditai.errors import SuiteError
    from auditai.model import load_model
    from auditai.suite import load_suite

    # the files first (suite, model, data), then the unit test given by options
    suite = load_suite(args.suite) if args.suite else None
    model_src = args.model or (suite.model if suite else None)
    data_src = args.data or (suite.data if suite else None)
    if not model_src or not data_src:
        raise SuiteError("no model or data: give --model and --data (or `model:`/`data:` in the suite)",
                         path=suite.path if suite else None)
    device = _device(args.device)
    model = load_model(model_src, trust_pickle=args.trust_pickle)
    data = load_data(data_src, model, device=device)
    if suite is None:
        suite = _single_test(args)
    from auditai.blackbox import attach_images, target_module
    from auditai.verify import verify

    engine = args.engine or suite.engine or "auditai"
    table, entries, failed = [], [], 0
    for ut in suite.unit_tests:
        ut = ut.with_defaults(spec=suite.spec, method=args.method or suite.method,
                              target=getattr(args, "target", None))
        kind = ut.set_kind(model)
        fn = target_module(model, ut.target, f"unit test '{ut.name}'")
        result = verify(fn, data.z, data.y, kind, list(ut.all_eps), spec=ut.spec,
                        method=ut.method, device=device, engine=engine)
        attach_images(result, model, ut.target)
        entries.append((ut, result, kind))
        for i, e in enumerate(result.eps):
            ve = float(result.verified_error[i])
            gated = ut.has_gate and any(math.isclose(e, g, rel_tol=1e-9) for g in ut.eps)
            ok = ut.gate(ve)
            failed += gated and not ok
            table.append([ut.name, ut.set_text, f"{e:g}", f"{result.clean_error[i]:.3g}", f"{ve:.3g}",
                          f"{result.falsified_fraction[i]:.3g}", f"{result.unknown_fraction[i]:.3g}",
                          f"{ut.gate_text} {'pass' if ok else 'FAIL'}" if gated else ""])
    print(tabulate(table, ["unit test", "set", "ε", "clean err", "verified err", "falsified",
                           "unknown", "gate"], tablefmt="plain"))
    if args.report:
        from auditai.sheet.record import SpecSheet

        sheet = SpecSheet.from_results(entries, model=model, data=data, device=device,
                                       method=args.method or suite.method, engine=engine, suite=suite.name)
        for path in args.report:
            sheet.write(path, model=model, codes=data.z)
        print("reports: " + ", ".join(args.report))
    if failed:
        print(f"{failed} gate(s) failed")
    return 1 if failed else 0
