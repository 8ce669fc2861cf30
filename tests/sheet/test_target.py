"""The spec-sheet names a unit test's target: classifier∘decoder (the black-box audit,
auditai.blackbox) on its record, JSON, terminal, Markdown and HTML; old sheets load as 'head'."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import torch
from .conftest import ToyModel, make_result

from auditai.latent import Direction
from auditai.sheet import SpecSheet
from auditai.suite import UnitTest

IMAGE = np.linspace(0.0, 1.0, 36).reshape(1, 6, 6).tolist()  # 1×6×6, a ramp


def _sheet(codes, target="classifier", image=IMAGE):
    v = torch.tensor([1.0, 0.0, 0.0, 0.0])
    cex = [{"sample": 2, "eps_index": 0, "eps": 0.5, "delta": [0.4], "z": (codes[2] + 0.4 * v.numpy()).tolist(),
            "row": 0, "row_name": "keep class 0", "margin": -0.2, "outputs": [0.1, 0.3], "image": image}]
    ut = UnitTest(name="bb", set={"direction": "bright"}, eps=(0.5,), max_verified_error=0.1, target=target)
    head = UnitTest(name="latent", set={"direction": "bright"}, eps=(0.5,), max_verified_error=0.1)
    return SpecSheet.from_results(
        [(ut, make_result([0.5], [0.3], counterexamples=cex), Direction(v, "bright")),
         (head, make_result([0.5], [0.05]), Direction(v, "bright"))],
        model=ToyModel(), train_codes=codes, suite="toy")


def test_record_keeps_the_target_and_json_round_trips(codes, tmp_path):
    sheet = _sheet(codes)
    assert [ut.target for ut in sheet.unit_tests] == ["classifier", "head"]
    d = json.loads(sheet.to_json())
    assert [u["target"] for u in d["unit_tests"]] == ["classifier", "head"]
    assert d["unit_tests"][0]["counterexamples"][0]["image"] == IMAGE
    back = SpecSheet.from_json(sheet.to_json())
    assert back == sheet and back.unit_test("bb").target == "classifier"


def test_old_sheets_without_target_load_as_head(codes):
    d = json.loads(_sheet(codes).to_json())
    for u in d["unit_tests"]:
        del u["target"]
    back = SpecSheet.from_json(json.dumps(d))
    assert [ut.target for ut in back.unit_tests] == ["head", "head"]
    assert back.unit_test("bb").set_text == back.unit_test("bb").set_description


def test_entries_carry_the_target_across_processes(codes):
    from auditai.sheet.entry import SheetEntry

    v = torch.tensor([1.0, 0.0, 0.0, 0.0])
    ut = UnitTest(name="bb", set={"direction": "bright"}, eps=(0.5,), max_verified_error=0.1, target="classifier")
    e = SheetEntry.from_result(ut, make_result([0.5], [0.3]), Direction(v, "bright"), model=ToyModel())
    wire = json.loads(json.dumps(e.to_dict()))
    assert wire["target"] == "classifier"
    s = SpecSheet()
    s.add(wire)
    assert s.unit_test("bb").target == "classifier"
    old = {k: val for k, val in wire.items() if k != "target"}  # an older worker's entry
    assert SheetEntry.from_dict(old).target == "head"


def test_merging_the_same_name_with_another_target_is_refused(codes):
    import pytest

    from auditai.errors import SheetError

    a, b = _sheet(codes), _sheet(codes, target="head")
    with pytest.raises(SheetError, match="classifier∘decoder"):
        a.merge(b)


def test_terminal_and_markdown_name_the_target(codes):
    from auditai.sheet.terminal import rows

    sheet = _sheet(codes)
    by_name = {r[0]: r for r in rows(sheet)}
    assert "classifier∘decoder" in by_name["bb"][1]
    assert "classifier" not in by_name["latent"][1]
    md = sheet.to_markdown()
    bb = next(l for l in md.splitlines() if l.startswith("| bb |"))
    assert "classifier∘decoder" in bb.split("|")[2]
    latent = next(l for l in md.splitlines() if l.startswith("| latent |"))
    assert "classifier" not in latent


def _pngs(page: str) -> dict[str, bytes]:
    return {alt: base64.b64decode(data) for data, alt in
            re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]*)"', page)}


def test_html_names_the_target_and_shows_the_stored_image_without_a_decoder(codes):
    sheet = _sheet(codes)
    page = sheet.to_html()  # no model: the stored g(z) is all there is to show
    assert "<h3>bb (target classifier∘decoder)</h3>" in page and "<h3>latent</h3>" in page
    summary = page.split("<table class='summary'>")[1].split("</table>")[0]
    assert summary.count("target classifier∘decoder") == 1
    imgs = _pngs(page)
    assert "decoded counterexamples of bb" in imgs
    assert imgs["decoded counterexamples of bb"][:8] == b"\x89PNG\r\n\x1a\n"
    assert not any("latent" in k and "counterexample" in k for k in imgs)
    assert "sample 2 at ε=0.5: margin -0.2" in page


def test_html_without_stored_images_shows_none(codes):
    page = _sheet(codes, image=None).to_html()
    assert "decoded counterexamples of bb" not in _pngs(page)


def test_html_with_a_decoder_and_codes_pairs_originals_with_counterexamples(codes):
    page = _sheet(codes).to_html(model=ToyModel(), codes=codes)
    imgs = _pngs(page)
    assert "counterexamples of bb" in imgs  # decoded z0 beside z through the model's decoder
