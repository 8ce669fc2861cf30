"""Model-card export: the spec-sheet as the quantitative analysis of a model card.

Field names follow Model Card Toolkit's JSON schema (`model_details`, `quantitative_analysis.
performance_metrics` as a list of {type, value, slice, threshold, confidence_interval},
`quantitative_analysis.graphics`). Model cards have no place for verified guarantees, so a
`guarantees` block carries, per unit test and ε: the method, the latent set, ε, the verdict
fractions, the gate and the engine version.
"""

from __future__ import annotations

from auditai.sheet.record import SheetRecord

MCT_SCHEMA_VERSION = "0.0.2"


def to_model_card(sheet: SheetRecord, name: str | None = None) -> dict:
    metrics = []
    guarantees = []
    for ut in sheet.unit_tests:
        for r in ut.rows:
            sl = f"unit test '{ut.name}' ({ut.set_description}), eps={r.eps:g}"
            for typ, val in (
                ("clean error", r.clean_error),
                ("verified error", r.verified_error),
                ("falsified fraction", r.falsified_fraction),
                ("unknown fraction", r.unknown_fraction),
            ):
                m = {"type": typ, "value": f"{val:.6g}", "slice": sl}
                if typ == "verified error":
                    if r.gated and r.threshold_error is not None:
                        m["threshold"] = f"{r.threshold_error:.6g}"
                    # the true robust error lies between the falsified fraction and the verified error
                    m["confidence_interval"] = {
                        "lower_bound": f"{r.falsified_fraction:.6g}",
                        "upper_bound": f"{r.verified_error:.6g}",
                    }
                metrics.append(m)
            if r.median_certified_radius is not None:
                metrics.append({"type": "median certified radius",
                                "value": ut.radius_text(r, lambda x: f"{x:.6g}"), "slice": sl})
            lo = hi = None
            if ut.deployment is not None:
                a, b = ut.deployment_range(r.eps)
                lo, hi = a.tolist(), b.tolist()
            guarantees.append(
                {
                    "unit_test": ut.name,
                    "method": ut.method or sheet.method,
                    "spec": ut.spec,
                    "set": {"kind": ut.set_kind, "description": ut.set_description, "norm": ut.norm},
                    "eps": r.eps,
                    "verdicts": {
                        "verified": 1.0 - r.verified_error,
                        "falsified": r.falsified_fraction,
                        "unknown": r.unknown_fraction,
                    },
                    "n": r.n,
                    "gated": r.gated,
                    "threshold_error": r.threshold_error,
                    "passed": r.passed,
                    "deployment_range": None if lo is None else {"coordinates": ut.labels, "lower": lo, "upper": hi},
                    "engine": {"name": sheet.engine, "version": sheet.versions.get("auditai")},
                }
            )
    return {
        "schema_version": MCT_SCHEMA_VERSION,
        "model_details": {
            "name": name or sheet.suite or str(sheet.model.get("source") or "model"),
            "overview": "Semantic unit tests verified by bound propagation over latent sets (AuditAI).",
            "version": {"name": str(sheet.model.get("sha256") or ""), "date": sheet.created},
        },
        "quantitative_analysis": {
            "performance_metrics": metrics,
            "graphics": {"description": "see the HTML spec-sheet for curves and decoded image strips", "collection": []},
        },
        "guarantees": {
            "schema": sheet.schema,
            "engine": sheet.engine,
            "versions": sheet.versions,
            "device": sheet.device,
            "model_sha256": sheet.model.get("sha256"),
            "data_sha256": sheet.data.get("sha256"),
            "unit_tests": guarantees,
        },
    }
