"""`auditai verify`: run a YAML suite, or one unit test given by options, without pytest.

Prints one row per unit test and ε and exits 1 when a gate fails (2 on a usage or input error,
via `auditai.cli`). A unit test without a threshold is only measured (report-only). `--report`
writes the spec-sheet (.json/.md/.html) like the plugin does.
"""

from __future__ import annotations

import argparse

from auditai import names
from auditai.commands.single_test import single_test as _single_test

HELP = "verify a YAML suite (or one unit test given by options) and print the results table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", help="a YAML suite file (omit to give one unit test by options)")
    parser.add_argument("--model", help="model file or package.module:attribute (overrides the suite's)")
    parser.add_argument("--data", help="data file, image folder or package.module:attribute (overrides the suite's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--method", type=names.arg_type(names.parse_method, "method"),
                        help=f"default method: {', '.join(names.METHODS)}")
    parser.add_argument("--target", default=None, choices=names.TARGETS,
                        help="default target of unit tests that name none: head (default) or classifier "
                             "(the model's image classifier on the decoder's images)")
    parser.add_argument("--classifier", metavar="SOURCE", default=None,
                        help="image classifier for target classifier, attached to the model: an .onnx file, "
                             "an auditai model file holding one, or package.module:attribute")
    parser.add_argument("--decoder", metavar="SOURCE", default=None,
                        help="generator (decoder Z → images) for target classifier, attached to the model: "
                             "an .onnx file, an auditai model file holding one, or package.module:attribute")
    parser.add_argument("--engine", default=None, choices=names.ENGINES, type=_engine,
                        help="auditai (default) or auto_lirpa (for heads with layers ours rejects); "
                             "overrides the suite's `engine:`")
    parser.add_argument("--precision", default=None, choices=("float32", "float64"),
                        help="bound arithmetic: float32 (sound rounding allowance; a margin within it is "
                             "unknown) or float64 (default: float32 on CUDA, float64 on CPU)")
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
    one.add_argument("--norm", default="inf", type=names.arg_type(names.canonical_norm, "norm"))
    one.add_argument("--eps", type=float, nargs="+")
    one.add_argument("--report-eps", type=float, nargs="+", default=[])
    one.add_argument("--max-verified-error", type=float)
    one.add_argument("--min-verified-accuracy", type=float)
    one.add_argument("--spec", default=None, type=names.arg_type(names.parse_spec_kind, "spec"),
                     help=f"{', '.join(names.SPEC_KINDS)} (default {names.DEFAULT_SPEC})")


def _engine(value: str) -> str:
    """An engine name as spelled in auditai.names (argparse's `choices` then rejects any other)."""
    v = str(value).strip().lower()
    return v if v in names.ENGINES else value


def _device(name: str) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


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
    if getattr(args, "classifier", None) or getattr(args, "decoder", None):
        from auditai.blackbox import with_parts

        model = with_parts(model, classifier=args.classifier, decoder=args.decoder, trust_pickle=args.trust_pickle)
    data = load_data(data_src, model, device=device)
    if suite is None:
        suite = _single_test(args)
    from auditai import gate
    from auditai.blackbox import attach_images, target_module
    from auditai.verify import verify

    engine = args.engine or suite.engine or "auditai"
    table, entries, failures = [], [], []
    for ut in suite.unit_tests:
        ut = ut.with_defaults(spec=suite.spec, method=args.method or suite.method,
                              target=getattr(args, "target", None))
        kind = ut.set_kind(model)
        fn = target_module(model, ut.target, f"unit test '{ut.name}'")
        result = verify(fn, data.z, data.y, kind, list(ut.all_eps), spec=ut.spec,
                        method=ut.method, device=device, engine=engine,
                        precision=getattr(args, "precision", None), max_time=ut.max_time)
        attach_images(result, model, ut.target)
        entries.append((ut, result, kind))
        rows, failed_here = gate.result_rows(ut, result)
        table += rows
        failures += failed_here
    print(tabulate(table, gate.TABLE_HEAD, tablefmt="plain"))
    if args.report:
        from auditai.sheet import SpecSheet

        sheet = SpecSheet.from_results(entries, model=model, data=data, device=device,
                                       method=args.method or suite.method, engine=engine, suite=suite.name)
        for path in args.report:
            sheet.write(path, model=model, codes=data.z)
        print("reports: " + ", ".join(args.report))
    for text in failures:
        print("\n" + text)
    if failures:
        print(f"{len(failures)} gate(s) failed")
    return 1 if failures else 0
