"""--auditai-report writes each report once per run, atomically; -n 2 gives the same report."""

import json

from .conftest import PASSING_SUITE


def _figures(report: dict) -> list:
    """(unit test, ε, verified error, falsified) rows of either report format."""
    if "entries" in report:
        rows = [(r["unit_test"], r["eps"], r["verified_error"], r["falsified_fraction"])
                for e in report["entries"] for r in e["rows"]]
    else:
        rows = [(u["name"], r["eps"], r["verified_error"], r["falsified_fraction"])
                for u in report["unit_tests"] for r in u["rows"]]
    return sorted(rows)


def test_reports_written_once(tiny):
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE)
    result = tiny.runpytest("--auditai-device=cpu", "--auditai-report=out/r.json",
                            "--auditai-report=out/r.md", "--auditai-report=out/r.html")
    result.assert_outcomes(passed=3)
    files = sorted(p.name for p in (tiny.path / "out").iterdir())
    assert files == ["r.html", "r.json", "r.md"]  # no temp files left behind
    rows = _figures(json.loads((tiny.path / "out/r.json").read_text()))
    assert rows == [("light", 1.0, 0.0, 0.0), ("pose", 0.5, 0.25, 0.25), ("pose", 1.0, 0.5, 0.5),
                    ("pose", 1.5, 0.75, 0.75)]
    assert "pose" in (tiny.path / "out/r.md").read_text()
    assert "<table" in (tiny.path / "out/r.html").read_text()
    assert "reports: out/r.json, out/r.md, out/r.html" in result.stdout.str()


def test_xdist_gives_the_serial_report(tiny):
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE,
                  auditai_two=PASSING_SUITE.replace("suite: tiny", "suite: two")
                  .replace("name: pose", "name: pose2").replace("name: light", "name: light2"))
    tiny.runpytest("-p", "no:randomly", "--auditai-device=cpu",
                   "--auditai-report=serial.json").assert_outcomes(passed=6)
    par = tiny.runpytest_subprocess("-n", "2", "--auditai-device=cpu", "--auditai-report=par.json")
    par.assert_outcomes(passed=6)
    serial = _figures(json.loads((tiny.path / "serial.json").read_text()))
    parallel = _figures(json.loads((tiny.path / "par.json").read_text()))
    assert len(serial) == 8 and len(set(serial)) == 8  # every result exactly once
    assert parallel == serial
    assert "auditai spec-sheet" in par.stdout.str()
