"""The suite schema: unit tests and suites as data, and the validation of a unit test's fields.

`make_unit_test` checks one unit test's fields (a YAML mapping or the decorator's keywords) and
names every mistake (a `SuiteError` with file, line, key and "did you mean ..."); `auditai.suite_parse`
reads YAML suites into `Suite`; `auditai.suite` offers both and the `unit_test` decorator. No torch,
no pytest, no yaml at import time.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from auditai import names
from auditai.errors import ChoiceError, SuiteError

SPECS = names.SPEC_KINDS  # the vocabulary lives in auditai.names
METHODS = names.METHODS
NORMS = names.NORM_NAMES
SET_KEYS = names.SET_KINDS
TARGETS = names.TARGETS
THRESHOLD_KEYS = ("max_verified_error", "min_verified_accuracy")
UNIT_TEST_KEYS = (
    "name",
    *SET_KEYS,
    "norm",
    "eps",
    "report_eps",
    *THRESHOLD_KEYS,
    "spec",
    "method",
    "max_time",
    "target",
    "description",
)
SUITE_KEYS = ("suite", "description", "model", "data", "train_data", "spec", "method", "engine", "target",
              "unit_tests")
ENGINES = names.ENGINES
DEFAULT_SPEC = names.DEFAULT_SPEC
DEFAULT_METHOD = names.DEFAULT_METHOD
DEFAULT_TARGET = names.DEFAULT_TARGET


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest of `choices` (difflib), or ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _named(parse: Callable[[Any], str], value: Any, err: Callable[[str], Exception]) -> str | None:
    """`parse(value)` (an auditai.names parser) or None for None; a bad name raises `err(message)`."""
    if value is None:
        return None
    try:
        return parse(value)
    except ChoiceError as e:
        raise err(str(e)) from None


def _one_of(choices: Iterable[str]) -> str:
    return ", ".join(f"'{c}'" for c in choices)

# --------------------------------------------------------------------------- UnitTest
@dataclass(frozen=True)
class UnitTest:
    """One semantic unit test: a latent set, radii ε, a specification and a gate.

    `set` is `{"direction": name}`, `{"dims": [i, ...] or name}` or `{"basis": name}`.
    `eps` are gated (the threshold is checked at each), `report_eps` only measured; without
    a threshold the unit test is report-only (`has_gate` False): measured, never failed.
    `spec`/`method`/`target` may be None in a decorator's test until the plugin fills the session
    default (`with_defaults`). `target` is "head" (f_d on the latent set) or "classifier" (the
    model's image classifier on the decoder's images of the latent set, paper §2.2). `path`/`line` locate the definition for error messages.
    """

    name: str
    set: Mapping[str, Any]
    norm: str = "inf"
    eps: tuple[float, ...] = ()
    report_eps: tuple[float, ...] = ()
    max_verified_error: float | None = None
    min_verified_accuracy: float | None = None
    spec: str | None = DEFAULT_SPEC
    method: str | None = None
    max_time: float | None = None  # seconds for method 'complete''s branch and bound (None: no limit)
    target: str | None = None
    path: str | None = None
    line: int | None = None
    description: str | None = field(default=None, compare=False)
    key_lines: Mapping[str, int] | None = field(default=None, compare=False, repr=False)

    @property
    def all_eps(self) -> tuple[float, ...]:
        """Sorted union of the gated and the report-only ε (one verification covers all)."""
        return tuple(sorted(set(self.eps) | set(self.report_eps)))

    @property
    def has_gate(self) -> bool:
        """False for a report-only unit test (no max_verified_error / min_verified_accuracy)."""
        return self.max_verified_error is not None or self.min_verified_accuracy is not None

    @property
    def threshold_error(self) -> float:
        """The largest verified error the gate allows (1 − min_verified_accuracy if so given)."""
        if self.max_verified_error is not None:
            return float(self.max_verified_error)
        if self.min_verified_accuracy is not None:
            return 1.0 - float(self.min_verified_accuracy)
        return 1.0

    @property
    def gate_text(self) -> str:
        """'≤0.20' (max verified error) or '≥0.85' (min verified accuracy)."""
        if self.max_verified_error is not None:
            return f"≤{self.max_verified_error:g}"
        if self.min_verified_accuracy is not None:
            return f"≥{self.min_verified_accuracy:g}"
        return ""

    def gate(self, verified_error: float) -> bool:
        """True when `verified_error` passes the threshold (ties pass; 1e-12 for rounding)."""
        return float(verified_error) <= self.threshold_error + 1e-12

    @property
    def set_text(self) -> str:
        """Human text for the set without a model: "direction 'pose'", "dims [12, 13] ℓ2"."""
        (kind, value), = self.set.items()
        n = "" if self.norm == "inf" or kind == "direction" else f" ℓ{self.norm}"
        if kind == "dims" and not isinstance(value, str):
            return f"dims {list(value)}{n}"
        return f"{kind} '{value}'{n}"

    def with_defaults(self, spec: str | None = None, method: str | None = None,
                      target: str | None = None) -> "UnitTest":
        """This test with a missing spec/method/target filled from the suite or session default."""
        return dataclasses.replace(
            self,
            spec=self.spec or spec or DEFAULT_SPEC,
            method=self.method or method or DEFAULT_METHOD,
            target=self.target or target or DEFAULT_TARGET,
        )

    def _error(self, message: str, key: str) -> SuiteError:
        line = (self.key_lines or {}).get(key, self.line)
        return SuiteError(f"unit test '{self.name}': {message}", path=self.path, line=line, key=key)

    def set_kind(self, model: Any):
        """Resolve the set's names against an AuditModel → `Dims`, `Direction` or `Basis`.

        Unknown names raise SuiteError naming the file/line/key and the closest valid name.
        """
        from auditai import latent  # torch: imported only when a model is at hand

        (kind, value), = self.set.items()
        directions = dict(getattr(model, "directions", None) or {})
        if kind in ("direction", "basis"):
            if value not in directions:
                avail = sorted(directions)
                hint = did_you_mean(value, avail)
                have = f"the model's directions are {_one_of(avail)}" if avail else (
                    "the model has no named directions"
                )
                raise self._error(f"unknown {kind} '{value}': {have}{hint}", kind)
            vec = directions[value]
            if kind == "direction":
                if getattr(vec, "dim", lambda: 1)() == 2 and vec.shape[1] > 1:
                    raise self._error(
                        f"'{value}' is a d×{vec.shape[1]} basis, not one direction; "
                        f"write `basis: {value}`",
                        kind,
                    )
                return latent.Direction(vec.flatten(), value)
            return latent.Basis(vec if vec.dim() == 2 else vec.unsqueeze(1), self.norm, value)
        # dims
        named = dict(getattr(model, "dims", None) or {})
        if isinstance(value, str):
            if value not in named:
                avail = sorted(named)
                hint = did_you_mean(value, avail)
                have = f"the model's named dims are {_one_of(avail)}" if avail else (
                    "the model has no named dims; give a list of latent indices like [3, 4]"
                )
                raise self._error(f"unknown dims '{value}': {have}{hint}", "dims")
            indices = list(named[value])
        else:
            indices = list(value)
        d = getattr(model, "latent_dim", None)
        if d is not None:
            bad = [i for i in indices if not 0 <= i < d]
            if bad:
                raise self._error(
                    f"latent index {bad} out of range: the model's codes have d={d} (valid 0..{d - 1})",
                    "dims",
                )
        return latent.Dims(indices, self.norm)


# --------------------------------------------------------------------------- validation
def _check_number(value: Any, where: Callable[[str], SuiteError], *, lo: float | None = None,
                  hi: float | None = None, what: str = "a number") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise where(f"expected {what}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise where(f"expected {what}, got {value!r}")
    return float(value)


def _eps_tuple(value: Any, err: Callable[[str], SuiteError], *, allow_empty: bool) -> tuple[float, ...]:
    vals = value if isinstance(value, (list, tuple)) else [value]
    if not vals and not allow_empty:
        raise err("expected a number ≥ 0 or a non-empty list of them, got an empty list")
    out = tuple(_check_number(v, err, lo=0.0, what="a radius ε ≥ 0 (a number or a list of numbers)")
                for v in vals)
    if len(set(out)) != len(out):
        raise err(f"repeats a value: {list(out)}")
    return out


def make_unit_test(
    fields: Mapping[str, Any],
    *,
    path: str | None = None,
    line: int | None = None,
    key_lines: Mapping[str, int] | None = None,
    where: str | None = None,
) -> UnitTest:
    """Validate one unit test's fields (YAML mapping or decorator keywords) → `UnitTest`.

    `key_lines` gives the line of each key (YAML); errors then point at the key's own line.
    """
    key_lines = key_lines or {}
    label = where or f"unit test '{fields.get('name', '?')}'"

    def err_for(key: str | None) -> Callable[[str], SuiteError]:
        def make(msg: str) -> SuiteError:
            return SuiteError(f"{label}: {msg}", path=path, line=key_lines.get(key, line), key=key)
        return make

    for key in fields:
        if key not in UNIT_TEST_KEYS:
            raise err_for(key)(
                f"unknown key '{key}'; expected one of {_one_of(UNIT_TEST_KEYS)}"
                + did_you_mean(key, UNIT_TEST_KEYS)
            )
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise err_for("name" if "name" in fields else None)(
            f"expected 'name:' with a non-empty text, got {name!r}"
        )
    bad_chars = [c for c in ("[", "]", "::", "/", "\n") if c in name]
    if bad_chars:
        raise err_for("name")(f"name {name!r} may not contain {bad_chars[0]!r} (it is part of test ids)")
    sets = [k for k in SET_KEYS if k in fields]
    if len(sets) != 1:
        msg = ("needs one latent set: `direction: NAME`, `dims: [i, ...]` or NAME, or `basis: NAME`"
               if not sets else f"has {len(sets)} latent sets ({', '.join(sets)}); give exactly one")
        raise err_for(sets[1] if len(sets) > 1 else None)(msg)
    kind = sets[0]
    value = fields[kind]
    if kind == "dims":
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, (list, tuple)):
            if not value or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                    for i in value):
                raise err_for("dims")(f"expected a non-empty list of latent indices ≥ 0 or a name, got {value!r}")
            if len(set(value)) != len(value):
                raise err_for("dims")(f"repeats an index: {list(value)}")
            value = tuple(int(i) for i in value)
        elif not isinstance(value, str) or not value:
            raise err_for("dims")(f"expected a list of latent indices or a name, got {value!r}")
    elif not isinstance(value, str) or not value:
        raise err_for(kind)(f"expected the name of one of the model's directions, got {value!r}")
    norm = fields.get("norm", "inf")
    try:
        norm_s = names.canonical_norm(norm)
    except ChoiceError:
        raise err_for("norm")(f"expected a norm 'inf', 2 or 1, got {norm!r}") from None
    if "eps" not in fields:
        raise err_for(None)("needs `eps:` (a radius or a list of radii, checked against the gate)")
    eps = _eps_tuple(fields["eps"], err_for("eps"), allow_empty=False)
    report = _eps_tuple(fields.get("report_eps", ()) or (), err_for("report_eps"), allow_empty=True)
    thresholds = [k for k in THRESHOLD_KEYS if fields.get(k) is not None]
    if len(thresholds) > 1:
        raise err_for(thresholds[1])("give either max_verified_error or min_verified_accuracy, not both")
    tkey = thresholds[0] if thresholds else None  # no gate: a report-only unit test (measured)
    tval = None if tkey is None else _check_number(fields[tkey], err_for(tkey), lo=0.0, hi=1.0,
                                                   what="a fraction in [0, 1]")
    spec = _named(names.parse_spec_kind, fields.get("spec"), err_for("spec"))
    method = _named(names.parse_method, fields.get("method"), err_for("method"))
    max_time = fields.get("max_time")
    if max_time is not None:
        max_time = _check_number(max_time, err_for("max_time"), what="a number of seconds > 0")
        if max_time <= 0:
            raise err_for("max_time")(f"expected a number of seconds > 0, got {max_time!r}")
    target = _named(names.parse_target, fields.get("target"), err_for("target"))
    desc = fields.get("description")
    return UnitTest(
        name=name,
        set={kind: value},
        norm=norm_s,
        eps=eps,
        report_eps=report,
        max_verified_error=tval if tkey == "max_verified_error" else None,
        min_verified_accuracy=tval if tkey == "min_verified_accuracy" else None,
        spec=spec,
        method=method,
        max_time=max_time,
        target=target,
        path=path,
        line=line,
        description=None if desc is None else str(desc),
        key_lines=dict(key_lines) or None,
    )


# --------------------------------------------------------------------------- suites
@dataclass(frozen=True)
class Suite:
    """A parsed YAML suite: model/data sources (resolved against the file), defaults, tests."""

    name: str
    path: str | None
    model: str | None
    data: str | None
    spec: str
    method: str | None
    engine: str | None
    unit_tests: tuple[UnitTest, ...]
    description: str | None = None
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)
    train_data: str | None = None  # codes of the deployment ranges (paper §2.4); default: data
