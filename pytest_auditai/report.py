"""Report rendering for `--auditai-report` and reading a `--auditai-baseline`.

The spec-sheet (`auditai.sheet.SpecSheet`) is the canonical record; until it is available in
the installed auditai, a plain run record is rendered (JSON: `{"auditai_run": 1, ...}`,
Markdown and HTML tables). `baseline_errors` reads both.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

RUN_SCHEMA = 1


def _sheet_class() -> Any:
    try:
        from auditai.sheet import SpecSheet
    except ImportError:
        return None
    return SpecSheet


def build_sheet(session: Any) -> Any:
    """The run's SpecSheet from every entry (None when the sheet module is unavailable)."""
    sheet_cls = _sheet_class()
    entries = session.sorted_entries()
    if sheet_cls is None or not entries or any(e.sheet is None for e in entries):
        return None
    first = entries[0]
    model = {"source": first.model.get("source"), "sha256": first.model.get("content_hash")}
    model.update({k: v for k, v in first.model.items() if k not in ("source", "content_hash")})
    data = {"source": first.data.get("source"), "sha256": first.data.get("content_hash"),
            "n": first.data.get("n")}
    methods = sorted({r["method"] for e in entries for r in e.rows if r.get("method")})
    return sheet_cls.from_results(
        [e.sheet for e in entries], model=model, data=data, device=session.resolved_device,
        method=methods[0] if len(methods) == 1 else ", ".join(methods) or None,
        engine=session.option_engine, suite=", ".join(sorted({e.suite for e in entries})) or None,
    )


def render(session: Any, suffix: str) -> str:
    """The report text for a suffix (.json, .md, .html)."""
    sheet = build_sheet(session)
    if sheet is not None:
        if suffix == ".json":
            return sheet.to_json()
        if suffix == ".md":
            return sheet.to_markdown()
        # the model and codes already loaded this run: the sheet decodes image strips from them
        return sheet.to_html(model=session.loaded_model(), codes=session.loaded_data())
    record = session.record()
    if suffix == ".json":
        return json.dumps({"auditai_run": RUN_SCHEMA, **record}, indent=2, sort_keys=False) + "\n"
    if suffix == ".md":
        return _markdown(record)
    return _html(record)


def _rows(record: dict) -> list[list[str]]:
    out = []
    for e in record["entries"]:
        for r in e["rows"]:
            mark = "" if not r["gated"] else (" ✓" if r["passed"] else " ✗")
            out.append([r["unit_test"], r["set"], f"{r['eps']:g}", f"{r['clean_error']:.3g}",
                        f"{r['verified_error']:.3g}{mark}", f"{r['falsified_fraction']:.3g}",
                        f"{r['unknown_fraction']:.3g}", r["gate"]])
    return out


_HEAD = ["unit test", "set", "ε", "clean error", "verified error", "falsified", "unknown", "gate"]


def _markdown(record: dict) -> str:
    lines = ["# auditai spec-sheet", "", "| " + " | ".join(_HEAD) + " |",
             "|" + "---|" * len(_HEAD)]
    for r in _rows(record):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    lines += ["", f"auditai {record['auditai']}, device {record['device']}", ""]
    return "\n".join(lines)


def _html(record: dict) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _HEAD)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in _rows(record))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>auditai spec-sheet</title>"
            f"</head><body><h1>auditai spec-sheet</h1><table><tr>{head}</tr>{body}</table>"
            f"<p>auditai {esc(record['auditai'])}, device {esc(str(record['device']))}</p>"
            f"</body></html>\n")


def baseline_errors(data: Any) -> dict[tuple[str, float], float] | None:
    """(unit test, ε) → verified error of a JSON report: our run record or a spec-sheet."""
    if isinstance(data, dict) and data.get("auditai_run") and isinstance(data.get("entries"), list):
        return {(r["unit_test"], float(r["eps"])): float(r["verified_error"])
                for e in data["entries"] for r in e["rows"]}
    sheet_cls = _sheet_class()
    if sheet_cls is not None and isinstance(data, dict):
        from auditai.errors import SheetError

        try:
            sheet = sheet_cls.from_dict(data)
        except SheetError:
            return None
        out = {}
        for ut in sheet.unit_tests:
            for row in ut.rows:
                ve = row.verified_error
                if ve is not None and not math.isnan(ve):
                    out[(ut.name, float(row.eps))] = float(ve)
        return out
    return None
