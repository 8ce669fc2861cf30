"""The deployment report: what the verified range buys on new, labelled data (paper §2.4, §4.2).

Given a spec-sheet, the codes of N labelled inputs and the head's predictions on them, the
report says per unit test (at the ε its check uses, `auditai.deploy.default_eps` unless one
is given) and overall (inside the range of *every* unit test):

- coverage: the fraction of inputs inside the verified range;
- accuracy, precision and recall on the inputs inside, outside, and all together;
- a curve of coverage and in-range accuracy as ε varies (one ε for all unit tests), which the
  HTML spec-sheet plots.

This is the paper's domain-shift study (§4.2, Table 4: train on one hospital's X-rays, deploy
on another's) made a routine check: on shifted data, the inputs inside the verified range
should keep the accuracy the spec-sheet promises, and coverage says how much of the new
data that is.

**Metric definitions.** accuracy = the fraction of inputs whose predicted class (argmax of
the head's outputs; for one output, output > 0) equals the label. precision and recall are
macro-averaged: the unweighted mean over classes c of precision_c = TP_c / (TP_c + FP_c) and
recall_c = TP_c / (TP_c + FN_c). A class whose denominator is 0 in a subset (never predicted,
resp. no label of it there) has no precision (resp. recall) there and is left out of the mean;
a subset where no class has one (e.g. an empty subset) reports null. The confusion matrix of
every subset is stored too, so any other average can be recomputed.

Inputs whose code is not trusted (GAN inversion that did not reproduce the input,
`auditai.inversion`) count as outside every range.

The JSON form (schema "auditai.deployment-report/1") is the "deployment" section a spec-sheet
may carry (docs/spec-sheet.md); a sheet without it still loads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from auditai.deploy import as_codes, default_eps
from auditai.errors import SheetError
from auditai.sheet.report_record import (  # noqa: F401  (re-exported: their home before sheet/report_record.py)
    METRICS_NOTE,
    REPORT_SCHEMA,
    SUBSETS,
    DeploymentRecord,
    RangeReport,
    SubsetMetrics,
    _opt,
    checked_section,
)

if TYPE_CHECKING:  # pragma: no cover
    from auditai.sheet.record import SheetRecord as SpecSheet
    from auditai.sheet.record import UnitTestSheet


# --------------------------------------------------------------------------- the report
class DeploymentReport(DeploymentRecord):
    """The report of the module doc (the record `DeploymentRecord`) with its text form."""

    # -- text
    def to_text(self) -> str:
        from tabulate import tabulate

        def f(x: float | None) -> str:
            return "–" if x is None else f"{x:.3f}"

        rows = []
        for r in [*self.unit_tests, self.overall]:
            eps = "own ε" if r.eps is None else f"{r.eps:g}"
            row = [r.name, eps, f(r.coverage)]
            for s in SUBSETS:
                m = getattr(r, s)
                row += [m.n, f(m.accuracy), f(m.precision), f(m.recall)]
            rows.append(row)
        heads = ["unit test", "ε", "coverage"]
        for s in ("in", "out", "all"):
            heads += [f"n {s}", f"acc {s}", f"P {s}", f"R {s}"]
        out = [f"deployment report on {self.n_inputs} labelled input(s) ({self.num_classes} classes)",
               tabulate(rows, headers=heads, disable_numparse=True),
               f"coverage: fraction inside the verified range; 'all unit tests': inside every one at its ε. "
               f"{self.metrics}."]
        if self.reconstruction:
            rc = self.reconstruction
            out.append(f"GAN inversion: {rc['n_flagged']} of {rc['n']} input(s) above the relative "
                       f"reconstruction error {rc['max_relative_error']:g} (counted outside; median "
                       f"{f(rc.get('relative_error_median'))}, max {f(rc.get('relative_error_max'))})")
        return "\n".join(out)


# --------------------------------------------------------------------------- metrics
def subset_metrics(pred: np.ndarray, y: np.ndarray, num_classes: int) -> SubsetMetrics:
    """The metrics of the module doc on predictions `pred` and labels `y` (both N ints)."""
    pred, y = np.asarray(pred, dtype=np.int64), np.asarray(y, dtype=np.int64)
    k = int(num_classes)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    n = int(y.shape[0])
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(0), cm.sum(1)
    prec = [tp[c] / predicted[c] for c in range(k) if predicted[c] > 0]
    rec = [tp[c] / actual[c] for c in range(k) if actual[c] > 0]
    return SubsetMetrics(
        n=n,
        accuracy=float(tp.sum() / n) if n else None,
        precision=float(np.mean(prec)) if prec else None,
        recall=float(np.mean(rec)) if rec else None,
        confusion=cm.tolist(),
    )


def predictions(head: Any, z: Any, batch_size: int = 4096) -> np.ndarray:
    """The head's predicted class per code: argmax, or output > 0 for a single output."""
    import torch

    from auditai.modes import _probe

    zt = torch.as_tensor(np.asarray(as_codes(z, "codes")))
    p = next(iter(head.parameters()), None)
    if p is not None:
        zt = zt.to(p.dtype)
    outs = [_probe(head, zt[i:i + batch_size]) for i in range(0, zt.shape[0], batch_size)]
    out = torch.cat(outs) if outs else torch.zeros(0, 1)
    if out.dim() != 2:
        raise SheetError(f"the head must output N×m scores, got shape {tuple(out.shape)}")
    pred = (out[:, 0] > 0).long() if out.shape[1] == 1 else out.argmax(1)
    return pred.cpu().numpy()


