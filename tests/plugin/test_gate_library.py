"""auditai.gate: the rows, gates, baselines and failure texts the plugin and `auditai verify`
share, on hand-made results with known numbers, and the CLI printing the plugin's text."""

import json
from types import SimpleNamespace

import pytest

from auditai import gate
from auditai.cli import main
from auditai.suite import make_unit_test
from .conftest import FAILING_SUITE, MODEL_MODULE


def _ut(**kw):
    fields = {"name": "pose", "direction": "pose", "eps": [0.5, 1.0], "report_eps": [2.0],
              "max_verified_error": 0.3, **kw}
    return make_unit_test({k: v for k, v in fields.items() if v is not None})


def _result(verified=(0.1, 0.4, 0.9), falsified=(0.0, 0.25, 0.5), method="crown-ibp"):
    return SimpleNamespace(eps=[0.5, 1.0, 2.0], verified_error=list(verified), clean_error=[0.0] * 3,
                           falsified_fraction=list(falsified),
                           unknown_fraction=[v - f for v, f in zip(verified, falsified)],
                           n=8, method=method, spec="label", certified_radius=None,
                           worst_counterexample=lambda i: None)


def test_rows_gate_only_the_gated_eps():
    rows = gate.rows_for(_ut(), _result())
    assert [(r["eps"], r["gated"], r["passed"]) for r in rows] == [(0.5, True, True), (1.0, True, False),
                                                                  (2.0, False, None)]
    assert [r["verified_error"] for r in rows] == [0.1, 0.4, 0.9]
    report_only = gate.rows_for(_ut(max_verified_error=None), _result())
    assert [r["gated"] for r in report_only] == [False] * 3
    assert gate.is_gated(_ut(), 1.0 + 1e-13) and not gate.is_gated(_ut(), 1.01)


def test_check_gives_the_gate_text_then_the_baseline_text():
    ut, r = _ut(), _result()
    assert gate.check(ut, r, 0.5) is None
    text = gate.check(ut, r, 1.0)
    assert text.startswith("unit test 'pose' at ε=1: verified error 0.4 > max 0.3")
    assert "falsified 0.25 (2 samples with a counterexample) · unknown 0.15" in text
    assert "no counterexample found" in text and "hint: --method complete" in text
    base = {("pose", 0.5): 0.05}
    assert gate.check(ut, r, 0.5, base, tolerance=0.05) is None  # 0.1 ≤ 0.05 + 0.05
    grew = gate.check(ut, r, 0.5, base, tolerance=0.01, baseline_source="base.json")
    assert grew.startswith("unit test 'pose' at ε=0.5: verified error grew from 0.05 (baseline base.json) to 0.1")
    assert gate.check(ut, r, 0.5, {("other", 0.5): 0.0}) is None  # no row for this unit test


def test_read_baseline_names_bad_files(tmp_path):
    """(A spec-sheet read back as a baseline: tests/plugin/test_baseline.py.)"""
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(gate.BaselineError, match="bad.json is not JSON"):
        gate.read_baseline(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"auditai_run": 1, "entries": []}))  # the old second schema: gone
    with pytest.raises(gate.BaselineError, match="not an auditai JSON report"):
        gate.read_baseline(other)
    with pytest.raises(gate.BaselineError, match="cannot read"):
        gate.read_baseline(tmp_path / "missing.json")
    assert issubclass(gate.BaselineError, ValueError)


def test_the_cli_prints_the_plugins_failure_text(tmp_path, monkeypatch, capsys):
    (tmp_path / "tinymodel.py").write_text(MODEL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(FAILING_SUITE)
    assert main(["verify", "bad.yaml", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    # the same words as the plugin's failure (tests/plugin/test_gate.py::test_failing_gate_message)
    assert "unit test 'pose' at ε=1: verified error 0.5 > max 0.3" in out
    assert "falsified 0.5 (4 samples with a counterexample)" in out
    assert "worst counterexample: sample" in out and "1 gate(s) failed" in out
