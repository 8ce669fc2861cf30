"""`--auditai-report`: the run's spec-sheet (auditai.sheet), in the format the suffix names.

The spec-sheet is the plugin's only report: JSON (`auditai.spec-sheet/N`, also what
`--auditai-baseline` reads back, via `auditai.gate`), Markdown and HTML.
"""

from __future__ import annotations

from typing import Any


def build_sheet(session: Any) -> Any:
    """The run's SpecSheet from every verified unit test of the session."""
    from auditai.sheet import SpecSheet

    entries = session.sorted_entries()
    first = entries[0]
    model = {"source": first.model.get("source"), "sha256": first.model.get("content_hash")}
    model.update({k: v for k, v in first.model.items() if k not in ("source", "content_hash")})
    data = {"source": first.data.get("source"), "sha256": first.data.get("content_hash"),
            "n": first.data.get("n")}
    methods = sorted({r["method"] for e in entries for r in e.rows if r.get("method")})
    return SpecSheet.from_results(
        [e.sheet for e in entries], model=model, data=data, device=session.resolved_device,
        method=methods[0] if len(methods) == 1 else ", ".join(methods) or None,
        engine=session.option_engine, suite=", ".join(sorted({e.suite for e in entries})) or None,
    )


def render(session: Any, suffix: str) -> str:
    """The spec-sheet's text for a suffix (.json, .md, .html)."""
    sheet = build_sheet(session)
    if suffix == ".json":
        return sheet.to_json()
    if suffix == ".md":
        return sheet.to_markdown()
    # the model and codes already loaded this run: the sheet decodes image strips from them
    return sheet.to_html(model=session.loaded_model(), codes=session.loaded_data())
