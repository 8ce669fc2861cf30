"""Renderers: Markdown and HTML tables, escaping of hostile names, plots, model card,
and the HTML page rendered by headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from .conftest import HOSTILE, build_sheet

from auditai.sheet import plots

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def hostile(codes):
    return build_sheet(codes, name2=HOSTILE)


def test_markdown_table_like_the_paper(sheet):
    md = sheet.to_markdown()
    lines = md.splitlines()
    head = next(l for l in lines if l.startswith("| unit test | set |"))
    assert "ε = 0.5 | ε = 1 | ε = 2 | deployment range" in head
    pose = next(l for l in lines if l.startswith("| pose | direction 'pose'"))
    cells = [c.strip() for c in pose.strip("|").split("|")]
    assert cells[2:5] == ["**0.05**", "**0.27 ✗**", "0.5"]  # gated bold, ✗ only over a gate
    assert "(ε = 0.5)" in cells[5]
    assert "model sha256 abababababab" in md and "torch" in md
    assert "## Per ε" in md and "| pose | 1 | 0.04 | 0.27 | 0.135 |" in md


def test_terminal_table(sheet):
    from auditai.sheet.terminal import lines

    out = list(lines(sheet, ["sheet.json"]))
    assert out[0].split()[:3] == ["unit", "test", "set"]
    fail = next(l for l in out if "FAIL" in l)
    assert fail.split()[:5] == ["pose", "direction", "'pose'", "1", "0.04"]
    assert out[-1] == "reports: sheet.json"


def test_hostile_name_is_escaped(hostile, toy_model, codes):
    page = hostile.to_html(model=toy_model, codes=codes)
    assert HOSTILE not in page and "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "default-src 'none'" in page  # and no script could run anyway
    md = hostile.to_markdown()
    assert HOSTILE not in md and "&lt;script&gt;" in md


def test_html_is_self_contained_with_plots(sheet, toy_model, codes):
    page = sheet.to_html(model=toy_model, codes=codes, n_samples=3)
    assert not re.search(r"(src|href)=[\"'](https?:|//)", page)
    imgs = re.findall(r"<img src=\"data:image/png;base64,", page)
    # curves for 2 unit tests, strips: 1 for the direction + 2 for the dims, 1 counterexample grid
    assert len(imgs) == 2 + 3 + 1
    assert page.count("<table") == 4
    without = sheet.to_html()
    assert len(re.findall(r"<img ", without)) == 2  # curves only, no decoder


def test_image_strip_moves_along_the_direction(toy_model):
    z0 = np.zeros((2, 4))
    z0[1, 0] = 1.0
    grid, ts = plots.image_strip(toy_model.decoder, z0, np.array([1.0, 0, 0, 0]), [1.0, 2.0])
    assert ts == [-2.0, -1.0, 0.0, 1.0, 2.0]
    pad = 1
    assert grid.shape == (2 * 6 + pad, 5 * 6 + 4 * pad, 3)
    # the toy decoder paints sigmoid(z[0]): brightness grows along the row, and row 2 is brighter
    row0 = [grid[0, j * 7, 0] for j in range(5)]
    row1 = [grid[7, j * 7, 0] for j in range(5)]
    assert row0 == sorted(row0) and row0[0] < row0[-1]
    assert row0[2] == pytest.approx(0.5, abs=1e-6) and all(b > a for a, b in zip(row0, row1))
    pairs = plots.counterexample_grid(toy_model.decoder, z0, z0 + 1)
    assert pairs.shape == (13, 13, 3)
    with pytest.raises(ValueError, match="N×C×H×W"):
        plots.to_images(np.zeros((2, 3)))


def test_model_card_fields(sheet):
    card = sheet.to_model_card()
    pm = card["quantitative_analysis"]["performance_metrics"]
    ve = [m for m in pm if m["type"] == "verified error"]
    assert len(ve) == 4 and {"type", "value", "slice"} <= set(ve[0])
    assert ve[1]["threshold"] == "0.2" and ve[1]["confidence_interval"]["upper_bound"] == "0.27"
    g = card["guarantees"]["unit_tests"]
    assert g[1]["eps"] == 1.0 and g[1]["passed"] is False and g[1]["method"] == "crown-ibp"
    assert g[1]["verdicts"]["verified"] == pytest.approx(0.73)
    assert g[1]["deployment_range"]["coordinates"] == ["t along 'pose'"]


def _chromium(args, tmp_path):
    base = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
    ]
    env = dict(os.environ, HOME=str(tmp_path))
    return subprocess.run(base + args, check=False, capture_output=True, text=True, timeout=90, env=env)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing: apt-get install -y chromium")
def test_chromium_renders_tables_and_plots(hostile, toy_model, codes, tmp_path):
    page = tmp_path / "sheet.html"
    hostile.to_html(page, model=toy_model, codes=codes)
    shot = tmp_path / "shot.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()], tmp_path)
    assert shot.exists(), r.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    # non-blank: the top band (title and summary table) and the plots further down have ink
    assert (img[:300] < 128).mean() > 0.01
    assert (img[600:1400] < 250).mean() > 0.02
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path).stdout
    assert dom.count("<table") == 4 and dom.count('src="data:image/png;base64,') == 6
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "<script>alert" not in dom
