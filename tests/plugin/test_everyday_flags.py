"""pytest's everyday flags on a suite with one failing unit test: each behaves as for Python tests.

One small project for every run (`flags`): a YAML suite whose model encodes its data (so codes
go through the latent cache) with three unit tests, in this order:

    ok       pose at ε=0.1, gate ≤0    passes (every |z0| ≥ 0.25 > 0.1)
    drift    pose at ε=1.0, gate ≤0.3  FAILS  (verified error 0.5)
    measure  pose at ε=0.5, no gate    passes, report-only (verified error 0.25)

plus a Python file with a plain test and a report-only `@auditai.unit_test`. A full run is
therefore 1 failed, 4 passed, and writes the spec-sheet `sheet.json` (ini `auditai_report`).
"""

from __future__ import annotations

import importlib
import json
import os
import stat
import textwrap
import xml.etree.ElementTree as ET

import pytest


# Imported here, once: pytester undoes every run's imports, and the plugin's distribution is
# assertion-rewritten in each run, which would cost every run a second.
for _name in ("auditai.verify", "auditai.model", "auditai.data", "auditai.sheet"):
    importlib.import_module(_name)

SUITE = textwrap.dedent(
    """\
    suite: flags
    model: tinymodel:model_with_encoder
    data: tinymodel:DATA_X
    unit_tests:
      - name: ok
        direction: pose
        eps: 0.1
        max_verified_error: 0.0
      - name: drift
        direction: pose
        eps: 1.0
        max_verified_error: 0.3
      - name: measure
        direction: pose
        eps: 0.5
    """
)

PY_TESTS = textwrap.dedent(
    """\
    import auditai

    def test_plain():
        pass

    @auditai.unit_test(direction="pose", eps=0.5)
    def test_decorated(auditai_result):
        assert auditai_result.verified_error == [0.25]
    """
)

INI = textwrap.dedent(
    """\
    [pytest]
    auditai_model = tinymodel:model_with_encoder
    auditai_data = tinymodel:DATA_X
    auditai_device = cpu
    auditai_report = sheet.json
    """
)

OK, DRIFT, MEASURE = ("auditai_flags.yaml::ok[eps=0.1]", "auditai_flags.yaml::drift[eps=1.0]",
                      "auditai_flags.yaml::measure[eps=0.5]")
PLAIN, DECORATED = "test_units.py::test_plain", "test_units.py::test_decorated"
ALL_IDS = [OK, DRIFT, MEASURE, PLAIN, DECORATED]


@pytest.fixture
def flags(tiny: pytest.Pytester) -> pytest.Pytester:
    tiny.makefile(".yaml", auditai_flags=SUITE)
    tiny.makepyfile(test_units=PY_TESTS)
    tiny.makeini(INI)
    return tiny


def lit(text: str) -> str:
    """`text` as a literal fnmatch pattern (node ids hold brackets)."""
    return text.replace("[", "[[]")


def sheet(p: pytest.Pytester) -> dict[str, list[dict]]:
    """Unit test name → its rows, from the run's spec-sheet JSON."""
    data = json.loads((p.path / "sheet.json").read_text(encoding="utf-8"))
    return {u["name"]: u["rows"] for u in data["unit_tests"]}


def ran(result: pytest.RunResult) -> list[str]:
    """The node ids a `-v` run reported, in order."""
    return [ln.split()[0] for ln in result.stdout.lines
            if ln.split() and ln.split()[0] in ALL_IDS and ("PASSED" in ln or "FAILED" in ln)]


def test_full_run_and_report_only_unit_tests(flags):
    result = flags.runpytest()
    result.assert_outcomes(failed=1, passed=4)
    result.stdout.fnmatch_lines([f"FAILED {lit(DRIFT)} - unit test 'drift' at ε=1: verifi*"])
    rows = sheet(flags)
    assert sorted(rows) == ["drift", "measure", "ok", "test_decorated"]
    for name in ("measure", "test_decorated"):  # no gate: measured, in the sheet, never failed
        (row,) = rows[name]
        assert (row["eps"], row["verified_error"], row["gated"], row["passed"]) == (0.5, 0.25, False, None)
    assert [(r["gated"], r["passed"]) for r in rows["drift"]] == [(True, False)]
    assert (flags.path / "encode_calls.txt").exists()  # the codes were encoded by the model
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((flags.path / "sheet.json").stat().st_mode) == 0o666 & ~umask


