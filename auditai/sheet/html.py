"""A self-contained HTML spec-sheet: tables, curves and decoded image strips, no network.

Plots are embedded as base64 PNG data URIs; the page carries a Content-Security-Policy that
allows no script and no remote resource, and every string from a suite, a model or a data
source goes through `html.escape`, so a hostile unit-test name shows as text.
"""

from __future__ import annotations

import base64
import html
from typing import Any

import numpy as np

from auditai.deploy import default_eps, set_basis
from auditai.errors import SheetError
from auditai.sheet import plots
from auditai.sheet.deployment import html_section as deployment_section
from auditai.sheet.record import SheetRecord, UnitTestSheet, deployment_rows

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f2f2f2}td.name,td.text{text-align:left}
td.fail{background:#fbd5d5;font-weight:bold}td.gated{font-weight:bold}
.pass{color:#17702a}.FAIL{color:#b00020;font-weight:bold}
.meta td{text-align:left}.note{color:#555;font-size:.9em}
figure{display:inline-block;vertical-align:top;margin:.4em 1em .4em 0}figcaption{font-size:.85em;color:#444;max-width:32em}
ul.verdicts{list-style:none;padding-left:0}ul.verdicts li{margin:.15em 0}
img{max-width:100%}
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def _num(x: float | None) -> str:
    if x is None:
        return "–"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.3f}".rstrip("0").rstrip(".") or "0"


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _range(ut: UnitTestSheet, eps: float) -> str:
    if ut.deployment is None:
        return "not computed"
    lo, hi = ut.deployment_range(eps)
    return ", ".join(f"{lb} ∈ [{_num(a)}, {_num(b)}]" for lb, a, b in zip(ut.labels, lo, hi))


def _codes(codes: Any) -> np.ndarray | None:
    if codes is None:
        return None
    z = getattr(codes, "z", codes)
    if hasattr(z, "detach"):
        z = z.detach().cpu().double().numpy()
    z = np.asarray(z, dtype=np.float64)
    return z if z.ndim == 2 and z.shape[0] > 0 else None


def summary_table(sheet: SheetRecord) -> str:
    eps_cols = sheet.all_eps
    h = ["<table class='summary'><thead><tr><th>unit test</th><th>set</th>"]
    h += [f"<th>ε = {e:g}</th>" for e in eps_cols]
    h.append("<th>deployment range</th></tr></thead><tbody>")
    for ut in sheet.unit_tests:
        h.append(f"<tr><td class='name'>{esc(ut.name)}</td><td class='text'>{esc(ut.set_text)}</td>")
        for e in eps_cols:
            r = ut.row(e)
            if r is None:
                h.append("<td></td>")
                continue
            over = r.gated and r.passed is False
            cls = "fail" if over else ("gated" if r.gated else "")
            h.append(f"<td class='{cls}'>{_num(r.verified_error)}{' ✗' if over else ''}</td>")
        de = default_eps(ut) if ut.rows else None
        h.append(f"<td class='text'>{'' if de is None else esc(_range(ut, de)) + f' (ε = {de:g})'}</td></tr>")
    h.append("</tbody></table>")
    h.append(
        "<p class='note'>Verified error (1 − verified fraction; clean mistakes count as not verified); "
        "gated ε in bold, ✗ over its gate. The true robust error lies in [falsified, verified error].</p>"
    )
    return "".join(h)


def detail_table(sheet: SheetRecord) -> str:
    heads = ["unit test", "ε", "clean err", "verified err", "falsified", "unknown", "radius (med)", "gate", "n", "time (s)"]
    h = ["<table class='detail'><thead><tr>", *[f"<th>{x}</th>" for x in heads], "</tr></thead><tbody>"]
    for ut in sheet.unit_tests:
        for r in ut.rows:
            if r.gated and r.passed is not None:
                word = "pass" if r.passed else "FAIL"
                gate = f"{esc(ut.threshold_text())} <span class='{word}'>{word}</span>"
            else:
                gate = "report only"
            h.append(
                f"<tr><td class='name'>{esc(ut.name)}</td><td>{r.eps:g}</td><td>{_num(r.clean_error)}</td>"
                f"<td>{_num(r.verified_error)}</td><td>{_num(r.falsified_fraction)}</td>"
                f"<td>{_num(r.unknown_fraction)}</td><td>{esc(ut.radius_text(r, _num))}</td>"
                f"<td class='text'>{gate}</td><td>{r.n}</td><td>{r.time_s:.2f}</td></tr>"
            )
    h.append("</tbody></table>")
    if any(r.radius_at_cap for ut in sheet.unit_tests for r in ut.rows):
        h.append("<p class='note'>≥ r: the search for the certified radius stopped at its limit r, "
                 "so the median radius is at least r.</p>")
    return "".join(h)


def verdict_line(ut: UnitTestSheet) -> str:
    """One line for the top of the page: pass/fail, the worst ε and its verified error
    against the gate."""
    r = ut.worst_row()
    if r is None:
        return f"<li><b>{esc(ut.name)}</b>: no rows</li>"
    ve = _num(r.verified_error)
    if r.gated and r.passed is not None:
        word, sign = ("pass", "≤") if r.passed else ("FAIL", ">")
        gate = f"verified error {ve} {sign} gate {_num(r.threshold_error)}"
        mark = f"<span class='{word}'>{'✓' if r.passed else '✗'} {word}</span>"
    else:
        gate = f"verified error {ve} (no gate)"
        mark = "<span>report only</span>"
    return (f"<li>{mark} <b>{esc(ut.name)}</b>: worst ε = {r.eps:g}, {gate}; "
            f"radius (med) {esc(ut.radius_text(r, _num))}</li>")


def verdict_lines(sheet: SheetRecord) -> str:
    """The one-line summary of every unit test, before the tables."""
    return "<ul class='verdicts'>" + "".join(verdict_line(ut) for ut in sheet.unit_tests) + "</ul>"


def deployment_table(sheet: SheetRecord) -> str:
    heads = ["unit test", "coordinate", "μ", "σ", "codes", "ε", "range"]
    h = ["<table class='deployment'><thead><tr>", *[f"<th>{x}</th>" for x in heads], "</tr></thead><tbody>"]
    for ut, row in deployment_rows(sheet):
        if row is None:
            h.append(f"<tr><td class='name'>{esc(ut.name)}</td><td colspan='6' class='text'>not computed (no training codes)</td></tr>")
            continue
        lb, mean, std, n, source, eps, lo, hi = row
        h.append(
            f"<tr><td class='name'>{esc(ut.name)}</td><td class='text'>{esc(lb)}</td>"
            f"<td>{_num(mean)}</td><td>{_num(std)}</td>"
            f"<td class='text'>{n} {esc(source)}</td><td>{eps:g}</td>"
            f"<td>[{_num(lo)}, {_num(hi)}]</td></tr>"
        )
    h.append("</tbody></table>")
    return "".join(h)


def meta_table(sheet: SheetRecord) -> str:
    items = []
    for k, v in sheet.model.items():
        items.append((f"model {k}", v))
    for k, v in sheet.data.items():
        items.append((f"data {k}", v))
    for k, v in sheet.versions.items():
        items.append((k, v))
    items += [("device", sheet.device), ("method", sheet.method), ("engine", sheet.engine),
              ("schema", sheet.schema), ("created", sheet.created)]
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in items if v is not None)
    return f"<table class='meta'><tbody>{rows}</tbody></table>"


def _pick_eps(eps: list[float], k: int = 3) -> list[float]:
    if len(eps) <= k:
        return list(eps)
    idx = np.linspace(0, len(eps) - 1, k).round().astype(int)
    return [eps[i] for i in sorted(set(idx.tolist()))]


def stored_images(ut: UnitTestSheet, k: int = 4) -> str:
    """The decoded images g(z) stored on a classifier-target unit test's counterexamples (the
    images the classifier misclassified), most violated first; "" when there are none."""
    cs = [c for c in ut.counterexamples if isinstance(c, dict) and c.get("image") is not None]
    cs.sort(key=lambda c: c.get("margin") if isinstance(c.get("margin"), (int, float)) else 0.0)
    imgs = []
    for c in cs[:k]:
        try:
            imgs.append(plots.to_images(np.asarray([c["image"]], dtype=np.float64))[0])
        except (SheetError, ValueError, TypeError):  # a malformed image: the tables still render
            continue
    if not imgs or any(i.shape != imgs[0].shape for i in imgs):
        return ""
    grid = plots.tile(np.stack(imgs), 1, len(imgs))
    desc = "; ".join(f"sample {c.get('sample')} at ε={c.get('eps')}: margin {_num(c.get('margin'))}"
                     for c in cs[:len(imgs)])
    fig = plots.image_figure(grid, f"{ut.name}: counterexamples g(z) ({ut.target_text})",
                             [f"ε={c.get('eps')}" for c in cs[:len(imgs)]])
    return _img(plots.figure_png(fig), f"decoded counterexamples of {ut.name}", desc)


def unit_test_figures(ut: UnitTestSheet, decoder: Any, z: np.ndarray | None, n_samples: int) -> str:
    parts = [_img(plots.figure_png(plots.curves_figure(ut)), f"curves of {ut.name}",
                  f"{ut.name}: verified error and falsified fraction against ε")]
    if decoder is None:
        return "".join(parts) + stored_images(ut)
    d = z.shape[1] if z is not None else (ut.latent_dim or 0)
    try:
        B = set_basis(ut.set_kind, ut.set_value, d, ut.radii)
    except (SheetError, ValueError):  # a malformed set: the tables still render
        return "".join(parts) + stored_images(ut)
    if z is not None and ut.rows:
        for j in range(min(B.shape[1], 3)):
            grid, ts = plots.image_strip(decoder, z[:n_samples], B[:, j], _pick_eps(ut.eps))
            title = f"{ut.name}: {ut.labels[j] if j < len(ut.labels) else 'coordinate'} from −ε to +ε"
            fig = plots.strip_figure(grid, ts, title, rows=min(n_samples, z.shape[0]))
            parts.append(_img(plots.figure_png(fig), f"image strip of {ut.name}", title + " (rows: samples)"))
    pairs = []
    for c in ut.counterexamples:
        zc, delta = c.get("z"), c.get("delta")
        if zc is None or len(zc) != B.shape[0]:
            continue
        if c.get("z0") is not None:
            z0 = c["z0"]
        elif delta is not None and len(delta) == B.shape[1]:
            z0 = (np.asarray(zc) - B @ np.asarray(delta, dtype=np.float64)).tolist()
        else:
            continue
        pairs.append((z0, zc, c))
        if len(pairs) >= 4:
            break
    if not pairs:  # no decoder or codes here: the images the classifier saw, as stored
        return "".join(parts) + stored_images(ut)
    grid = plots.counterexample_grid(decoder, [p[0] for p in pairs], [p[1] for p in pairs])
    desc = "; ".join(
        f"sample {p[2].get('sample')} at ε={p[2].get('eps')}: margin {_num(p[2].get('margin'))}" for p in pairs
    )
    fig = plots.image_figure(grid, f"{ut.name}: counterexamples", ["original", "counterexample"])
    parts.append(_img(plots.figure_png(fig), f"counterexamples of {ut.name}", desc))
    return "".join(parts)


def to_html(sheet: SheetRecord, model: Any = None, codes: Any = None, n_samples: int = 4) -> str:
    """The page as a string. With a model that has a decoder and `codes` (N×d or AuditData),
    it adds image strips along each tested direction and decoded counterexamples."""
    decoder = getattr(model, "decoder", None) if model is not None else None
    z = _codes(codes)
    title = sheet.suite or sheet.model.get("source") or "model"
    verdict = "all gates pass" if sheet.passed else "a gate FAILS"
    body = [
        f"<h1>Spec-sheet: {esc(title)}</h1>",
        f"<p>{len(sheet.unit_tests)} unit test(s); {esc(verdict)}.</p>",
        verdict_lines(sheet),
        "<h2>Verified error per unit test and ε</h2>",
        summary_table(sheet),
        "<h2>Per ε</h2>",
        detail_table(sheet),
        "<h2>Deployment ranges (paper §2.4)</h2>",
        (
            "<p class='note'>Per tested coordinate and ε: [μ − ε − σ, μ + ε + σ] over the codes named. "
            "An input whose code lies inside is within the verified range of operation "
            "(<code>auditai check</code>).</p>"
        ),
        deployment_table(sheet),
        deployment_section(sheet, esc),
        "<h2>Curves and decoded images</h2>",
    ]
    if decoder is not None and z is None:
        body.append("<p class='note'>The model has a decoder; pass codes to render image strips.</p>")
    for ut in sheet.unit_tests:
        body.append(f"<h3>{esc(ut.name)}{'' if ut.target == 'head' else ' (target ' + esc(ut.target_text) + ')'}</h3>")
        body.append(unit_test_figures(ut, decoder, z, n_samples))
    body.append("<h2>Provenance</h2>")
    body.append(meta_table(sheet))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        f"<title>Spec-sheet: {esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
