"""`pytest --auditai-results DIR`: a sharded run's results as items, failures, the table, JUnit
properties and baseline comparison, without verifying again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import cli, verify_args


@pytest.fixture(scope="module")
def failing_run(tiny_dir) -> Path:
    """A merged run folder of the suite whose 'expression' gate fails (exit status 1)."""
    assert cli(verify_args("failing-run", "failing.yaml"), tiny_dir) == 1
    return tiny_dir / "failing-run"


def test_results_become_items_and_one_failure(pytester, failing_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(failing_run, run)
    import auditai.verify

    def no_verification(*a, **k):
        raise AssertionError("--auditai-results must not verify again")

    monkeypatch.setattr(auditai.verify, "verify", no_verification)
    r = pytester.runpytest_inprocess("--auditai-results", str(run), f"--junitxml={tmp_path / 'j.xml'}",
                                     "-p", "no:cacheprovider")
    r.assert_outcomes(passed=2, failed=1)
    out = r.stdout.str()
    assert "FAILED" in out and "results.json::expression[eps=0.5]" in out
    assert "unit test 'expression' at ε=0.5: verified error 0.375 > max 0.3" in out
    assert "auditai spec-sheet" in out  # the terminal table
    table = [ln for ln in out.splitlines() if ln.startswith("expression") and "FAIL" in ln]
    assert len(table) == 1 and "0.375" in table[0]
    xml = (tmp_path / "j.xml").read_text()
    assert 'name="auditai_verified_error" value="0.375"' in xml
    assert xml.count('name="auditai_unit_test"') == 3


def test_baseline_and_reports_from_results(pytester, failing_run, tmp_path):
    sheet = json.loads((failing_run / "sheet.json").read_text())
    for ut in sheet["unit_tests"]:
        if ut["name"] == "pose":
            for row in ut["rows"]:
                row["verified_error"] = 0.0  # the baseline was better: pose regressed
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps(sheet))
    report = tmp_path / "again.json"
    r = pytester.runpytest_inprocess("--auditai-results", str(failing_run), "--auditai-baseline", str(base),
                                     "--auditai-report", str(report), "-p", "no:cacheprovider")
    r.assert_outcomes(failed=3)
    out = r.stdout.str()
    failures = out[out.index("= FAILURES ="):out.index("auditai spec-sheet")]  # the summary's width varies
    assert failures.count("verified error grew from 0") == 2
    assert "unit test 'pose' at ε=0.3: verified error grew from 0" in failures
    again = json.loads(report.read_text())
    orig = json.loads((failing_run / "sheet.json").read_text())
    assert {u["name"]: u["rows"] for u in again["unit_tests"]} == {u["name"]: u["rows"] for u in orig["unit_tests"]}


def test_missing_results_is_a_usage_error(pytester, tmp_path):
    r = pytester.runpytest_inprocess("--auditai-results", str(tmp_path / "nothing"), "-p", "no:cacheprovider")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "results.json does not exist" in r.stderr.str()
