"""`auditai check` and `auditai diff`: verdicts, JSON output and exit codes."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from .conftest import build_sheet

from auditai.commands import check as check_cmd
from auditai.commands import diff as diff_cmd
from auditai.errors import AuditaiError


def run(mod, argv):
    """As auditai.cli.main does for one command: parse, run, errors → 2."""
    p = argparse.ArgumentParser()
    mod.add_arguments(p)
    args = p.parse_args(argv)
    try:
        return mod.run(args)
    except AuditaiError as e:
        print(f"error: {e}")
        return 2


@pytest.fixture
def files(tmp_path, sheet, codes):
    s = tmp_path / "sheet.json"
    sheet.to_json(s)
    pose = sheet.unit_test("pose")
    _, hi = pose.deployment_range(0.5)
    vhat = np.array([0.6, 0.8, 0.0, 0.0])
    base = np.mean(codes, axis=0)
    t0 = float(pose.projection[0] @ base)
    inside = np.stack([base, base + vhat * (hi[0] - t0 - 0.01)])
    outside = np.stack([base, base + vhat * (hi[0] - t0 + 0.01)])
    np.savez(tmp_path / "in.npz", z=inside)
    torch.save({"z": torch.tensor(outside)}, tmp_path / "out.pt")
    np.savez(tmp_path / "x_only.npz", x=inside)
    return tmp_path


def test_check_inside_exits_0(files, capsys):
    assert run(check_cmd, ["--sheet", str(files / "sheet.json"), str(files / "in.npz")]) == 0
    assert "all 2 input(s) inside" in capsys.readouterr().out


def test_check_outside_exits_1_and_names_the_input(files, capsys):
    rc = run(check_cmd, ["--sheet", str(files / "sheet.json"), "--json", str(files / "in.npz"), str(files / "out.pt")])
    assert rc == 1
    out = json.loads(capsys.readouterr().out)
    assert out["n_inputs"] == 4 and out["n_outside"] == 1 and not out["all_inside"]
    bad = [c for c in out["checks"] if not c["inside"]]
    assert len(bad) == 1 and bad[0]["unit_test"] == "pose" and bad[0]["input"] == 3
    assert out["sources"][3].endswith("out.pt[1]") and bad[0]["verified_error"] == 0.05
    # a larger ε widens the range: everything inside
    assert run(check_cmd, ["--sheet", str(files / "sheet.json"), "--eps", "1", str(files / "out.pt")]) == 0


def test_check_errors_exit_2(files, capsys, tmp_path):
    sheet = str(files / "sheet.json")
    assert run(check_cmd, ["--sheet", sheet, str(files / "x_only.npz")]) == 2
    assert "give --model" in capsys.readouterr().out
    np.savez(tmp_path / "wrong_d.npz", z=np.zeros((2, 3)))
    assert run(check_cmd, ["--sheet", sheet, str(tmp_path / "wrong_d.npz")]) == 2
    assert "d=3" in capsys.readouterr().out
    assert run(check_cmd, ["--sheet", str(tmp_path / "nope.json"), str(files / "in.npz")]) == 2
    np.savez(tmp_path / "nokey.npz", q=np.zeros((2, 4)))
    assert run(check_cmd, ["--sheet", sheet, str(tmp_path / "nokey.npz")]) == 2
    assert "no key 'z'" in capsys.readouterr().out


def test_check_through_the_cli(files):
    from auditai.cli import main

    assert main(["check", "--sheet", str(files / "sheet.json"), str(files / "in.npz")]) == 0
    assert main(["check", "--sheet", str(files / "sheet.json"), str(files / "out.pt")]) == 1
    assert main(["check", "--sheet", str(files / "sheet.json"), str(files / "missing.npz")]) == 2


def test_diff_flags_a_regression_not_a_non_regression(tmp_path, codes, capsys):
    old = build_sheet(codes, pose_verified=(0.05, 0.15, 0.5))
    better = build_sheet(codes, pose_verified=(0.04, 0.155, 0.45))  # +0.005 < tol: not a regression
    worse = build_sheet(codes, pose_verified=(0.1, 0.15, 0.5))  # +0.05 at ε = 0.5
    old.to_json(tmp_path / "old.json")
    better.to_json(tmp_path / "better.json")
    worse.to_json(tmp_path / "worse.json")
    assert run(diff_cmd, [str(tmp_path / "old.json"), str(tmp_path / "better.json")]) == 0
    assert "no regression" in capsys.readouterr().out
    rc = run(diff_cmd, [str(tmp_path / "old.json"), str(tmp_path / "worse.json"), "--json"])
    assert rc == 1
    out = json.loads(capsys.readouterr().out)
    regs = [c for c in out["changes"] if c["regression"]]
    assert [(c["unit_test"], c["eps"]) for c in regs] == [("pose", 0.5)]
    assert regs[0]["delta"]["verified_error"] == pytest.approx(0.05)
    # a looser tolerance accepts it
    assert run(diff_cmd, [str(tmp_path / "old.json"), str(tmp_path / "worse.json"), "--tolerance", "0.1"]) == 0


def test_diff_flags_a_gate_going_from_pass_to_fail(codes):
    old = build_sheet(codes, pose_verified=(0.05, 0.199, 0.5))
    new = build_sheet(codes, pose_verified=(0.05, 0.201, 0.5))  # +0.002 only, but crosses 0.2
    d = old.diff(new, tolerance=0.01)
    assert [(c.unit_test, c.eps) for c in d.regressions] == [("pose", 1.0)]
    assert "gate passed before and fails now" in d.regressions[0].reasons
    assert d.regression_for("pose", 1.0) is not None and d.regression_for("pose", 0.5) is None
    # unit tests that appear or disappear are listed, not regressions
    new.unit_tests = new.unit_tests[:1]
    d = old.diff(new)
    assert d.removed == ["expression"]
