"""One unit test's verification result reduced to what the spec-sheet keeps (`SheetEntry`):
plain JSON, so xdist workers and torchrun ranks can send it to the process that merges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from auditai.errors import SheetError
from auditai.sheet.coords import SET_KINDS, CoordinateStats, set_coordinates
from auditai.sheet.fields import _f, _floats, _get, _jsonable, gate_passes, public_name, public_text

MAX_COUNTEREXAMPLES_PER_EPS = 2


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
    # the bisection stops at max_radius: a median there is a lower bound, shown as "≥ r"
    out["median_radius_at_cap"] = bool(med is not None and out["max_radius"] is not None
                                       and med >= out["max_radius"])
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
    `target`: what was verified, "head" or "classifier" (classifier∘decoder, auditai.blackbox).
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
    target: str = "head"  # "head" (f_d on the latent set) or "classifier" (classifier∘decoder)

    def __post_init__(self) -> None:
        self.target = str(self.target or "head")
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
            path=public_name(getattr(unit_test, "path", None)),
            line=getattr(unit_test, "line", None),
            target=str(getattr(unit_test, "target", None) or "head"),
        )
        if train_codes is not None:
            entry = entry.with_deployment(train_codes, train_source)
        return entry

    def with_deployment(self, train_codes: Any, source: str | None = None) -> SheetEntry:
        """A copy with the deployment statistics computed from `train_codes` (N×d)."""
        shape = train_codes.shape if hasattr(train_codes, "shape") else np.shape(train_codes)
        d = self.latent_dim or int(shape[-1])
        P, _, _ = set_coordinates(self.set_kind, self.set_vector_or_indices, d, self.radii, self.set_name)
        stats = CoordinateStats.from_codes(train_codes, P, public_text(source or "training codes"))
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
