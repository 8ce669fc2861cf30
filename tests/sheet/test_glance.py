"""The sheet tells the truth at a glance (issue 15, item 4): radii at the search limit read
"≥ r", no folder of the building machine appears, figure labels do not overlap, and the HTML
opens with one verdict line per unit test."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from .conftest import D, ToyModel, build_sheet, make_result

from auditai.latent import Direction
from auditai.sheet import SpecSheet, plots
from auditai.suite import UnitTest
from auditai.verify import verify

V = torch.tensor([3.0, 4.0, 0.0, 0.0])


def _sheet(radii, max_radius, codes, *, path=None, model=None):
    ut = UnitTest(name="pose", set={"direction": "pose"}, eps=(0.5, 1.0), max_verified_error=0.2, path=path)
    res = make_result([0.5, 1.0], [0.05, 0.1])
    res["certified_radius"] = list(radii)
    res["max_radius"] = max_radius
    return SpecSheet.from_results([(ut, res, Direction(V, "pose"))], model=model or ToyModel(), train_codes=codes)


def test_a_median_radius_at_the_search_limit_reads_at_least(codes):
    capped = _sheet([1.0, 1.0, 0.4], 1.0, codes)  # median 1.0 = the limit: the radius is ≥ 1
    exact = _sheet([0.3, 0.6, 0.9], 1.0, codes)  # median 0.6 < the limit: a measured value
    r = capped.unit_test("pose").row(1.0)
    assert r.median_certified_radius == 1.0 and r.radius_at_cap is True
    assert exact.unit_test("pose").row(1.0).radius_at_cap is False
    term = capped.to_terminal()
    assert "≥ 1" in term and "≥" not in exact.to_terminal()
    md = capped.to_markdown()
    assert "| ≥ 1 |" in md and "≥ 0.6" not in exact.to_markdown() and "| 0.6 |" in exact.to_markdown()
    page = capped.to_html()
    assert "<td>≥ 1</td>" in page and "<td>0.6</td>" in exact.to_html()
    # the flag survives the JSON form, and an old sheet without the key reads as not capped
    back = SpecSheet.from_json(capped.to_json())
    assert back == capped and back.unit_test("pose").row(1.0).radius_at_cap is True
    d = json.loads(capped.to_json())
    for row in d["unit_tests"][0]["rows"]:
        del row["radius_at_cap"]
    assert SpecSheet.from_dict(d).unit_test("pose").row(1.0).radius_at_cap is False


def test_a_head_robust_beyond_the_limit_gets_at_least_from_verify(codes):
    """End to end: a head that ignores the tested direction is certified at every radius, so
    verify's bisection stops at max_radius and the sheet must not print it as the radius."""
    head = nn.Linear(D, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, -1.0, 0.0]]))
        head.bias.zero_()
    z = torch.tensor(codes[:8], dtype=torch.float32)
    y = (z[:, 2] < 0).long()  # the head's own prediction: clean error 0
    kind = Direction(V, "pose")  # moves z[0], z[1] only: the logits never change
    res = verify(head, z, y, kind, [0.5, 1.0], attack=False, max_radius=1.0, device="cpu")
    assert torch.all(res.certified_radius == 1.0)
    ut = UnitTest(name="pose", set={"direction": "pose"}, eps=(0.5, 1.0), max_verified_error=0.2)
    sheet = SpecSheet.from_results([(ut, res, kind)], model=ToyModel(), train_codes=codes)
    assert sheet.unit_test("pose").row(1.0).radius_at_cap
    assert "≥ 1" in sheet.to_terminal()


