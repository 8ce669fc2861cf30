"""The spec-sheet record: JSON round trip, entries across processes, merging, bad files."""

from __future__ import annotations

import json

import pytest
from .conftest import build_sheet, make_result

from auditai.errors import SheetError
from auditai.latent import Direction
from auditai.sheet import SCHEMA, SheetEntry, SpecSheet
from auditai.suite import UnitTest


def test_json_round_trip_is_equal_and_stable(sheet, tmp_path):
    text = sheet.to_json(tmp_path / "sheet.json")
    back = SpecSheet.from_json(tmp_path / "sheet.json")
    assert back == sheet
    assert back.to_json() == text  # stable key order and values
    d = json.loads(text)
    assert list(d)[:2] == ["schema", "created"] and d["schema"] == SCHEMA
    assert [ut["name"] for ut in d["unit_tests"]] == ["pose", "expression"]
    pose = d["unit_tests"][0]
    assert [r["eps"] for r in pose["rows"]] == [0.5, 1.0, 2.0]
    assert [r["gated"] for r in pose["rows"]] == [True, True, False]
    assert [r["passed"] for r in pose["rows"]] == [True, False, False]
    # the deployment block carries the ranges per ε for programs that read the JSON
    assert [r["eps"] for r in pose["deployment"]["ranges"]] == [0.5, 1.0, 2.0]


def test_rows_hold_the_figures(sheet):
    pose = sheet.unit_test("pose")
    r = pose.row(1.0)
    assert r.verified_error == 0.27 and r.falsified_fraction == 0.135
    assert r.unknown_fraction == pytest.approx(0.135) and r.n == 20
    assert r.median_certified_radius == 1.0 and r.threshold_error == 0.2
    exp = sheet.unit_test("expression").row(1.0)
    assert exp.threshold_error == pytest.approx(0.15) and exp.passed is True
    assert not sheet.passed


def test_entries_cross_processes_as_json_and_merge_once(codes):
    direct = build_sheet(codes)
    ut = UnitTest(name="pose", set={"direction": "pose"}, eps=(0.5, 1.0), report_eps=(2.0,), max_verified_error=0.2)
    import torch

    v = Direction(torch.tensor([3.0, 4.0, 0.0, 0.0]), "pose")
    # two "workers": each verified part of the ε values and sends plain JSON
    e1 = SheetEntry.from_result(ut, make_result([0.5], [0.05]), v, train_codes=codes)
    e2 = SheetEntry.from_result(ut, make_result([1.0, 2.0], [0.27, 0.5]), v, train_codes=codes)
    wire = [json.loads(json.dumps(e.to_dict())) for e in (e2, e1, e2)]  # e2 delivered twice
    merged = SpecSheet(model=direct.model, created=direct.created)
    for w in wire:
        merged.add(w)
    pose = merged.unit_test("pose")
    assert [r.eps for r in pose.rows] == [0.5, 1.0, 2.0]
    assert [r.verified_error for r in pose.rows] == [0.05, 0.27, 0.5]
    assert pose.deployment == direct.unit_test("pose").deployment
    assert len(merged.unit_tests) == 1


def test_merge_refuses_different_models_and_sets(sheet, codes):
    other = build_sheet(codes)
    other.model = dict(other.model, sha256="cd" * 32)
    with pytest.raises(SheetError, match="different models"):
        sheet.merge(other)
    clash = build_sheet(codes)
    clash.unit_test("pose").set_value = [0.0, 0.0, 1.0, 0.0]
    with pytest.raises(SheetError, match="different sets"):
        sheet.merge(clash)


def test_bad_files_name_what_is_wrong(tmp_path, sheet):
    p = tmp_path / "s.json"
    p.write_text("{not json")
    with pytest.raises(SheetError, match="not JSON"):
        SpecSheet.from_json(p)
    d = sheet.to_dict()
    d["schema"] = "auditai.spec-sheet/99"
    p.write_text(json.dumps(d))
    with pytest.raises(SheetError, match="unknown schema"):
        SpecSheet.from_json(p)
    d = json.loads(sheet.to_json())
    del d["unit_tests"][1]["rows"][0]["verified_error"]
    with pytest.raises(SheetError, match=r"unit_tests\[1\]\.rows\[0\]: missing key 'verified_error'"):
        SpecSheet.from_dict(d)
    with pytest.raises(SheetError, match="cannot read"):
        SpecSheet.from_json(tmp_path / "missing.json")


def test_write_by_suffix(sheet, tmp_path, toy_model, codes):
    for name in ("a.json", "a.md", "a.html", "a.modelcard.json"):
        sheet.write(tmp_path / name, model=toy_model, codes=codes)
        assert (tmp_path / name).stat().st_size > 100
    assert SpecSheet.from_json(tmp_path / "a.json") == sheet
    assert "quantitative_analysis" in json.loads((tmp_path / "a.modelcard.json").read_text())
    with pytest.raises(SheetError, match="unknown report format"):
        sheet.write(tmp_path / "a.txt")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_merge_keeps_the_deployment_section(sheet):
    """A worker's sheet with a deployment section (auditai check --into) merged into one without
    it keeps the section; the receiving sheet's own section wins when both have one."""
    section = {"version": 1, "inputs": "shifted.npz", "unit_tests": []}
    other = SpecSheet.from_dict(sheet.to_dict())
    other.deployment_report = dict(section)
    mine = SpecSheet.from_dict(sheet.to_dict())
    assert mine.deployment_report is None
    mine.merge(other)
    assert mine.deployment_report == section
    third = SpecSheet.from_dict(sheet.to_dict())
    third.deployment_report = {"version": 1, "inputs": "other.npz", "unit_tests": []}
    mine.merge(third)
    assert mine.deployment_report == section
