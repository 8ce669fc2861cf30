"""The spec-sheet record: dataclasses, versioned JSON, merging (paper Fig. 1 and §2.4).

A `SpecSheet` is what the end-user receives with the model: for each unit test the latent
set, per ε one `EpsRow` of figures (clean, verified error, falsified and unknown fractions,
median certified radius, the gate), and the deployment statistics of its tested coordinates
(`auditai.deploy`). It is built from verification results one `SheetEntry` at a time, so a
pytest plugin can add entries as tests finish, and xdist workers can send `entry.to_dict()`
(plain JSON) to the controller, which merges them (`SpecSheet.add`, `SpecSheet.merge`).

The JSON form (schema "auditai.spec-sheet/1", docs/spec-sheet.md) is canonical: stable key
order, and `SpecSheet.from_json(sheet.to_json()) == sheet`.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditai.deploy import SET_KINDS, CoordinateStats, set_coordinates
from auditai.deploy_report import checked_section
from auditai.errors import SheetError

SCHEMA = "auditai.spec-sheet/1"
MAX_COUNTEREXAMPLES_PER_EPS = 2


# --------------------------------------------------------------------------- helpers
def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or key `name` of a result object or its dict form."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _f(x: Any) -> float | None:
    """A JSON-safe float (NaN → None)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _floats(xs: Any) -> list[float]:
    if hasattr(xs, "tolist"):
        xs = xs.tolist()
    return [float(x) for x in xs]