# --------------------------------------------------------------------------- the report
def _range_report(name: str, eps: float | None, inside: np.ndarray, pred: np.ndarray, y: np.ndarray,
                  k: int) -> RangeReport:
    n = int(inside.shape[0])
    return RangeReport(name, eps, float(inside.mean()) if n else None,
                       subset_metrics(pred[inside], y[inside], k),
                       subset_metrics(pred[~inside], y[~inside], k),
                       subset_metrics(pred, y, k))


def _inside(ut: UnitTestSheet, codes: np.ndarray, eps: float) -> np.ndarray:
    """Bool N: every tested coordinate inside the range at ε (as `auditai.deploy.check_codes`)."""
    t = codes @ np.asarray(ut.projection, dtype=np.float64).T
    lo, hi = ut.deployment.range(eps, ut.scale)
    return ((t >= lo) & (t <= hi)).all(axis=1)


def curve_eps(sheet: SpecSheet, points: int = 16) -> list[float]:
    """The ε grid of the curve: 0 to twice the largest measured ε, plus every measured ε."""
    measured = sheet.all_eps
    top = 2.0 * max(measured) if measured else 1.0
    grid = set(np.round(np.linspace(0.0, top, points), 10).tolist()) | {float(e) for e in measured}
    return sorted(grid)


def deployment_report(
    sheet: SpecSheet,
    z: Any,
    y: Any,
    pred: Any,
    *,
    num_classes: int,
    eps: float | None = None,
    trusted: Any = None,
    inputs: Sequence[str] = (),
    reconstruction: dict | None = None,
    class_names: Sequence[str] | None = None,
    grid: Sequence[float] | None = None,
) -> DeploymentReport:
    """The report (module doc) for codes z (N×d), labels y (N) and predictions pred (N).

    `trusted` (bool N, default all): inputs whose code may be used; the others count as
    outside every range. `eps`: one ε for every unit test (default: each its `default_eps`).
    """
    codes = as_codes(z, "input codes", d=sheet.latent_dim)
    n = codes.shape[0]
    y = np.asarray(y).reshape(-1)
    pred = np.asarray(pred).reshape(-1)
    if y.shape[0] != n or pred.shape[0] != n:
        raise SheetError(f"{n} codes but {y.shape[0]} labels and {pred.shape[0]} predictions: they must match")
    if n and (not np.issubdtype(y.dtype, np.integer)) and not np.array_equal(y, np.round(y)):
        raise SheetError("labels must be integer class indices")
    y = y.astype(np.int64)
    if n and (y.min() < 0 or y.max() >= num_classes):
        bad = np.flatnonzero((y < 0) | (y >= num_classes))[:5].tolist()
        raise SheetError(f"labels outside the head's classes 0..{num_classes - 1} at inputs {bad}")
    ok = np.ones(n, dtype=bool) if trusted is None else np.asarray(trusted, dtype=bool).reshape(-1)
    if ok.shape[0] != n:
        raise SheetError(f"trusted has {ok.shape[0]} values for {n} inputs")
    if eps is not None and (not math.isfinite(eps) or eps < 0):
        raise SheetError(f"eps must be a finite value >= 0, got {eps}")
    for ut in sheet.unit_tests:
        if ut.deployment is None:
            raise SheetError(f"unit test '{ut.name}' has no deployment range in the spec-sheet "
                             "(it was built without training codes)")
    if not sheet.unit_tests:
        raise SheetError("the spec-sheet has no unit tests: no verified range to report on")
    k = int(num_classes)
    rows, all_in = [], ok.copy()
    for ut in sheet.unit_tests:
        e = default_eps(ut) if eps is None else float(eps)
        inside = _inside(ut, codes, e) & ok
        all_in &= inside
        rows.append(_range_report(ut.name, e, inside, pred, y, k))
    overall = _range_report("all unit tests", eps, all_in, pred, y, k)
    curve = []
    for e in (curve_eps(sheet) if grid is None else [float(g) for g in grid]):
        per = {ut.name: _inside(ut, codes, e) & ok for ut in sheet.unit_tests}
        both = np.logical_and.reduce(list(per.values())) if per else ok
        correct = pred == y
        curve.append({
            "eps": e,
            "coverage": float(both.mean()) if n else None,
            "n_inside": int(both.sum()),
            "accuracy_inside": float(correct[both].mean()) if both.any() else None,
            "accuracy_outside": float(correct[~both].mean()) if (~both).any() else None,
            "per_unit_test": {u: {"coverage": float(m.mean()) if n else None,
                                  "accuracy_inside": float(correct[m].mean()) if m.any() else None}
                              for u, m in per.items()},
        })
    return DeploymentReport(rows, overall, curve, n, k, None if class_names is None else [str(c) for c in class_names],
                            list(inputs), sheet.model.get("sha256"), eps, reconstruction)


def attach(sheet: SpecSheet, report: DeploymentReport) -> SpecSheet:
    """Put the report on the sheet as its "deployment" section (replacing an earlier one)."""
    sheet.deployment_report = report.to_dict()
    return sheet


def section(sheet: SpecSheet) -> DeploymentReport | None:
    """The sheet's deployment section as a report, or None when it has none."""
    d = getattr(sheet, "deployment_report", None)
    return None if d is None else DeploymentReport.from_dict(d)


__all__ = ["DeploymentReport", "RangeReport", "SubsetMetrics", "deployment_report", "predictions",
           "subset_metrics"]
