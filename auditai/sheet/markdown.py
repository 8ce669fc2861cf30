"""Markdown spec-sheet in the style of the paper's Tables 1, 3 and 5.

Unit tests as rows and ε as columns; a cell holds the verified error, with ✗ where it is over
its gate. A footer names the model and data hashes and the versions; then a per-ε detail table
and the deployment ranges (paper §2.4). Every string from a suite or model is escaped
(HTML entities and table pipes), so a hostile name renders as text.
"""

from __future__ import annotations

import html

from auditai.deploy import default_eps
from auditai.sheet.record import SheetRecord, UnitTestSheet, deployment_rows


def md_escape(s: object) -> str:
    """Text safe inside a Markdown table cell: HTML-escaped, pipes escaped, one line."""
    t = html.escape(str(s), quote=False)
    return t.replace("|", "\\|").replace("\r", " ").replace("\n", " ").replace("`", "&#96;")


def num(x: float | None) -> str:
    """Compact numbers: 0.27, 1.35, 0, 2.05e-05."""
    if x is None:
        return "–"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.2e}"
    s = f"{x:.3f}".rstrip("0").rstrip(".")
    return s.replace("-", "−") if s != "-0" else "0"


def range_text(ut: UnitTestSheet, eps: float) -> str:
    if ut.deployment is None:
        return "not computed"
    lo, hi = ut.deployment_range(eps)
    return ", ".join(f"{lb} ∈ [{num(a)}, {num(b)}]" for lb, a, b in zip(ut.labels, lo, hi))


def gate_text(ut: UnitTestSheet, passed: bool | None) -> str:
    if passed is None:
        return ""
    return f"{ut.threshold_text()} {'pass' if passed else 'FAIL'}"


def footer(sheet: SheetRecord) -> str:
    m, d, v = sheet.model, sheet.data, sheet.versions
    parts = []
    if m.get("sha256"):
        parts.append(f"model sha256 {m['sha256'][:12]}…")
    elif m.get("source"):
        parts.append(f"model {m['source']}")
    if d.get("sha256"):
        parts.append(f"data sha256 {d['sha256'][:12]}…")
    elif d.get("source"):
        parts.append(f"data {d['source']}")
    for k in ("auditai", "torch", "python"):
        if v.get(k):
            parts.append(f"{k} {v[k]}")
    parts.append(str(sheet.device))
    if sheet.method:
        parts.append(str(sheet.method))
    parts.append(f"engine {sheet.engine}")
    return ", ".join(md_escape(p) for p in parts)


def to_markdown(sheet: SheetRecord) -> str:
    eps_cols = sheet.all_eps
    title = sheet.suite or sheet.model.get("source") or "model"
    out = [f"# Spec-sheet: {md_escape(title)}", ""]
    head = ["unit test", "set"] + [f"ε = {e:g}" for e in eps_cols] + ["deployment range"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for ut in sheet.unit_tests:
        cells = [md_escape(ut.name), md_escape(ut.set_text)]
        for e in eps_cols:
            r = ut.row(e)
            if r is None:
                cells.append("")
                continue
            c = num(r.verified_error)
            if r.gated and r.passed is False:
                c += " ✗"
            cells.append(f"**{c}**" if r.gated else c)
        de = default_eps(ut) if ut.rows else None
        cells.append("" if de is None else f"{md_escape(range_text(ut, de))} (ε = {de:g})")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append(
        "Verified error (1 − verified fraction; clean mistakes count as not verified); gated ε in **bold**, "
        "✗ over its gate. The true robust error lies in [falsified, verified error]."
    )
    out.append("")
    out.append(footer(sheet) + ".")
    out.append("")
    out.append("## Per ε")
    out.append("")
    head = ["unit test", "ε", "clean err", "verified err", "falsified", "unknown", "radius (med)", "gate", "n", "time (s)"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for ut in sheet.unit_tests:
        for r in ut.rows:
            out.append(
                "| "
                + " | ".join(
                    [
                        md_escape(ut.name),
                        f"{r.eps:g}",
                        num(r.clean_error),
                        num(r.verified_error),
                        num(r.falsified_fraction),
                        num(r.unknown_fraction),
                        md_escape(ut.radius_text(r, num)),
                        md_escape(gate_text(ut, r.passed)) if r.gated else "(report only)",
                        str(r.n),
                        f"{r.time_s:.2f}",
                    ]
                )
                + " |"
            )
    out.append("")
    out.append("## Deployment ranges (paper §2.4)")
    out.append("")
    out.append(
        "Per tested coordinate and ε: [μ − ε − σ, μ + ε + σ] of the coordinate over the codes named "
        "(σ: population standard deviation). An input whose code lies inside is within the verified "
        "range of operation; `auditai check` tests this."
    )
    out.append("")
    head = ["unit test", "coordinate", "μ", "σ", "codes", "ε", "range"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for ut, row in deployment_rows(sheet):
        if row is None:
            out.append(f"| {md_escape(ut.name)} | – | – | – | – | – | not computed (no training codes) |")
            continue
        lb, mean, std, n, source, eps, lo, hi = row
        out.append(
            f"| {md_escape(ut.name)} | {md_escape(lb)} | {num(mean)} | {num(std)} | "
            f"{n} {md_escape(source)} | {eps:g} | [{num(lo)}, {num(hi)}] |"
        )
    out.append("")
    from auditai.sheet.deployment import markdown_section  # the optional "deployment" section

    out.append(markdown_section(sheet, md_escape))
    return "\n".join(out).rstrip("\n") + "\n"
