"""One unit test on the spec-sheet: `UnitTestSheet` (its set, its rows per ε, its deployment
statistics) and `EpsRow` (the figures at one ε); data, JSON and merge only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from auditai.errors import SheetError
from auditai.sheet.coords import SET_KINDS, CoordinateStats, set_coordinates
from auditai.sheet.entry import SheetEntry
from auditai.sheet.fields import _eps_close, _f, _jsonable, _req, gate_passes, threshold_error


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
    radius_at_cap: bool = False  # the median radius reached the search limit: it is "≥" that

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
            "radius_at_cap": self.radius_at_cap,
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
                radius_at_cap=bool(d.get("radius_at_cap", False)),
            )
        except (TypeError, ValueError) as e:
            if isinstance(e, SheetError):
                raise
            raise SheetError(f"{where}: a figure is not a number: {e}") from None



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
    target: str = "head"  # "classifier": classifier∘decoder was verified (auditai.blackbox)
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
    def target_text(self) -> str:
        """What was verified, for the renderers: "head" or "classifier∘decoder"."""
        return "classifier∘decoder" if self.target == "classifier" else str(self.target or "head")

    @property
    def set_text(self) -> str:
        """The set's description, with the target named when it is not the head."""
        if self.target == "head":
            return self.set_description
        return f"{self.set_description} · target {self.target_text}"

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

    def radius_text(self, row: EpsRow, fmt=None) -> str:
        """The row's median certified radius as text: "≥ r" when it reached the search limit
        (the true radius is at least r), "–" when radii were not computed."""
        r = row.median_certified_radius
        if r is None:
            return "–"
        s = fmt(r) if fmt is not None else f"{r:.3g}"
        return f"≥ {s}" if row.radius_at_cap else s

    def threshold_text(self) -> str:
        if self.max_verified_error is not None:
            return f"≤{self.max_verified_error:g}"
        if self.min_verified_accuracy is not None:
            return f"acc≥{self.min_verified_accuracy:g}"
        return ""

    def worst_row(self) -> EpsRow | None:
        """The row that decides the verdict at a glance: among the gated rows (all rows when
        none is gated) the one with the most verified error over its threshold (the largest
        verified error without one); the larger ε on a tie. None without rows."""
        rows = [r for r in self.rows if r.gated] or list(self.rows)
        if not rows:
            return None
        return max(rows, key=lambda r: (r.verified_error - (r.threshold_error or 0.0), r.eps))

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
            target=str(e.target or "head"),
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
                radius_at_cap=bool(r.get("median_radius_at_cap", False)),
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
            and self.target == other.target
            and self.norm == other.norm
            and np.allclose(np.asarray(self.set_value, dtype=float), np.asarray(other.set_value, dtype=float))
        )
        if not same:
            raise SheetError(
                f"unit test '{self.name}' appears twice with different sets "
                f"({self.set_text} vs {other.set_text})"
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
            "target": self.target,
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
            target=str(d.get("target") or "head"),  # sheets before the black-box audit: the head
        )
        if ut.set_kind not in SET_KINDS:
            raise SheetError(f"{where}.set.kind: expected one of {SET_KINDS}, got {ut.set_kind!r}")
        return ut
