"""One item per unit test and gated ε, with node ids like `auditai_x.yaml::pose[eps=1.0]`."""

from .conftest import PASSING_SUITE


def test_node_ids(tiny):
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE)
    result = tiny.runpytest("--collect-only", "-q")
    lines = [ln for ln in result.stdout.lines if "::" in ln]
    assert lines == [
        "auditai_tiny.yaml::pose[eps=0.5]",
        "auditai_tiny.yaml::pose[eps=1.0]",
        "auditai_tiny.yaml::light[eps=1.0]",
    ]  # report_eps 1.5 is measured, not an item


def test_suite_pattern_ini(tiny):
    tiny.makefile(".yaml", suite_tiny=PASSING_SUITE, auditai_other="not: [a suite\n")
    tiny.makeini("[pytest]\nauditai_suite_pattern = suite_*.yaml\n")
    result = tiny.runpytest("--collect-only", "-q")
    assert "suite_tiny.yaml::light[eps=1.0]" in result.stdout.str()
    assert "auditai_other" not in result.stdout.str()
    assert result.ret == 0


def test_marker_selects_auditai_items(tiny):
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE)
    tiny.makepyfile(test_plain="def test_ok():\n    pass\n")
    result = tiny.runpytest("--collect-only", "-q", "-m", "auditai")
    assert "auditai_tiny.yaml::pose[eps=0.5]" in result.stdout.str()
    assert "test_plain" not in result.stdout.str()
