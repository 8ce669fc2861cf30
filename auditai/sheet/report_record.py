"""The deployment report's record: the JSON form of a spec-sheet's optional "deployment"
section (schema "auditai.deployment-report/1"; computed by `auditai.deploy_report`).

Part of the spec-sheet record: plain data, no torch, no renderer.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from typing import Any

from auditai.errors import SheetError

REPORT_SCHEMA = "auditai.deployment-report/1"
METRICS_NOTE = (
    "precision and recall are macro-averaged over classes (a class never predicted, or absent from "
    "the labels, in a subset is left out of that mean; null when no class qualifies)"
)
SUBSETS = ("inside", "outside", "all")


# --------------------------------------------------------------------------- metrics
@dataclass
class SubsetMetrics:
    """Accuracy, macro precision and recall of one subset of inputs, with its confusion matrix."""

    n: int
    accuracy: float | None
    precision: float | None
    recall: float | None
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def to_dict(self) -> dict:
        return {"n": self.n, "accuracy": self.accuracy, "precision": self.precision,
                "recall": self.recall, "confusion": self.confusion}

    @classmethod
    def from_dict(cls, d: dict) -> SubsetMetrics:
        return cls(int(d["n"]), _opt(d.get("accuracy")), _opt(d.get("precision")), _opt(d.get("recall")),
                   [[int(v) for v in row] for row in d.get("confusion") or []])


def _opt(x: Any) -> float | None:
    return None if x is None else float(x)



@dataclass
class RangeReport:
    """Coverage and the metrics inside / outside / all for one unit test (or all of them)."""

    name: str
    eps: float | None  # None for the overall row (each unit test at its own ε)
    coverage: float | None
    inside: SubsetMetrics
    outside: SubsetMetrics
    all: SubsetMetrics

    def to_dict(self) -> dict:
        return {"name": self.name, "eps": self.eps, "coverage": self.coverage,
                **{s: getattr(self, s).to_dict() for s in SUBSETS}}

    @classmethod
    def from_dict(cls, d: dict) -> RangeReport:
        return cls(str(d["name"]), _opt(d.get("eps")), _opt(d.get("coverage")),
                   *(SubsetMetrics.from_dict(d[s]) for s in SUBSETS))



@dataclass
class DeploymentRecord:
    """The deployment report as data (`auditai.deploy_report.DeploymentReport` adds its text);
    `to_dict()` is the sheet's "deployment" section."""

    unit_tests: list[RangeReport]
    overall: RangeReport
    curve: list[dict]  # {eps, coverage, accuracy_inside, accuracy_outside, n_inside, per_unit_test}
    n_inputs: int
    num_classes: int
    class_names: list[str] | None = None
    inputs: list[str] = field(default_factory=list)  # the files checked
    model_sha256: str | None = None
    eps: float | None = None  # the ε given for every unit test, or None (each its default)
    reconstruction: dict | None = None  # GAN inversion summary (auditai.inversion), if used
    metrics: str = METRICS_NOTE
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
    schema: str = REPORT_SCHEMA

    def to_dict(self) -> dict:
        d = {
            "schema": self.schema, "created": self.created, "inputs": list(self.inputs),
            "model_sha256": self.model_sha256, "n_inputs": self.n_inputs,
            "num_classes": self.num_classes, "class_names": self.class_names, "eps": self.eps,
            "metrics": self.metrics, "reconstruction": self.reconstruction,
            "overall": self.overall.to_dict(), "unit_tests": [u.to_dict() for u in self.unit_tests],
            "curve": self.curve,
        }
        return json.loads(json.dumps(d, allow_nan=False))  # plain JSON values

    @classmethod
    def from_dict(cls, d: Any, where: str = "deployment") -> DeploymentRecord:
        """Read the section back; a malformed one is a SheetError naming it."""
        if not isinstance(d, dict):
            raise SheetError(f"{where}: expected an object, got {type(d).__name__}")
        if d.get("schema") != REPORT_SCHEMA:
            raise SheetError(f"{where}: unknown schema {d.get('schema')!r} (this auditai reads {REPORT_SCHEMA!r})")
        try:
            return cls(
                unit_tests=[RangeReport.from_dict(u) for u in d["unit_tests"]],
                overall=RangeReport.from_dict(d["overall"]),
                curve=list(d.get("curve") or []),
                n_inputs=int(d["n_inputs"]), num_classes=int(d["num_classes"]),
                class_names=d.get("class_names"), inputs=list(d.get("inputs") or []),
                model_sha256=d.get("model_sha256"), eps=_opt(d.get("eps")),
                reconstruction=d.get("reconstruction"), metrics=str(d.get("metrics", METRICS_NOTE)),
                created=str(d.get("created", "")), schema=REPORT_SCHEMA,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SheetError(f"{where}: malformed deployment report ({type(e).__name__}: {e})") from None


def checked_section(d: Any, where: str) -> dict | None:
    """For `SpecSheet.from_dict`: the "deployment" section validated (None when absent)."""
    if d is None:
        return None
    return DeploymentRecord.from_dict(d, f"{where}.deployment").to_dict()
