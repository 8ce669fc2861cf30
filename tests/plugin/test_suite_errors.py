"""Every mistake in a YAML suite is an error naming the file, the line and the key, with a
suggestion; a bad suite is a collection error, never silently skipped."""

import textwrap

import pytest

from auditai.errors import SuiteError
from auditai.suite import load_suite, parse_suite
from .conftest import PASSING_SUITE

GOOD = PASSING_SUITE


def _error(text: str) -> SuiteError:
    with pytest.raises(SuiteError) as info:
        parse_suite(textwrap.dedent(text), "auditai_x.yaml")
    return info.value


def test_good_suite_parses():
    s = parse_suite(GOOD, "/tmp/auditai_x.yaml")
    assert s.name == "tiny" and [u.name for u in s.unit_tests] == ["pose", "light"]
    pose = s.unit_tests[0]
    assert pose.eps == (0.5, 1.0) and pose.report_eps == (1.5,) and pose.all_eps == (0.5, 1.0, 1.5)
    assert pose.method == "crown-ibp" and pose.spec == "label" and pose.line == 7
    assert s.unit_tests[1].threshold_error == pytest.approx(0.1)
    assert s.model == "tinymodel:MODEL"  # python sources are not paths


def test_relative_paths_are_resolved_against_the_suite(tmp_path):
    f = tmp_path / "sub" / "auditai_x.yaml"
    f.parent.mkdir()
    f.write_text(GOOD.replace("tinymodel:MODEL", "../models/m.pt"))
    assert load_suite(f).model == str(tmp_path / "sub" / "../models/m.pt")


@pytest.mark.parametrize(
    "old,new,line,key,fragment",
    [
        ("    eps: [0.5, 1.0]", "    epss: [0.5, 1.0]", 9, "epss", "did you mean 'eps'?"),
        ("spec: label", "spec: lable", 4, "spec", "did you mean 'label'?"),
        ("method: crown-ibp", "method: crown_ibp", 5, "method", "did you mean 'crown-ibp'?"),
        ("suite: tiny", "suit: tiny", 1, "suit", "did you mean 'suite'?"),
        ("    eps: [0.5, 1.0]", "    eps: [0.5, big]", 9, "eps", "expected a radius"),
        ("    eps: [0.5, 1.0]", "    eps: [-1]", 9, "eps", "expected a radius"),
        ("    eps: [0.5, 1.0]", "    eps: []", 9, "eps", "non-empty list"),
        ("    max_verified_error: 0.6", "    max_verified_error: 1.5", 11, "max_verified_error",
         "a fraction in [0, 1]"),
        ("    max_verified_error: 0.6", "    max_verified_error: 0.6\n    min_verified_accuracy: 0.5",
         12, "min_verified_accuracy", "not both"),
        ("    direction: pose\n", "    direction: pose\n    dims: [1]\n", 9, "dims",
         "give exactly one"),
        ("    direction: light", "    direction: light\n    norm: 3", 14,
         "norm", "expected a norm"),
        ("  - name: light", "  - name: pose", 12, "name", "already used by the unit test on line 7"),
        ("  - name: light", "  - name: li[ght", 12, "name", "may not contain '['"),
    ],
)
def test_each_mistake_names_line_key_and_hint(old, new, line, key, fragment):
    assert old in GOOD
    e = _error(GOOD.replace(old, new, 1))
    assert (e.path, e.line, e.key) == ("auditai_x.yaml", line, key), str(e)
    assert fragment in str(e)
    assert str(e).startswith(f"auditai_x.yaml:{line} key '{key}'")


def test_missing_fields_are_named():
    e = _error(GOOD.replace("    eps: [0.5, 1.0]\n", ""))
    assert "needs `eps:`" in str(e) and e.line == 7
    e = _error(GOOD.replace("    max_verified_error: 0.6\n", "    max_verified_error: 0.6\n"
                                                                 "    min_verified_accuracy: 0.5\n"))
    assert "not both" in str(e) and e.key == "min_verified_accuracy"
    e = _error(GOOD.replace("    direction: pose\n", ""))
    assert "needs one latent set" in str(e)
    e = _error("suite: x\n")
    assert e.key == "unit_tests" and "no `unit_tests:`" in str(e)


def test_yaml_syntax_error_has_a_line():
    e = _error("suite: x\nunit_tests:\n  - name: [a\n")
    assert "not valid YAML" in str(e) and e.line is not None


def test_wrong_shapes():
    assert "must be a mapping" in str(_error("- 1\n- 2\n"))
    assert "empty" in str(_error(""))
    e = _error("unit_tests: 3\n")
    assert e.key == "unit_tests" and "non-empty list" in str(e)
    e = _error("unit_tests:\n  - 3\n")
    assert "must be a mapping" in str(e) and e.line == 2


def test_unknown_direction_is_a_collection_error_with_suggestion(tiny):
    tiny.makefile(".yaml", auditai_bad=GOOD.replace("direction: pose", "direction: poze"))
    result = tiny.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert "ERROR collecting auditai_bad.yaml" in out
    assert "auditai_bad.yaml:8 key 'direction'" in out
    assert "unknown direction 'poze'" in out and "did you mean 'pose'?" in out
    assert "Traceback" not in out


def test_unknown_named_dims_and_out_of_range_index(tiny):
    tiny.makefile(".yaml", auditai_a=GOOD.replace("direction: light", "dims: expresion"),
                  auditai_b=GOOD.replace("direction: light", "dims: [1, 9]"))
    out = tiny.runpytest("--collect-only").stdout.str()
    assert "unknown dims 'expresion'" in out and "did you mean 'expression'?" in out
    assert "latent index [9] out of range" in out and "d=4" in out


def test_schema_error_is_a_collection_error(pytester):
    pytester.makefile(".yaml", auditai_bad=GOOD.replace("report_eps", "report_epss"))
    result = pytester.runpytest("--collect-only")
    out = result.stdout.str()
    assert "auditai_bad.yaml:10 key 'report_epss'" in out and "did you mean 'report_eps'?" in out
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_unloadable_model_names_the_model_key(tiny):
    tiny.makefile(".yaml", auditai_bad=GOOD.replace("tinymodel:MODEL", "tinymodel:NOPE"))
    out = tiny.runpytest("--collect-only").stdout.str()
    assert "auditai_bad.yaml:2 key 'model'" in out and "NOPE" in out


def test_a_unit_test_without_a_gate_is_report_only():
    s = parse_suite(GOOD.replace("    max_verified_error: 0.6\n", ""), "auditai_x.yaml")
    pose = s.unit_tests[0]
    assert not pose.has_gate and pose.gate_text == "" and pose.gate(1.0)
    assert s.unit_tests[1].has_gate
