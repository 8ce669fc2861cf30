"""Command-line options of the plugin; each is also an ini value (`[tool.pytest.ini_options]`).

Option names are module constants so tests and docs use the same strings. Values are
validated at parse time (argparse `type=`), so a bad flag fails on the command line. This
module imports neither torch nor any of auditai but its torch-free vocabulary (auditai.names).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from auditai import names

GROUP = "auditai"

MODEL = "--auditai-model"
DATA = "--auditai-data"
TRAIN_DATA = "--auditai-train-data"
DEVICE = "--auditai-device"
METHOD = "--auditai-method"
TARGET = "--auditai-target"
CLASSIFIER = "--auditai-classifier"
DECODER = "--auditai-decoder"
ENGINE = "--auditai-engine"
PRECISION = "--auditai-precision"
REPORT = "--auditai-report"
BASELINE = "--auditai-baseline"
TRUST_PICKLE = "--auditai-trust-pickle"
RESULTS = "--auditai-results"

INI_SUITE_PATTERN = "auditai_suite_pattern"
INI_BASELINE_TOLERANCE = "auditai_baseline_tolerance"
DEFAULT_SUITE_PATTERN = "auditai_*.yaml"
DEFAULT_BASELINE_TOLERANCE = 0.01

METHODS = names.METHODS  # the vocabulary lives in auditai.names
ENGINES = names.ENGINES
PRECISIONS = names.PRECISIONS
TARGETS = names.TARGETS
REPORT_SUFFIXES = (".json", ".md", ".html")
MARKER = "auditai"


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def ini_name(option: str) -> str:
    """'--auditai-model' → 'auditai_model' (the ini key)."""
    return _dest(option)


def parse_device(value: str) -> str:
    """argparse type: 'auto', 'cpu', 'cuda' or 'cuda:N'."""
    v = str(value).strip().lower()
    if v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v):
        return v
    raise argparse.ArgumentTypeError(
        f"invalid device {value!r}: expected 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'"
    )


parse_method = names.arg_type(names.parse_method, "method")
parse_engine = names.arg_type(names.parse_engine, "engine")
parse_precision = names.arg_type(names.parse_precision_name, "precision")
parse_target = names.arg_type(names.parse_target, "target")


def parse_report(value: str) -> str:
    """argparse type: a report path ending in .json, .md or .html."""
    v = str(value)
    if not v.lower().endswith(REPORT_SUFFIXES):
        raise argparse.ArgumentTypeError(
            f"invalid report path {value!r}: the format is chosen by the suffix, "
            f"expected one of {', '.join(REPORT_SUFFIXES)}"
        )
    return v


def parse_tolerance(value: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = -1.0
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"{INI_BASELINE_TOLERANCE} must be a number in [0, 1], got {value!r}")
    return f


# option, ini type, default, help, argparse extras
_OPTIONS: list[tuple[str, str, Any, str, dict]] = [
    (MODEL, "string", None,
     "model to audit: a model file (.pt/.auditai/.onnx) or package.module:attribute naming an "
     "AuditModel or a function returning one; overrides a suite's `model:`", {"metavar": "SOURCE"}),
    (DATA, "string", None,
     "data whose latent codes are the centres of the unit tests: .pt/.npz/.safetensors, an image "
     "folder, or package.module:attribute; overrides a suite's `data:`", {"metavar": "SOURCE"}),
    (TRAIN_DATA, "string", None,
     "training data whose latent codes give the spec-sheet's deployment ranges (paper §2.4); "
     "same formats as --auditai-data; overrides a suite's `train_data:` (default: the data)",
     {"metavar": "SOURCE"}),
    (DEVICE, "string", "auto",
     "device for verification: auto (CUDA when available, else CPU), cpu, cuda or cuda:N "
     "(default: auto)", {"metavar": "DEVICE", "type": parse_device}),
    (METHOD, "string", None,
     f"default bound method for unit tests that name none: {', '.join(METHODS)} "
     f"(default: {names.DEFAULT_METHOD})", {"metavar": "METHOD", "type": parse_method}),
    (TARGET, "string", None,
     "default target for unit tests that name none: head (f_d on the latent set) or classifier "
     "(the model's image classifier on the decoder's images, paper §2.2) (default: head)",
     {"metavar": "TARGET", "type": parse_target}),
    (CLASSIFIER, "string", None,
     "image classifier for `target: classifier`, attached to the model (replacing its own): an .onnx "
     "file, an auditai model file holding one, or package.module:attribute", {"metavar": "SOURCE"}),
    (DECODER, "string", None,
     "generator (decoder Z → images) for `target: classifier`, attached to the model (replacing its "
     "own): an .onnx file, an auditai model file holding one, or package.module:attribute",
     {"metavar": "SOURCE"}),
    (ENGINE, "string", "auditai",
     f"bound engine: {' or '.join(ENGINES)} (default: {names.DEFAULT_ENGINE})",
     {"metavar": "ENGINE", "type": parse_engine}),
    (PRECISION, "string", "auto",
     "bound arithmetic: float32 (with a sound rounding allowance: a margin within it is unknown) or "
     "float64; auto (default): float32 on CUDA, float64 on CPU",
     {"metavar": "PRECISION", "type": parse_precision}),
    (REPORT, "args", [],
     "write the spec-sheet of the run to PATH, format by suffix .json/.md/.html (repeatable)",
     {"metavar": "PATH", "action": "append", "type": parse_report}),
    (BASELINE, "string", None,
     "a previous JSON report: a unit test whose verified error grew by more than "
     f"{INI_BASELINE_TOLERANCE} (default {DEFAULT_BASELINE_TOLERANCE}) fails", {"metavar": "PATH"}),
    (RESULTS, "string", None,
     "the run folder of a sharded `auditai verify --out DIR` (e.g. on a cluster): its merged "
     "results become test items, gated and reported as usual, without verifying again",
     {"metavar": "DIR"}),
    (TRUST_PICKLE, "bool", False,
     "allow loading pickled model files (runs code from the file: only for files you trust)",
     {"action": "store_true"}),
]


def add_options(parser: Any) -> None:
    """Register the `auditai` option group and its ini values (`add_option_ini` style)."""
    group = parser.getgroup(GROUP, "auditai: semantic unit tests for trained models")
    for option, ini_type, default, help_text, extra in _OPTIONS:
        name = ini_name(option)
        group.addoption(option, dest=name, default=None, help=help_text, **extra)
        parser.addini(name, help=f"default for {option}", type=ini_type, default=default)
    parser.addini(INI_SUITE_PATTERN, type="args", default=[DEFAULT_SUITE_PATTERN],
                  help=f"glob pattern(s) of YAML suite files to collect (default {DEFAULT_SUITE_PATTERN})")
    parser.addini(INI_BASELINE_TOLERANCE, type="string", default=str(DEFAULT_BASELINE_TOLERANCE),
                  help=f"how much a verified error may grow over {BASELINE} (default {DEFAULT_BASELINE_TOLERANCE})")


_PARSERS = {DEVICE: parse_device, METHOD: parse_method, ENGINE: parse_engine, PRECISION: parse_precision,
            TARGET: parse_target}


def get_option(config: Any, option: str) -> Any:
    """The command-line value of `option`, else its ini value (validated like the flag)."""
    name = ini_name(option)
    value = config.getoption(name, default=None)
    if value is None or value is False or value == []:
        ini = config.getini(name)
        if option == REPORT:
            return [parse_report(v) for v in ini]
        if option == TRUST_PICKLE:
            return bool(value) or bool(ini)
        if ini in (None, ""):
            return None
        parse = _PARSERS.get(option)
        if parse is not None:
            try:
                return parse(ini)
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"ini value {name}: {e}") from None
        return ini
    return value
