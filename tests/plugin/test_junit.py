"""JUnit XML carries the figures as properties."""

import xml.etree.ElementTree as ET

from .conftest import PASSING_SUITE


def test_junit_properties(tiny):
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE)
    tiny.runpytest("--auditai-device=cpu", "--junitxml=out.xml").assert_outcomes(passed=3)
    root = ET.parse(tiny.path / "out.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["pose[eps=1.0]"].iter("property")}
    assert props["auditai_unit_test"] == "pose"
    assert float(props["auditai_eps"]) == 1.0
    assert float(props["auditai_verified_error"]) == 0.5
    assert props["auditai_gate"] == "≤0.6" and props["auditai_passed"] == "True"