def _jsonable(x: Any) -> Any:
    """Plain JSON values from tensors, arrays, tuples and dataclass-like objects."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().tolist()
    elif isinstance(x, np.ndarray):
        x = x.tolist()
    elif isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if hasattr(x, "to_dict"):
        return _jsonable(x.to_dict())
    if hasattr(x, "__dataclass_fields__"):
        return {k: _jsonable(getattr(x, k)) for k in x.__dataclass_fields__}
    return str(x)


def _req(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict):
        raise SheetError(f"{where}: expected an object, got {type(d).__name__}")
    if key not in d:
        raise SheetError(f"{where}: missing key '{key}'")
    return d[key]


def _eps_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def gate_passes(verified_error: float, max_verified_error: float | None, min_verified_accuracy: float | None) -> bool | None:
    """The gate of a unit test (None when it has no threshold), as `UnitTest.gate`: the verified
    error is at most the threshold error (ties pass; 1e-12 for rounding)."""
    thr = threshold_error(max_verified_error, min_verified_accuracy)
    if thr is None:
        return None
    return float(verified_error) <= thr + 1e-12


def threshold_error(max_verified_error: float | None, min_verified_accuracy: float | None) -> float | None:
    """The largest verified error the gate allows."""
    cands = [t for t in (max_verified_error, None if min_verified_accuracy is None else 1.0 - min_verified_accuracy) if t is not None]
    return min(cands) if cands else None


def current_versions() -> dict:
    """auditai, torch, numpy and Python versions."""
    import auditai

    try:
        v = {"auditai": str(auditai.__version__)}
    except AttributeError:  # a namespace-package view of an editable install
        v = {"auditai": importlib.metadata.version("auditai")}
    torch = sys.modules.get("torch")
    if torch is not None:
        v["torch"] = str(torch.__version__)
    else:  # do not import torch just to name its version
        try:
            v["torch"] = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            v["torch"] = None
    v["numpy"] = np.__version__
    v["python"] = platform.python_version()
    return v


# --------------------------------------------------------------------------- rows
@dataclass
class EpsRow:
    """The figures of one unit test at one ε (a cell column of the paper's Tables 1/3/5)."""

    eps: float
    gated: bool
    clean_error: float
    verified_error: float
    falsified_fraction: float
    unknown_fraction: float
    median_certified_radius: float | None
    threshold_error: float | None
    passed: bool | None
    n: int
    time_s: float

    def to_dict(self) -> dict:
        return {
            "eps": self.eps,
            "gated": self.gated,
            "clean_error": self.clean_error,
            "verified_error": self.verified_error,
            "falsified_fraction": self.falsified_fraction,
            "unknown_fraction": self.unknown_fraction,
            "median_certified_radius": self.median_certified_radius,
            "threshold_error": self.threshold_error,
            "passed": self.passed,
            "n": self.n,
            "time_s": self.time_s,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "row") -> EpsRow:
        try:
            return cls(
                eps=float(_req(d, "eps", where)),
                gated=bool(_req(d, "gated", where)),
                clean_error=float(_req(d, "clean_error", where)),
                verified_error=float(_req(d, "verified_error", where)),
                falsified_fraction=float(_req(d, "falsified_fraction", where)),
                unknown_fraction=float(_req(d, "unknown_fraction", where)),
                median_certified_radius=_f(d.get("median_certified_radius")),
                threshold_error=_f(d.get("threshold_error")),
                passed=d.get("passed"),
                n=int(_req(d, "n", where)),
                time_s=float(d.get("time_s", 0.0)),
            )
        except (TypeError, ValueError) as e:
            if isinstance(e, SheetError):
                raise
            raise SheetError(f"{where}: a figure is not a number: {e}") from None


# --------------------------------------------------------------------------- one entry
def _summarize_result(result: Any, gate=None) -> dict:
    """The figures of a VerificationResult (object or `to_dict()` form) a sheet keeps."""
    eps = _floats(_req_attr(result, "eps"))
    k = len(eps)
    out: dict[str, Any] = {"eps": eps}
    for name in ("clean_error", "verified_error", "falsified_fraction", "unknown_fraction"):
        vals = _floats(_req_attr(result, name))
        if len(vals) != k:
            raise SheetError(f"result.{name} has {len(vals)} values for {k} ε values")
        out[name] = vals
    radius = _get(result, "certified_radius")
    med = None
    if radius is not None:
        r = np.asarray(radius.detach().cpu().numpy() if hasattr(radius, "detach") else radius, dtype=np.float64)
        r = r[~np.isnan(r)]
        if r.size:
            med = float(np.median(r))
    out["median_certified_radius"] = med
    out["max_radius"] = _f(_get(result, "max_radius"))
    out["n"] = int(_req_attr(result, "n"))
    out["time_s"] = float(_get(result, "time_s", 0.0) or 0.0)
    for name in ("method", "spec", "engine", "device", "set_description", "norm"):
        v = _get(result, name)
        out[name] = None if v is None else str(v)
    out["passed"] = None if gate is None else [gate(v) for v in out["verified_error"]]
    # a few counterexamples (the most violated per ε) for the renderers
    cex = [_jsonable(c) for c in (_get(result, "counterexamples") or [])]
    keep: list[dict] = []
    for i in range(k):
        mine = [c for c in cex if isinstance(c, dict) and c.get("eps_index") == i]
        mine.sort(key=lambda c: (c.get("margin") is None, c.get("margin") if c.get("margin") is not None else 0.0))
        keep.extend(mine[:MAX_COUNTEREXAMPLES_PER_EPS])
    out["counterexamples"] = keep
    return out


def _req_attr(result: Any, name: str) -> Any:
    v = _get(result, name)
    if v is None:
        raise SheetError(f"verification result has no '{name}' (expected a VerificationResult or its to_dict())")
    return v


@dataclass
class SheetEntry:
    """One unit test's verification result, reduced to what the sheet keeps; plain JSON via
    `to_dict()` so it crosses process boundaries (xdist) without pickles.

    `set_vector_or_indices`: the direction vector (d), the list of dims, or the basis (d×k rows).
    `thresholds`: {"max_verified_error": x or None, "min_verified_accuracy": y or None}.
    `result`: the summary of the VerificationResult (see `_summarize_result`).
    `deployment`: `CoordinateStats.to_dict()` of the tested coordinates over training codes.
    """

    unit_test_name: str
    set_description: str
    set_kind: str
    set_vector_or_indices: list
    norm: str
    gated_eps: list[float]
    thresholds: dict
    result: dict
    set_name: str | None = None
    radii: list[float] | None = None
    latent_dim: int | None = None
    deployment: dict | None = None
    path: str | None = None
    line: int | None = None

    def __post_init__(self) -> None:
        if self.set_kind not in SET_KINDS:
            raise SheetError(f"unit test '{self.unit_test_name}': set_kind must be one of {SET_KINDS}, got {self.set_kind!r}")

    # -- building
    @classmethod
    def from_result(
        cls,
        unit_test: Any,
        result: Any,
        set_info: Any = None,
        *,
        model: Any = None,
        train_codes: Any = None,
        train_source: str | None = None,
    ) -> SheetEntry:
        """An entry from a `UnitTest`, its `VerificationResult` and its set (a `Dims`,
        `Direction` or `Basis`; resolved with `unit_test.set_kind(model)` when None).

        With `train_codes` (N×d), the deployment statistics of the tested coordinates are
        computed here (on the worker that holds the codes).
        """
        if set_info is None:
            if model is None:
                raise SheetError(f"unit test '{unit_test.name}': give set_info or a model to resolve its set")
            set_info = unit_test.set_kind(model)
        kind, value, radii, name = _set_fields(unit_test, set_info)
        latent_dim = len(value) if kind == "direction" else (len(value) if kind == "basis" else None)
        if model is not None and getattr(model, "latent_dim", None):
            latent_dim = int(model.latent_dim)
        if latent_dim is None and train_codes is not None:
            latent_dim = int(np.asarray(train_codes.shape if hasattr(train_codes, "shape") else np.shape(train_codes))[-1])
        gate = getattr(unit_test, "gate", None)
        thresholds = {
            "max_verified_error": _f(getattr(unit_test, "max_verified_error", None)),
            "min_verified_accuracy": _f(getattr(unit_test, "min_verified_accuracy", None)),
        }
        if gate is None or (thresholds["max_verified_error"] is None and thresholds["min_verified_accuracy"] is None):
            gate = (lambda ve: gate_passes(ve, thresholds["max_verified_error"], thresholds["min_verified_accuracy"]))
        summary = _summarize_result(result, gate)
        summary.setdefault("spec", None)
        if summary.get("spec") is None:
            summary["spec"] = getattr(unit_test, "spec", None)
        if summary.get("method") is None:
            summary["method"] = getattr(unit_test, "method", None)
        desc = summary.get("set_description") or (set_info.describe() if hasattr(set_info, "describe") else kind)
        norm = str(getattr(set_info, "norm", None) or summary.get("norm") or getattr(unit_test, "norm", "inf"))
        entry = cls(
            unit_test_name=str(unit_test.name),
            set_description=str(desc),
            set_kind=kind,
            set_vector_or_indices=value,
            norm=norm,
            gated_eps=_floats(getattr(unit_test, "eps", ()) or ())
                       if any(v is not None for v in thresholds.values()) else [],  # report-only: none
            thresholds=thresholds,
            result=summary,
            set_name=name,
            radii=radii,
            latent_dim=latent_dim,
            path=getattr(unit_test, "path", None),
            line=getattr(unit_test, "line", None),
        )
        if train_codes is not None:
            entry = entry.with_deployment(train_codes, train_source)
        return entry

    def with_deployment(self, train_codes: Any, source: str | None = None) -> SheetEntry:
        """A copy with the deployment statistics computed from `train_codes` (N×d)."""
        shape = train_codes.shape if hasattr(train_codes, "shape") else np.shape(train_codes)
        d = self.latent_dim or int(shape[-1])
        P, _, _ = set_coordinates(self.set_kind, self.set_vector_or_indices, d, self.radii, self.set_name)
        stats = CoordinateStats.from_codes(train_codes, P, source or "training codes")
        return SheetEntry(**{**self.__dict__, "latent_dim": d, "deployment": stats.to_dict()})

    # -- plain JSON
    def to_dict(self) -> dict:
        return _jsonable({k: getattr(self, k) for k in self.__dataclass_fields__})

    @classmethod
    def from_dict(cls, d: dict) -> SheetEntry:
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as e:
            raise SheetError(f"sheet entry: {e}") from None


def _set_fields(unit_test: Any, set_info: Any) -> tuple[str, list, list | None, str | None]:
    """(kind, value, radii, name) of a set kind object from auditai.latent (or a dict)."""
    if isinstance(set_info, dict):
        kind = set_info["kind"]
        return kind, _jsonable(set_info["value"]), set_info.get("radii"), set_info.get("name")
    cls = type(set_info).__name__
    spec_set = getattr(unit_test, "set", None) or {}
    if cls == "Direction":
        name = set_info.name or spec_set.get("direction")
        return "direction", _floats(_jsonable(set_info.vector)), None, name
    if cls == "Dims":
        radii = None if set_info.radii is None else [float(r) for r in set_info.radii]
        name = spec_set.get("dims") if isinstance(spec_set.get("dims"), str) else None
        return "dims", [int(i) for i in set_info.indices], radii, name
    if cls == "Basis":
        m = np.asarray(_jsonable(set_info.matrix), dtype=np.float64)
        if m.ndim == 1:
            m = m[:, None]
        return "basis", m.tolist(), None, set_info.name or spec_set.get("basis")
    raise SheetError(f"unit test '{getattr(unit_test, 'name', '?')}': unknown set {cls} (expected Dims, Direction or Basis)")


# --------------------------------------------------------------------------- unit test record
@dataclass
class UnitTestSheet:
    """One unit test on the sheet: its set, its rows per ε, its deployment statistics."""

    name: str
    set_kind: str
    set_name: str | None
    set_description: str
    set_value: list
    radii: list[float] | None
    norm: str
    latent_dim: int | None
    spec: str | None
    method: str | None
    engine: str | None
    max_verified_error: float | None
    min_verified_accuracy: float | None
    rows: list[EpsRow]
    deployment: CoordinateStats | None = None
    counterexamples: list[dict] = field(default_factory=list)
    path: str | None = None
    line: int | None = None
    _coords: Any = field(default=None, init=False, repr=False, compare=False)

    # -- derived: the tested coordinates t = P·z (auditai.deploy)
    def _coordinates(self):
        if self._coords is None:
            self._coords = set_coordinates(self.set_kind, self.set_value, self.latent_dim, self.radii, self.set_name)
        return self._coords

    @property
    def projection(self) -> np.ndarray:
        return self._coordinates()[0]

    @property
    def scale(self) -> np.ndarray:
        return self._coordinates()[1]

    @property
    def labels(self) -> list[str]:
        return self._coordinates()[2]

    @property
    def eps(self) -> list[float]:
        return [r.eps for r in self.rows]

    def row(self, eps: float) -> EpsRow | None:
        for r in self.rows:
            if _eps_close(r.eps, eps):
                return r
        return None

    def deployment_range(self, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) of each tested coordinate at ε (paper §2.4)."""
        if self.deployment is None:
            raise SheetError(f"unit test '{self.name}' has no deployment range (no training codes)")
        return self.deployment.range(eps, self.scale)

    def threshold_text(self) -> str:
        if self.max_verified_error is not None:
            return f"≤{self.max_verified_error:g}"
        if self.min_verified_accuracy is not None:
            return f"acc≥{self.min_verified_accuracy:g}"
        return ""

    @property
    def failed(self) -> bool:
        return any(r.passed is False and r.gated for r in self.rows)

    # -- building and merging
    @classmethod
    def from_entry(cls, e: SheetEntry) -> UnitTestSheet:
        ut = cls(
            name=e.unit_test_name,
            set_kind=e.set_kind,
            set_name=e.set_name,
            set_description=e.set_description,
            set_value=_jsonable(e.set_vector_or_indices),
            radii=None if e.radii is None else [float(r) for r in e.radii],
            norm=str(e.norm),
            latent_dim=e.latent_dim,
            spec=e.result.get("spec"),
            method=e.result.get("method"),
            engine=e.result.get("engine"),
            max_verified_error=_f(e.thresholds.get("max_verified_error")),
            min_verified_accuracy=_f(e.thresholds.get("min_verified_accuracy")),
            rows=[],
            deployment=None if e.deployment is None else CoordinateStats.from_dict(e.deployment),
            path=e.path,
            line=e.line,
        )
        ut._add_rows(e)
        return ut

    def _add_rows(self, e: SheetEntry) -> None:
        r = e.result
        eps = r["eps"]
        thr = threshold_error(self.max_verified_error, self.min_verified_accuracy)
        passed = r.get("passed") or [None] * len(eps)
        share = float(r.get("time_s", 0.0)) / max(len(eps), 1)
        for i, ep in enumerate(eps):
            gated = any(_eps_close(ep, g) for g in e.gated_eps)
            ve = float(r["verified_error"][i])
            p = passed[i]
            if p is None:
                p = gate_passes(ve, self.max_verified_error, self.min_verified_accuracy)
            row = EpsRow(
                eps=float(ep),
                gated=gated,
                clean_error=float(r["clean_error"][i]),
                verified_error=ve,
                falsified_fraction=float(r["falsified_fraction"][i]),
                unknown_fraction=float(r["unknown_fraction"][i]),
                median_certified_radius=_f(r.get("median_certified_radius")),
                threshold_error=thr,
                passed=None if p is None else bool(p),
                n=int(r["n"]),
                time_s=share,
            )
            old = self.row(ep)
            if old is not None:
                self.rows[self.rows.index(old)] = row
            else:
                self.rows.append(row)
        self.rows.sort(key=lambda x: x.eps)
        for c in r.get("counterexamples", []) or []:
            if c not in self.counterexamples:
                self.counterexamples.append(c)

    def merge(self, other: UnitTestSheet) -> None:
        """Fold `other` (the same unit test, maybe other ε values) into this one."""
        same = (
            self.set_kind == other.set_kind
            and self.norm == other.norm
            and np.allclose(np.asarray(self.set_value, dtype=float), np.asarray(other.set_value, dtype=float))
        )
        if not same:
            raise SheetError(
                f"unit test '{self.name}' appears twice with different sets "
                f"({self.set_description} vs {other.set_description})"
            )
        for r in other.rows:
            old = self.row(r.eps)
            if old is not None:
                self.rows[self.rows.index(old)] = r
            else:
                self.rows.append(r)
        self.rows.sort(key=lambda x: x.eps)
        if self.deployment is None:
            self.deployment = other.deployment
        for c in other.counterexamples:
            if c not in self.counterexamples:
                self.counterexamples.append(c)

    # -- JSON
    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "name": self.name,
            "set": {
                "kind": self.set_kind,
                "name": self.set_name,
                "description": self.set_description,
                "value": self.set_value,
                "radii": self.radii,
                "norm": self.norm,
                "latent_dim": self.latent_dim,
            },
            "spec": self.spec,
            "method": self.method,
            "engine": self.engine,
            "threshold": {
                "max_verified_error": self.max_verified_error,
                "min_verified_accuracy": self.min_verified_accuracy,
            },
            "source": {"path": self.path, "line": self.line},
            "rows": [r.to_dict() for r in self.rows],
        }
        dep: dict[str, Any] | None = None
        if self.deployment is not None:
            dep = self.deployment.to_dict()
            dep["coordinates"] = self.labels
            dep["scale"] = self.scale.tolist()
            ranges = []
            for r in self.rows:
                lo, hi = self.deployment_range(r.eps)
                ranges.append({"eps": r.eps, "lower": lo.tolist(), "upper": hi.tolist()})
            dep["ranges"] = ranges
        d["deployment"] = dep
        d["counterexamples"] = self.counterexamples
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str) -> UnitTestSheet:
        s = _req(d, "set", where)
        thr = d.get("threshold") or {}
        src = d.get("source") or {}
        dep = d.get("deployment")
        try:
            deployment = None if dep is None else CoordinateStats.from_dict(dep)
        except (KeyError, TypeError, ValueError) as e:
            raise SheetError(f"{where}.deployment: {e!r}") from None
        ut = cls(
            name=str(_req(d, "name", where)),
            set_kind=str(_req(s, "kind", f"{where}.set")),
            set_name=s.get("name"),
            set_description=str(s.get("description", "")),
            set_value=_req(s, "value", f"{where}.set"),
            radii=s.get("radii"),
            norm=str(s.get("norm", "inf")),
            latent_dim=s.get("latent_dim"),
            spec=d.get("spec"),
            method=d.get("method"),
            engine=d.get("engine"),
            max_verified_error=_f(thr.get("max_verified_error")),
            min_verified_accuracy=_f(thr.get("min_verified_accuracy")),
            rows=[EpsRow.from_dict(r, f"{where}.rows[{i}]") for i, r in enumerate(_req(d, "rows", where))],
            deployment=deployment,
            counterexamples=list(d.get("counterexamples") or []),
            path=src.get("path"),
            line=src.get("line"),
        )
        if ut.set_kind not in SET_KINDS:
            raise SheetError(f"{where}.set.kind: expected one of {SET_KINDS}, got {ut.set_kind!r}")
        return ut


# --------------------------------------------------------------------------- the sheet
@dataclass
class SpecSheet:
    """The model spec-sheet (paper Fig. 1, §2.4): unit tests with their figures per ε and their
    deployment ranges, plus the model's and data's hashes and the versions that produced it."""

    unit_tests: list[UnitTestSheet] = field(default_factory=list)
    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    versions: dict = field(default_factory=current_versions)
    device: str = "cpu"
    method: str | None = None
    engine: str = "auditai"
    suite: str | None = None
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
    schema: str = SCHEMA
    deployment_report: dict | None = None  # the optional "deployment" section (auditai.deploy_report)

    # -- building
    @classmethod
    def from_results(
        cls,
        entries: Iterable[Any],
        *,
        model: Any = None,
        data: Any = None,
        train_codes: Any = None,
        device: str = "cpu",
        method: str | None = None,
        engine: str = "auditai",
        suite: str | None = None,
    ) -> SpecSheet:
        """A sheet from `entries`: `SheetEntry`s, their dicts, or `(UnitTest, VerificationResult,
        set_info)` tuples. Deployment ranges come from `train_codes` (N×d); without them, from
        `data.z` (the sheet then names the data as their source)."""
        sheet = cls(device=str(device), method=method, engine=engine, suite=suite)
        sheet.model = model_info(model)
        sheet.data = data_info(data)
        codes, source = train_codes, "training codes"
        if codes is None and data is not None and _get(data, "z") is not None:
            codes, source = _get(data, "z"), f"evaluation data {sheet.data.get('source') or ''}".strip()
        for e in entries:
            sheet.add(e, model=model, train_codes=codes, train_source=source)
        if sheet.method is None:  # one method for every unit test: name it on the sheet
            methods = {ut.method for ut in sheet.unit_tests}
            sheet.method = methods.pop() if len(methods) == 1 else None
        return sheet

    def add(self, entry: Any, *, model: Any = None, train_codes: Any = None, train_source: str | None = None) -> UnitTestSheet:
        """Add one entry (a SheetEntry, its dict, or a (UnitTest, result, set_info) tuple);
        rows of an ε already present are replaced, so adding the same entry twice is harmless."""
        if isinstance(entry, dict):
            entry = SheetEntry.from_dict(entry)
        elif isinstance(entry, (tuple, list)):
            if len(entry) not in (2, 3):
                raise SheetError("an entry tuple must be (UnitTest, VerificationResult[, set_info])")
            ut, res = entry[0], entry[1]
            info = entry[2] if len(entry) == 3 else None
            entry = SheetEntry.from_result(ut, res, info, model=model)
        if not isinstance(entry, SheetEntry):
            raise SheetError(f"cannot add {type(entry).__name__} to a spec-sheet (expected a SheetEntry)")
        if entry.deployment is None and train_codes is not None:
            entry = entry.with_deployment(train_codes, train_source)
        if entry.latent_dim is None and self.latent_dim is not None:
            entry.latent_dim = self.latent_dim
        new = UnitTestSheet.from_entry(entry)
        old = self.unit_test(new.name)
        if old is None:
            self.unit_tests.append(new)
            return new
        old.merge(new)
        return old

    def merge(self, other: SpecSheet) -> SpecSheet:
        """Fold another sheet of the same model (e.g. an xdist worker's) into this one."""
        a, b = self.model.get("sha256"), other.model.get("sha256")
        if a and b and a != b:
            raise SheetError(f"cannot merge spec-sheets of different models (sha256 {a[:12]}… vs {b[:12]}…)")
        if not self.model:
            self.model = dict(other.model)
        if not self.data:
            self.data = dict(other.data)
        for ut in other.unit_tests:
            mine = self.unit_test(ut.name)
            if mine is None:
                self.unit_tests.append(ut)
            else:
                mine.merge(ut)
        return self

    def unit_test(self, name: str) -> UnitTestSheet | None:
        for ut in self.unit_tests:
            if ut.name == name:
                return ut
        return None

    @property
    def latent_dim(self) -> int | None:
        if self.model.get("latent_dim"):
            return int(self.model["latent_dim"])
        for ut in self.unit_tests:
            if ut.latent_dim:
                return int(ut.latent_dim)
        return None

    @property
    def all_eps(self) -> list[float]:
        out: list[float] = []
        for ut in self.unit_tests:
            for e in ut.eps:
                if not any(_eps_close(e, o) for o in out):
                    out.append(e)
        return sorted(out)

    @property
    def passed(self) -> bool:
        return not any(ut.failed for ut in self.unit_tests)

    # -- JSON
    def to_dict(self) -> dict:
        return {
            "schema": self.schema,
            "created": self.created,
            "suite": self.suite,
            "model": self.model,
            "data": self.data,
            "versions": self.versions,
            "device": self.device,
            "method": self.method,
            "engine": self.engine,
            "unit_tests": [ut.to_dict() for ut in self.unit_tests],
            **({} if self.deployment_report is None else {"deployment": self.deployment_report}),
        }

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 2) -> str:
        """The canonical record (schema "auditai.spec-sheet/1"); written atomically to `path`."""
        text = json.dumps(_jsonable(self.to_dict()), indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
        if path is not None:
            write_atomic(path, text)
        return text

    @classmethod
    def from_dict(cls, d: dict, where: str = "spec-sheet") -> SpecSheet:
        schema = _req(d, "schema", where)
        if schema != SCHEMA:
            raise SheetError(f"{where}: unknown schema {schema!r} (this auditai reads {SCHEMA!r})")
        uts = _req(d, "unit_tests", where)
        if not isinstance(uts, list):
            raise SheetError(f"{where}.unit_tests: expected a list")
        return cls(
            unit_tests=[UnitTestSheet.from_dict(u, f"{where}.unit_tests[{i}]") for i, u in enumerate(uts)],
            model=dict(d.get("model") or {}),
            data=dict(d.get("data") or {}),
            versions=dict(d.get("versions") or {}),
            device=str(d.get("device", "cpu")),
            method=d.get("method"),
            engine=str(d.get("engine", "auditai")),
            suite=d.get("suite"),
            created=str(d.get("created", "")),
            schema=schema,
            deployment_report=checked_section(d.get("deployment"), where),
        )

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> SpecSheet:
        """Load from a JSON string or a file path."""
        where = "spec-sheet"
        text = str(source)
        if isinstance(source, os.PathLike) or not text.lstrip().startswith("{"):
            where = str(source)
            try:
                text = Path(source).read_text(encoding="utf-8")
            except OSError as e:
                raise SheetError(f"cannot read spec-sheet {source}: {e.strerror or e}") from None
            except UnicodeDecodeError:
                raise SheetError(f"{source}: not a spec-sheet: the file is not UTF-8 text "
                                 "(expected the JSON of an auditai spec-sheet)") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SheetError(f"{where}: not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        return cls.from_dict(d, where)

    load = from_json

    # -- renderers (one module each)
    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        from auditai.sheet.markdown import to_markdown

        text = to_markdown(self)
        if path is not None:
            write_atomic(path, text)
        return text

    def to_html(self, path: str | os.PathLike | None = None, *, model: Any = None, codes: Any = None, n_samples: int = 4) -> str:
        from auditai.sheet.html import to_html

        text = to_html(self, model=model, codes=codes, n_samples=n_samples)
        if path is not None:
            write_atomic(path, text)
        return text

    def to_terminal(self, reports: Sequence[str] = ()) -> str:
        from auditai.sheet.terminal import to_terminal

        return to_terminal(self, reports)

    def to_model_card(self, path: str | os.PathLike | None = None, name: str | None = None) -> dict:
        from auditai.sheet.modelcard import to_model_card

        card = to_model_card(self, name=name)
        if path is not None:
            write_atomic(path, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        return card

    def write(self, path: str | os.PathLike, *, model: Any = None, codes: Any = None) -> Path:
        """Write by suffix: .json, .md, .html/.htm, or .modelcard.json (atomically)."""
        p = Path(path)
        name = p.name.lower()
        if name.endswith(".modelcard.json"):
            self.to_model_card(p)
        elif name.endswith(".json"):
            self.to_json(p)
        elif name.endswith(".md"):
            self.to_markdown(p)
        elif name.endswith((".html", ".htm")):
            self.to_html(p, model=model, codes=codes)
        else:
            raise SheetError(f"{path}: unknown report format (expected .json, .md, .html or .modelcard.json)")
        return p

    # -- deployment (auditai.deploy)
    def check(self, z: Any, eps: float | None = None, sources: Sequence[str] | None = None):
        """Per code and unit test: inside the deployment range at ε or not (paper §2.4)."""
        from auditai.deploy import check_codes

        return check_codes(self, z, eps=eps, sources=sources)

    def check_inputs(self, x: Any, model: Any, eps: float | None = None, sources: Sequence[str] | None = None):
        """Encode x with the model's encoder, then `check`."""
        from auditai.deploy import check_inputs

        return check_inputs(self, x, model, sources=sources, eps=eps)

    def diff(self, new: SpecSheet, tolerance: float = 0.01):
        from auditai.sheet.diff import diff_sheets

        return diff_sheets(self, new, tolerance=tolerance)


def model_info(model: Any) -> dict:
    """The model block: source, sha256, sizes, decoder present, class names."""
    if model is None:
        return {}
    if isinstance(model, dict):
        return dict(model)
    return _jsonable(
        {
            "source": _get(model, "source"),
            "sha256": _get(model, "content_hash"),
            "latent_dim": _get(model, "latent_dim"),
            "num_outputs": _get(model, "num_outputs"),
            "has_decoder": _get(model, "decoder") is not None,
            "class_names": _get(model, "class_names"),
        }
    )


def data_info(data: Any) -> dict:
    """The data block: source, sha256, number of samples."""
    if data is None:
        return {}
    if isinstance(data, dict) and "z" not in data:
        return dict(data)
    z = _get(data, "z")
    n = None if z is None else int(z.shape[0] if hasattr(z, "shape") else len(z))
    return _jsonable({"source": _get(data, "source"), "sha256": _get(data, "content_hash"), "n": n})


def deployment_rows(sheet: SpecSheet):
    """Rows of the deployment-range table, shared by the renderers: per unit test either
    (unit test, None) when no codes were given, or one (unit test, row) per ε and coordinate
    with row = (coordinate label, μ, σ, n codes, codes source, ε, lower, upper)."""
    for ut in sheet.unit_tests:
        dep = ut.deployment
        if dep is None:
            yield ut, None
            continue
        for r in ut.rows:
            lo, hi = ut.deployment_range(r.eps)
            for j, lb in enumerate(ut.labels):
                yield ut, (lb, dep.mean[j], dep.std[j], dep.n_codes, dep.source or "", r.eps, lo[j], hi[j])


def new_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process's umask (read by setting it
    and restoring it at once; there is no other portable way)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to path via a temporary file in the same folder and os.replace; the file's
    mode follows the umask as a plain `open()` would (mkstemp's own mode is 0o600)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=str(p.parent))
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