def test_no_folder_of_the_building_machine_in_the_sheet(codes, tmp_path):
    model = ToyModel()
    model.source = str(tmp_path / "models" / "toy.auditai")
    data = type("D", (), {"z": torch.tensor(codes), "content_hash": "cd" * 32,
                          "source": str(tmp_path / "data" / "eval.npz")})()
    ut = UnitTest(name="pose", set={"direction": "pose"}, eps=(1.0,), max_verified_error=0.2,
                  path=str(tmp_path / "suites" / "test_pose.py"), line=7)
    sheet = SpecSheet.from_results([(ut, make_result([1.0], [0.1]), Direction(V, "pose"))], model=model, data=data,
                                   suite=f"{tmp_path / 'suites' / 'shapes.yaml'}, tests.test_pose")
    text = sheet.to_json() + sheet.to_markdown() + sheet.to_html()
    assert str(tmp_path) not in text and "/models/" not in text
    assert sheet.suite == "shapes.yaml, tests.test_pose"
    assert sheet.model["source"] == "toy.auditai" and sheet.model["sha256"] == "ab" * 32
    assert sheet.data["source"] == "eval.npz" and sheet.data["sha256"] == "cd" * 32
    # the blocks as the plugin passes them (dicts) lose their folders too
    blocks = SpecSheet.from_results([], model={"source": model.source, "sha256": "ab" * 32},
                                    data={"source": data.source, "sha256": "cd" * 32, "n": 40})
    assert blocks.model["source"] == "toy.auditai" and blocks.data == {"source": "eval.npz", "sha256": "cd" * 32, "n": 40}
    ut_sheet = sheet.unit_test("pose")
    assert ut_sheet.path == "test_pose.py" and ut_sheet.line == 7
    assert ut_sheet.deployment.source == "evaluation data eval.npz"


def _label_boxes(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    ax = fig.axes[0]
    boxes = sorted((t.get_window_extent(r) for t in ax.get_xticklabels() if t.get_text()), key=lambda b: b.x0)
    return boxes, ax.title.get_window_extent(r), fig.bbox.width


@pytest.mark.parametrize("pairs", [1, 4])
def test_counterexample_grid_captions_do_not_overlap(pairs, toy_model):
    z0 = np.zeros((pairs, D))
    z = z0 + 1.0
    grid = plots.counterexample_grid(toy_model.decoder, z0, z)
    fig = plots.image_figure(grid, "a unit test with a long name: counterexamples", ["original", "counterexample"])
    boxes, title, width = _label_boxes(fig)
    assert len(boxes) == 2 and boxes[0].x1 < boxes[1].x0  # the two captions apart
    assert all(0 <= b.x0 and b.x1 <= width for b in [*boxes, title])  # and inside the figure


def test_strip_labels_do_not_overlap(toy_model):
    offsets = plots.strip_offsets([0.25, 0.5, 1.0, 2.0, 4.0])
    grid, ts = plots.image_strip(toy_model.decoder, np.zeros((1, D)), np.eye(D)[0], [0.25, 0.5, 1.0, 2.0, 4.0])
    boxes, title, width = _label_boxes(plots.strip_figure(grid, ts, "pose: t along 'pose' from −ε to +ε", rows=1))
    assert len(boxes) == len(offsets)
    assert all(a.x1 < b.x0 for a, b in itertools.pairwise(boxes))
    assert all(0 <= b.x0 and b.x1 <= width for b in [*boxes, title])


def test_html_opens_with_one_verdict_line_per_unit_test(codes):
    sheet = build_sheet(codes)  # pose fails at ε = 1 (0.27 > 0.2); expression passes (0.1 ≤ 0.15)
    page = sheet.to_html()
    top = page[: page.index("<table")]  # before any table
    lines = re.findall(r"<li>(.*?)</li>", top)
    assert len(lines) == 2
    pose, expr = lines
    assert "FAIL" in pose and "<b>pose</b>" in pose and "worst ε = 1," in pose
    assert "verified error 0.27 &gt; gate 0.2" in pose or "verified error 0.27 > gate 0.2" in pose
    assert "pass" in expr and "<b>expression</b>" in expr and "verified error 0.1 ≤ gate 0.15" in expr