def test_no_cacheprovider_encodes_and_goes_on(flags):
    result = flags.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=4)
    assert "AttributeError" not in result.stdout.str()
    assert not (flags.path / ".pytest_cache").exists()
    assert sum(map(int, (flags.path / "encode_calls.txt").read_text().split())) >= 8
    assert sorted(sheet(flags)) == ["drift", "measure", "ok", "test_decorated"]


def test_last_failed_reruns_only_the_failed_unit_test(flags):
    flags.runpytest().assert_outcomes(failed=1, passed=4)
    result = flags.runpytest("--lf", "-v")
    result.assert_outcomes(failed=1)  # the others are not even collected, as for Python files
    result.stdout.fnmatch_lines(["run-last-failure: rerun previous 1 failure (skipped 1 file)"])
    assert ran(result) == [DRIFT]
    assert sorted(sheet(flags)) == ["drift"]  # the sheet of this run: what ran


def test_failed_first_runs_the_failed_unit_test_first(flags):
    flags.runpytest().assert_outcomes(failed=1, passed=4)
    result = flags.runpytest("--ff", "-v")
    result.assert_outcomes(failed=1, passed=4)
    result.stdout.fnmatch_lines(["run-last-failure: rerun previous 1 failure first*"])
    assert ran(result)[0] == DRIFT and sorted(ran(result)) == sorted(ALL_IDS)


def test_stepwise_stops_at_the_failure_and_resumes_there(flags):
    first = flags.runpytest("--sw", "-v")
    first.assert_outcomes(failed=1, passed=1)  # ok passes, drift fails, the run stops
    assert ran(first) == [OK, DRIFT]
    again = flags.runpytest("--sw", "-v")
    again.assert_outcomes(failed=1, deselected=1)  # ok is skipped, drift fails again
    again.stdout.fnmatch_lines(["stepwise: skipping 1 already passed items*"])
    assert ran(again) == [DRIFT]


def test_exitfirst(flags):
    result = flags.runpytest("-x")
    result.assert_outcomes(failed=1, passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])


def test_keyword_selects_unit_tests_by_name(flags):
    result = flags.runpytest("-k", "measure or plain", "-v")
    result.assert_outcomes(passed=2, deselected=3)
    assert ran(result) == [MEASURE, PLAIN]
    flags.runpytest("-k", "drift").assert_outcomes(failed=1, deselected=4)


def test_marker_auditai_selects_unit_tests_only(flags):
    result = flags.runpytest("-m", "auditai", "-v")
    result.assert_outcomes(failed=1, passed=3, deselected=1)
    assert PLAIN not in ran(result) and DECORATED in ran(result)
    flags.runpytest("-m", "not auditai").assert_outcomes(passed=1, deselected=4)


def test_collect_only_verifies_nothing(flags):
    result = flags.runpytest("--co", "-q")
    assert result.ret == pytest.ExitCode.OK
    assert [ln for ln in result.stdout.lines if "::" in ln] == ALL_IDS
    assert "auditai spec-sheet" not in result.stdout.str()
    assert not (flags.path / "sheet.json").exists()
    assert not (flags.path / "encode_calls.txt").exists()  # the data are not even encoded


def test_quiet_and_verbose(flags):
    quiet = flags.runpytest("-q")
    quiet.assert_outcomes(failed=1, passed=4)
    quiet.stdout.fnmatch_lines(["*1 failed, 4 passed in *"])
    assert "test session starts" not in quiet.stdout.str()
    verbose = flags.runpytest("-v")
    verbose.assert_outcomes(failed=1, passed=4)
    verbose.stdout.fnmatch_lines([f"{lit(OK)} PASSED*", f"{lit(DRIFT)} FAILED*", f"{lit(MEASURE)} PASSED*"])


