"""--auditai-baseline: a verified error that grew by more than the tolerance fails."""

import json

from .conftest import PASSING_SUITE


def test_baseline_regression_fails(tiny):
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE)
    tiny.runpytest("--auditai-device=cpu", "--auditai-report=base.json").assert_outcomes(passed=3)
    base = json.loads((tiny.path / "base.json").read_text())
    # pretend the last release was better at pose ε=0.5 (0.25 now, 0.2 then)
    if "entries" in base:
        rows = [r for e in base["entries"] for r in e["rows"]]
        name = "unit_test"
    else:
        rows = [dict(r, unit_test=u["name"]) | {"_r": r} for u in base["unit_tests"] for r in u["rows"]]
        name = "unit_test"
    for r in rows:
        if r[name] == "pose" and r["eps"] == 0.5:
            target = r.get("_r", r)
            target["verified_error"] = 0.2
    (tiny.path / "base.json").write_text(json.dumps(base))
    result = tiny.runpytest("--auditai-device=cpu", "--auditai-baseline=base.json")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "FAILED auditai_tiny.yaml::pose[eps=0.5]" in out
    assert "verified error grew from 0.2" in out and "to 0.25" in out
    tiny.makeini("[pytest]\nauditai_baseline_tolerance = 0.1\n")
    tiny.runpytest("--auditai-device=cpu", "--auditai-baseline=base.json").assert_outcomes(passed=3)
