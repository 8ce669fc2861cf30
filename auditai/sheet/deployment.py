"""The spec-sheet's "deployment" section rendered: a table and the accuracy-coverage plot.

The section (`auditai.deploy_report`, paper §2.4 and §4.2) says what the verified range buys on
labelled deployment data: per unit test the coverage (fraction of inputs inside the range)
and accuracy, macro precision and recall inside, outside and on all inputs. The plot shows
in-range accuracy against coverage as ε varies: a larger ε widens the range, so coverage
grows and the in-range accuracy tends towards the accuracy on all inputs.
"""

from __future__ import annotations

import html
from typing import Any

from matplotlib.figure import Figure

from auditai.deploy_report import SUBSETS, DeploymentReport, RangeReport, section
from auditai.sheet.record import SheetRecord


def _n(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _cells(r: RangeReport) -> list[str]:
    eps = "each its own" if r.eps is None else f"{r.eps:g}"
    cells = [r.name, eps, _n(r.coverage)]
    for s in SUBSETS:
        m = getattr(r, s)
        cells += [str(m.n), _n(m.accuracy), _n(m.precision), _n(m.recall)]
    return cells


HEADS = ["unit test", "ε", "coverage"] + [f"{w} {s}" for s in ("inside", "outside", "all")
                                           for w in ("n", "accuracy", "precision", "recall")]


def coverage_figure(rep: DeploymentReport) -> Figure:
    """In-range accuracy against coverage as ε varies (overall, and per unit test)."""
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    names = list(rep.curve[0].get("per_unit_test", {})) if rep.curve else []
    for name in names:
        pts = [(c["per_unit_test"][name]["coverage"], c["per_unit_test"][name]["accuracy_inside"])
               for c in rep.curve if c["per_unit_test"].get(name, {}).get("accuracy_inside") is not None]
        if pts:
            ax.plot(*zip(*pts), "-", lw=0.8, alpha=0.6, label=name[:24])
    pts = [(c["coverage"], c["accuracy_inside"], c["eps"]) for c in rep.curve if c["accuracy_inside"] is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="k", lw=1.8, label="all unit tests")
        for cov, acc, e in pts[:: max(1, len(pts) // 6)]:
            ax.annotate(f"ε={e:.3g}", (cov, acc), fontsize=6, xytext=(3, -8), textcoords="offset points")
    acc_all = rep.overall.all.accuracy
    if acc_all is not None:
        ax.axhline(acc_all, color="tab:red", ls=":", lw=1.2, label=f"all inputs {acc_all:.3f}")
    ax.set_xlabel("coverage (fraction of inputs inside the verified range)")
    ax.set_ylabel("accuracy inside")
    ax.set_xlim(-0.02, 1.02)
    ax.set_title("accuracy against coverage as ε varies", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower left")
    return fig


def html_section(sheet: SheetRecord, esc: Any = None) -> str:
    """The HTML of the section ('' when the sheet has none)."""
    rep = section(sheet)
    if rep is None:
        return ""
    from auditai.sheet import plots

    esc = esc or (lambda s: html.escape(str(s), quote=True))
    h = ["<h2>Deployment report (paper §2.4, §4.2)</h2>",
         f"<p class='note'>{rep.n_inputs} labelled input(s) from {esc(', '.join(rep.inputs) or 'the data given')}; "
         f"coverage = fraction inside the verified range; the last row: inside every unit test's range at its ε. "
         f"{esc(rep.metrics)}.</p>",
         "<table class='deployment-report'><thead><tr>", *[f"<th>{esc(x)}</th>" for x in HEADS], "</tr></thead><tbody>"]
    for r in [*rep.unit_tests, rep.overall]:
        c = _cells(r)
        h.append(f"<tr><td class='name'>{esc(c[0])}</td>" + "".join(f"<td>{esc(v)}</td>" for v in c[1:]) + "</tr>")
    h.append("</tbody></table>")
    if rep.reconstruction:
        rc = rep.reconstruction
        h.append(f"<p class='note'>GAN inversion: {int(rc['n_flagged'])} of {int(rc['n'])} input(s) above the "
                 f"relative reconstruction error {esc(rc['max_relative_error'])}: not representable by the "
                 "generator, so counted outside every range.</p>")
    if rep.curve:
        import base64

        png = base64.b64encode(plots.figure_png(coverage_figure(rep))).decode("ascii")
        h.append(f'<figure><img src="data:image/png;base64,{png}" alt="accuracy against coverage">'
                 "<figcaption>in-range accuracy against coverage as ε varies</figcaption></figure>")
    return "".join(h)


def markdown_section(sheet: SheetRecord, md_escape: Any) -> str:
    """The Markdown of the section ('' when the sheet has none)."""
    rep = section(sheet)
    if rep is None:
        return ""
    out = ["## Deployment report (paper §2.4, §4.2)", "",
           f"{rep.n_inputs} labelled input(s) from {md_escape(', '.join(rep.inputs) or 'the data given')}; "
           f"coverage = fraction inside the verified range; the last row: inside every unit test's range. "
           f"{md_escape(rep.metrics)}.", "",
           "| " + " | ".join(HEADS) + " |", "|" + "---|" * len(HEADS)]
    for r in [*rep.unit_tests, rep.overall]:
        out.append("| " + " | ".join(md_escape(c) for c in _cells(r)) + " |")
    out.append("")
    return "\n".join(out)