def test_report_all(flags):
    result = flags.runpytest("-rA")
    result.assert_outcomes(failed=1, passed=4)
    result.stdout.fnmatch_lines(["*short test summary info*"])
    out = result.stdout.str()
    for nodeid in (OK, MEASURE, PLAIN, DECORATED):
        assert f"PASSED {nodeid}" in out
    assert f"FAILED {DRIFT} - unit test 'drift'" in out


def test_short_tracebacks_show_our_message_not_our_code(flags):
    result = flags.runpytest("--tb=short")
    result.assert_outcomes(failed=1, passed=4)
    result.stdout.fnmatch_lines([
        "*unit test 'drift' at ε=1: verified error 0.5 > max 0.3",
        "*falsified 0.5 (4 samples with a counterexample)*",
    ])
    out = result.stdout.str()
    assert "pytest_auditai" not in out and "Traceback" not in out and "def runtest" not in out


def test_junitxml(flags):
    flags.runpytest("--junitxml=out.xml").assert_outcomes(failed=1, passed=4)
    root = ET.parse(flags.path / "out.xml").getroot()
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "1", "0")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert sorted(cases) == sorted(["ok[eps=0.1]", "drift[eps=1.0]", "measure[eps=0.5]",
                                    "test_plain", "test_decorated"])
    (failure,) = cases["drift[eps=1.0]"].findall("failure")
    assert "verified error 0.5 > max 0.3" in failure.get("message")
    props = {p.get("name"): p.get("value") for p in cases["drift[eps=1.0]"].iter("property")}
    assert float(props["auditai_verified_error"]) == 0.5 and props["auditai_passed"] == "False"
    props = {p.get("name"): p.get("value") for p in cases["measure[eps=0.5]"].iter("property")}
    assert float(props["auditai_verified_error"]) == 0.25 and props["auditai_gate"] == ""
    assert not cases["measure[eps=0.5]"].findall("failure")


@pytest.mark.parametrize("dist", [(), ("--dist", "loadfile")], ids=["load", "loadfile"])
def test_xdist_matches_a_serial_run(flags, dist):
    pytest.importorskip("xdist")
    flags.runpytest("-p", "no:cacheprovider").assert_outcomes(failed=1, passed=4)
    serial = sheet(flags)
    (flags.path / "sheet.json").unlink()
    result = flags.runpytest("-n", "2", *dist, "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=4)
    parallel = sheet(flags)
    assert sorted(parallel) == sorted(serial)
    for name, rows in serial.items():
        keep = ("eps", "gated", "passed", "verified_error", "falsified_fraction", "clean_error")
        assert [{k: r[k] for k in keep} for r in parallel[name]] == [{k: r[k] for k in keep} for r in rows]


def test_durations(flags):
    result = flags.runpytest("--durations=3", "--durations-min=0")
    result.assert_outcomes(failed=1, passed=4)
    result.stdout.fnmatch_lines(["*slowest 3 durations*"])
    lines = result.stdout.str().split("slowest 3 durations", 1)[1].splitlines()
    timed = [ln for ln in lines if ln.strip().endswith(tuple(ALL_IDS))]
    assert len(timed) == 3, lines


def test_plugin_disabled_skips_decorated_tests_with_the_reason(flags):
    result = flags.runpytest("-p", "no:auditai", "-rs")
    result.assert_outcomes(passed=1, skipped=1)  # no YAML items; the decorated test skips itself
    result.stdout.fnmatch_lines([
        ("SKIPPED*auditai unit test 'test_decorated' not verified: the auditai pytest "
         "plugin is not active (disabled by -p no:auditai*"),
    ])
    assert "fixture 'auditai_result' not found" not in result.stdout.str()
    assert not (flags.path / "sheet.json").exists()


def test_pytester_plugin_in_a_users_conftest(flags):
    flags.makeconftest('pytest_plugins = ["pytester"]\n')
    flags.makepyfile(test_meta=textwrap.dedent(
        """\
        def test_uses_pytester(pytester):
            pytester.makepyfile(test_inner="def test_inner():\\n    pass\\n")
            pytester.runpytest("-p", "no:auditai").assert_outcomes(passed=1)
        """
    ))
    result = flags.runpytest()
    result.assert_outcomes(failed=1, passed=5)
    assert sorted(sheet(flags)) == ["drift", "measure", "ok", "test_decorated"]
