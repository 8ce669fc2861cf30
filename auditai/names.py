"""The library's vocabulary, torch-free: bound methods, engines, spec kinds, set kinds, norms.

Every place that takes one of these names from a user (the engine's `bound`, `verify`, the YAML
suite and the `unit_test` decorator, the CLI, the pytest plugin's options and ini values) parses
it here, so the same spellings work everywhere: the canonical name, in any case and with
surrounding spaces; norms also by number and as "linf"/"l2"/"l1"/"infinity". Anything else is
a `ChoiceError` listing the choices and the closest one ("did you mean ...").

Adding a bound method is one line in `BOUND_METHODS` (the engine must then implement it);
`METHODS` (what `verify`, the suite, the CLI and the plugin take) follows. Imports only the
standard library and `auditai.errors`; `auditai.latent` re-exports the norm names.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Iterable

from auditai.errors import ChoiceError

#: the bound engine's methods (auditai.bounds.bound); they mean what auto_LiRPA means by them
BOUND_METHODS: tuple[str, ...] = (
    "ibp",  # interval bound propagation
    "crown-ibp",  # intermediate bounds by IBP, the output by CROWN's backward pass
    "crown",  # every bound by CROWN's backward pass
    "alpha-crown",  # CROWN with optimized relaxation slopes (auto_LiRPA's "CROWN-Optimized")
)
#: methods of `verify`, the suite, the CLI and the plugin: the bound methods and the complete check
METHODS: tuple[str, ...] = (*BOUND_METHODS, "complete")
DEFAULT_METHOD = "crown-ibp"

#: bound engines: ours, and auto_LiRPA (the reference, when installed)
ENGINES: tuple[str, ...] = ("auditai", "auto_lirpa")
DEFAULT_ENGINE = "auditai"

#: output specifications (auditai.spec.make_spec)
SPEC_KINDS: tuple[str, ...] = ("label", "prediction", "binary", "band")
DEFAULT_SPEC = "label"

#: arithmetic of the bounds: "auto" is float32 on CUDA, float64 on CPU (auditai.bounds.rounding)
PRECISIONS: tuple[str, ...] = ("auto", "float32", "float64")
_PRECISION_SPELLINGS = {"fp32": "float32", "single": "float32", "fp64": "float64", "double": "float64"}

#: what a unit test verifies: the latent head f_d, or the image classifier on the decoder's images
TARGETS: tuple[str, ...] = ("head", "classifier")
DEFAULT_TARGET = "head"

#: latent set kinds, as a suite names them (`direction:`, `dims:`, `basis:`) and the sheet stores them
SET_KINDS: tuple[str, ...] = ("direction", "dims", "basis")

#: norm spellings → p
NORMS = {"inf": math.inf, "linf": math.inf, "infinity": math.inf, "l_inf": math.inf,
         "2": 2.0, "l2": 2.0, "1": 1.0, "l1": 1.0}
#: canonical norm names (as stored in suites, results and sheets)
NORM_NAMES: tuple[str, ...] = ("inf", "2", "1")


def closest(word: object, choices: Iterable[str]) -> str | None:
    """The closest of `choices` to `word` (difflib), or None."""
    close = difflib.get_close_matches(str(word).strip().lower(), [str(c) for c in choices], n=1, cutoff=0.5)
    return close[0] if close else None


def choose(what: str, value: object, choices: Iterable[str]) -> str:
    """`value` as one of `choices` (case and surrounding spaces ignored), else a ChoiceError."""
    choices = tuple(choices)
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    raise ChoiceError(what, value, choices, closest(value, choices))


def parse_method(method: object, choices: Iterable[str] = METHODS) -> str:
    """A method name of `choices` (default `METHODS`; the engine passes `BOUND_METHODS`)."""
    return choose("method", method, choices)


def parse_bound_method(method: object) -> str:
    """A method of the bound engine (`BOUND_METHODS`: no "complete")."""
    return choose("bound method", method, BOUND_METHODS)


def parse_precision_name(precision: object) -> str:
    """'auto', 'float32' or 'float64' (also fp32/single, fp64/double)."""
    v = _PRECISION_SPELLINGS.get(str(precision).strip().lower(), precision)
    return choose("precision", v, PRECISIONS)


def parse_target(target: object) -> str:
    """'head' or 'classifier' (what a unit test verifies; paper §2.3 and §2.2)."""
    return choose("target", target, TARGETS)


def parse_engine(engine: object) -> str:
    """'auditai' or 'auto_lirpa'."""
    return choose("engine", engine, ENGINES)


def parse_spec_kind(kind: object) -> str:
    """One of SPEC_KINDS."""
    return choose("spec", kind, SPEC_KINDS)


def parse_set_kind(kind: object) -> str:
    """One of SET_KINDS."""
    return choose("set kind", kind, SET_KINDS)


def parse_norm(norm: str | float) -> float:
    """Normalise a norm name ("inf", 2, "l1", "infinity", math.inf, ...) to math.inf, 2.0 or 1.0."""
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        if float(norm) in (math.inf, 2.0, 1.0):
            return float(norm)
    elif isinstance(norm, str):
        key = norm.strip().lower()
        if key in NORMS:
            return NORMS[key]
        try:
            f = float(key)
        except ValueError:
            f = math.nan
        if f in (math.inf, 2.0, 1.0):  # "2.0", "1e0"
            return f
    raise ChoiceError("norm", norm, ("inf", 2, 1), closest(norm, NORMS))


def norm_name(p: float) -> str:
    """'inf', '2' or '1' for a parsed norm (for reports and JSON)."""
    return "inf" if math.isinf(p) else str(int(p))


def canonical_norm(norm: str | float) -> str:
    """The canonical name ('inf', '2' or '1') of any accepted norm spelling."""
    return norm_name(parse_norm(norm))


def arg_type(parse: Callable[[Any], Any], what: str) -> Callable[[str], Any]:
    """An argparse `type=` from one of these parsers: a bad name is a usage error (exit 2)."""
    import argparse

    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ChoiceError as e:
            raise argparse.ArgumentTypeError(f"invalid {what} {value!r}: {e.expected}") from None

    convert.__name__ = what  # argparse names the type in its messages
    return convert
