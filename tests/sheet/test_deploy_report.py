"""The deployment report (paper §2.4, §4.2): numbers against hand counts, the sheet section,
`auditai check --labels/--into`, GAN-inverted inputs flagged, and bad inputs as clear errors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from torch import nn

from auditai.commands import check as check_cmd
from auditai.deploy_report import (
    DeploymentReport,
    attach,
    deployment_report,
    section,
    subset_metrics,
)
from auditai.errors import AuditaiError, SheetError
from auditai.model import AuditModel, load_model, save_model
from auditai.sheet import SpecSheet

from .conftest import build_sheet


def test_subset_metrics_by_hand():
    # confusion (rows true, columns predicted): [[1,0,1],[1,2,0],[0,0,1]]
    m = subset_metrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], 3)
    assert m.n == 6 and m.confusion == [[1, 0, 1], [1, 2, 0], [0, 0, 1]]
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.precision == pytest.approx((1 / 2 + 2 / 2 + 1 / 2) / 3)
    assert m.recall == pytest.approx((1 / 2 + 2 / 3 + 1 / 1) / 3)
    # class 1 never predicted: no precision of its own (left out); class 2 absent: no recall
    m = subset_metrics([0, 0], [0, 1], 3)
    assert m.precision == pytest.approx(0.5) and m.recall == pytest.approx((1.0 + 0.0) / 2)
    # an empty subset: null, not a division by zero
    m = subset_metrics([], [], 3)
    assert (m.n, m.accuracy, m.precision, m.recall) == (0, None, None, None)


def _codes_in_out(sheet, codes):
    """Four codes: 0, 1 inside every range; 2, 3 outside 'pose' (inside 'expression')."""
    pose = sheet.unit_test("pose")
    _, hi = pose.deployment_range(0.5)
    vhat = np.array([0.6, 0.8, 0.0, 0.0])
    base = np.mean(codes, axis=0)
    t0 = float(pose.projection[0] @ base)
    out = base + vhat * (hi[0] - t0 + 0.5)
    return np.stack([base, base + 0.01 * vhat, out, out + 0.01 * vhat])


def test_report_numbers_by_hand(sheet, codes):
    z = _codes_in_out(sheet, codes)
    y = np.array([0, 1, 0, 1])
    pred = np.array([0, 1, 0, 0])  # inside: both right; outside: one of two
    rep = deployment_report(sheet, z, y, pred, num_classes=2)
    pose, expr = rep.unit_tests
    assert (pose.name, pose.eps, pose.coverage) == ("pose", 0.5, 0.5)
    assert (expr.name, expr.eps, expr.coverage) == ("expression", 1.0, 1.0)
    assert (pose.inside.n, pose.inside.accuracy, pose.inside.precision, pose.inside.recall) == (2, 1.0, 1.0, 1.0)
    # outside: y [0, 1], pred [0, 0]: class 0 precision 1/2, class 1 never predicted; recall 1, 0
    assert (pose.outside.n, pose.outside.accuracy) == (2, 0.5)
    assert pose.outside.precision == pytest.approx(0.5) and pose.outside.recall == pytest.approx(0.5)
    # all: y [0,1,0,1], pred [0,1,0,0]: precision (2/3 + 1)/2, recall (1 + 1/2)/2
    assert pose.all.accuracy == 0.75
    assert pose.all.precision == pytest.approx((2 / 3 + 1) / 2) and pose.all.recall == pytest.approx(0.75)
    assert expr.outside.n == 0 and expr.outside.accuracy is None
    assert rep.overall.coverage == 0.5 and rep.overall.inside.accuracy == 1.0
    # the same inside/outside as the deployment check itself
    assert sheet.check(z).inside_matrix(["pose", "expression"])[:, 0].tolist() == [True, True, False, False]
    # an untrusted code (inversion flagged it) counts outside every range
    rep = deployment_report(sheet, z, y, pred, num_classes=2, trusted=[True, False, True, True])
    assert rep.unit_tests[1].coverage == 0.75 and rep.overall.coverage == 0.25
    # the curve: coverage grows with ε, ε = 0 and every measured ε are on it
    covs = [c["coverage"] for c in rep.curve]
    assert covs == sorted(covs) and {0.0, 0.5, 1.0, 2.0} <= {c["eps"] for c in rep.curve}
    text = rep.to_text()
    assert "macro-averaged" in text and "all unit tests" in text
    with pytest.raises(SheetError, match="labels outside"):
        deployment_report(sheet, z, np.array([0, 1, 2, 0]), pred, num_classes=2)
    with pytest.raises(SheetError, match="must match"):
        deployment_report(sheet, z, y[:3], pred, num_classes=2)


def test_the_sheet_carries_the_section_and_old_sheets_still_load(sheet, codes):
    old_json = sheet.to_json()
    assert '"deployment_report"' not in old_json and section(SpecSheet.from_json(old_json)) is None
    z = _codes_in_out(sheet, codes)
    rep = deployment_report(sheet, z, np.array([0, 1, 0, 1]), np.array([0, 1, 0, 0]), num_classes=2, inputs=["new.npz"])
    attach(sheet, rep)
    back = SpecSheet.from_json(sheet.to_json())
    assert back == sheet and section(back).overall.coverage == 0.5
    assert json.loads(sheet.to_json())["deployment"]["schema"] == "auditai.deployment-report/1"
    html = sheet.to_html()
    assert "Deployment report" in html and "accuracy against coverage" in html
    assert "Deployment report" in sheet.to_markdown() and "macro-averaged" in sheet.to_markdown()
    d = json.loads(sheet.to_json())
    d["deployment"]["schema"] = "auditai.deployment-report/9"
    with pytest.raises(SheetError, match="deployment.*unknown schema"):
        SpecSheet.from_dict(d)
    del d["deployment"]["schema"]
    d["deployment"] = {"schema": "auditai.deployment-report/1"}
    with pytest.raises(SheetError, match="malformed deployment report"):
        SpecSheet.from_dict(d)
    assert DeploymentReport.from_dict(rep.to_dict()).to_dict() == rep.to_dict()


# --------------------------------------------------------------------------- the command
def run(argv):
    p = argparse.ArgumentParser()
    check_cmd.add_arguments(p)
    args = p.parse_args(argv)
    try:
        return check_cmd.run(args)
    except AuditaiError as e:
        print(f"error: {e}")
        return 2


@pytest.fixture
def model_files(tmp_path, codes):
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(4, 2))
    save_model(tmp_path / "m.auditai", AuditModel(head))
    model = load_model(tmp_path / "m.auditai")
    sheet = build_sheet(codes, model=model)
    sheet.to_json(tmp_path / "sheet.json")
    z = _codes_in_out(sheet, codes)
    with torch.no_grad():
        pred = head(torch.tensor(z, dtype=torch.float32)).argmax(1).numpy()
    y = pred.copy()
    y[3] = 1 - y[3]  # one mistake, outside the range
    np.savez(tmp_path / "new.npz", z=z, y=y)
    np.savez(tmp_path / "nolabels.npz", z=z)
    np.savez(tmp_path / "badlabels.npz", z=z, y=np.array([0, 1, 5, 0]))
    return tmp_path


def test_check_labels_reports_and_writes_into_the_sheet(model_files, capsys):
    f = model_files
    rc = run(["--sheet", str(f / "sheet.json"), "--model", str(f / "m.auditai"), "--labels", "--json",
              "--into", str(f / "with_report.json"), str(f / "new.npz")])
    assert rc == 1  # two inputs are outside 'pose'
    out = json.loads(capsys.readouterr().out)
    rep = out["deployment_report"]
    assert rep["overall"]["coverage"] == 0.5
    assert rep["overall"]["inside"]["accuracy"] == 1.0 and rep["overall"]["outside"]["accuracy"] == 0.5
    assert rep["overall"]["all"]["accuracy"] == 0.75 and rep["inputs"] == [str(f / "new.npz")]
    back = SpecSheet.from_json(f / "with_report.json")
    assert section(back).to_dict() == rep
    assert run(["--sheet", str(f / "sheet.json"), "--model", str(f / "m.auditai"), "--labels",
                str(f / "new.npz")]) == 1
    text = capsys.readouterr().out
    assert "deployment report on 4 labelled input(s)" in text and "macro-averaged" in text


def test_check_labels_bad_inputs_are_clear_errors(model_files, capsys, tmp_path, codes):
    f = model_files
    base = ["--sheet", str(f / "sheet.json"), "--model", str(f / "m.auditai"), "--labels"]
    assert run([*base, str(f / "nolabels.npz")]) == 2
    assert "nolabels.npz: no key 'y' (labels) for --labels" in capsys.readouterr().out
    assert run([*base, str(f / "badlabels.npz")]) == 2
    assert "outside the head's classes 0..1" in capsys.readouterr().out
    assert run(["--sheet", str(f / "sheet.json"), "--labels", str(f / "new.npz")]) == 2
    assert "--labels needs --model" in capsys.readouterr().out
    assert run(["--sheet", str(f / "sheet.json"), "--model", str(f / "m.auditai"), "--into", "x.json",
                str(f / "new.npz")]) == 2
    assert "give --labels" in capsys.readouterr().out
    # a sheet for another model: its content hash differs
    torch.manual_seed(1)
    save_model(tmp_path / "other.auditai", AuditModel(nn.Sequential(nn.Linear(4, 2))))
    assert run(["--sheet", str(f / "sheet.json"), "--model", str(tmp_path / "other.auditai"), "--labels",
                str(f / "new.npz")]) == 2
    assert "is not the model the spec-sheet" in capsys.readouterr().out


def test_check_inverts_inputs_of_a_decoder_only_model_and_flags_the_unrepresentable(tmp_path, codes, capsys):
    torch.manual_seed(0)
    dec = nn.Sequential(nn.Linear(4, 16), nn.Unflatten(1, (1, 4, 4)))
    model = AuditModel(nn.Sequential(nn.Linear(4, 2)), decoder=dec,
                       metadata={"inversion": {"steps": 150, "lr": 0.1, "restarts": 2}})
    save_model(tmp_path / "g.auditai", model)
    loaded = load_model(tmp_path / "g.auditai")
    sheet = build_sheet(codes, model=loaded)
    sheet.to_json(tmp_path / "sheet.json")
    with torch.no_grad():
        x = dec(torch.tensor(codes[:3], dtype=torch.float32))
    x = torch.cat([x, 5 * torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))])
    np.savez(tmp_path / "x.npz", x=x.numpy(), y=np.zeros(4, dtype=np.int64))
    rc = run(["--sheet", str(tmp_path / "sheet.json"), "--model", str(tmp_path / "g.auditai"), "--labels",
              "--json", str(tmp_path / "x.npz")])
    assert rc == 1
    out = json.loads(capsys.readouterr().out)
    assert out["trusted"] == [True, True, True, False]
    rc_info = out["deployment_report"]["reconstruction"]
    assert rc_info["n_flagged"] == 1 and rc_info["max_relative_error"] == 0.25
    assert out["deployment_report"]["overall"]["inside"]["n"] <= 3  # the flagged input is not inside
    # a looser threshold trusts it; the text names the flagged input
    run(["--sheet", str(tmp_path / "sheet.json"), "--model", str(tmp_path / "g.auditai"),
         "--max-recon-error", "0.05", str(tmp_path / "x.npz")])
    assert "x.npz[3]" in capsys.readouterr().out
