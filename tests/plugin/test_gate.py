"""A passing suite passes; a failing gate fails with a message a release engineer can act on."""

from .conftest import FAILING_SUITE, PASSING_SUITE


def test_passing_suite_and_summary(tiny):
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE)
    result = tiny.runpytest("--auditai-device=cpu")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert "auditai spec-sheet" in out
    rows = [ln.split() for ln in result.stdout.lines if ln.startswith(("pose ", "light "))]
    # one row per unit test and ε, report_eps included; verified error exact for a linear head
    # columns: name, "direction", quoted name, ε, clean err, verified err, ...
    assert [(r[0], r[3], r[5]) for r in rows] == [
        ("light", "1", "0"), ("pose", "0.5", "0.25"), ("pose", "1", "0.5"), ("pose", "1.5", "0.75"),
    ]


def test_failing_gate_message(tiny):
    tiny.makefile(".yaml", auditai_tiny=FAILING_SUITE)
    result = tiny.runpytest("--auditai-device=cpu")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "FAILED auditai_tiny.yaml::pose[eps=1.0]" in out
    assert "unit test 'pose' at ε=1: verified error 0.5 > max 0.3" in out
    assert "direction 'pose'" in out and "8 samples" in out
    assert "falsified 0.5 (4 samples with a counterexample)" in out
    assert "worst counterexample: sample" in out and "violated row" in out
    assert "hint:" in out
    assert "Traceback" not in out


def test_min_verified_accuracy_gate(tiny):
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE.replace(
        "direction: light", "direction: pose").replace("eps: 1.0\n", "eps: 0.5\n"))
    result = tiny.runpytest("--auditai-device=cpu", "-k", "light")
    result.assert_outcomes(failed=1)
    assert "verified accuracy 0.75 < min 0.9" in result.stdout.str()


def test_cli_options_override_the_suite(tiny):
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE.replace("tinymodel:MODEL", "missing.pt"))
    result = tiny.runpytest("--auditai-model=tinymodel:MODEL", "--auditai-device=cpu")
    result.assert_outcomes(passed=3)
