"""The bound engine: --auditai-engine on the command line, else the suite's `engine:`, else the
ini value `auditai_engine` (default auditai). The sheet names the engine each unit test used."""

import json

import pytest

from auditai.bounds.lirpa import auto_lirpa_available  # imports auto_LiRPA once, out here

from .conftest import PASSING_SUITE

_OK, _WHY = auto_lirpa_available()
pytestmark = [pytest.mark.auto_lirpa,
              pytest.mark.skipif(not _OK, reason=f"auto_LiRPA is not there: {_WHY}")]

WITH_KEY = PASSING_SUITE.replace("spec: label\n", "spec: label\nengine: auto_lirpa\n")


def engines(p: pytest.Pytester, *args: str) -> set[str]:
    p.runpytest("--auditai-device=cpu", "--auditai-report=r.json", *args).assert_outcomes(passed=3)
    sheet = json.loads((p.path / "r.json").read_text(encoding="utf-8"))
    return {u["engine"] for u in sheet["unit_tests"]} | {f"sheet:{sheet['engine']}"}


@pytest.mark.parametrize(
    "suite, ini, args, expected",
    [
        (WITH_KEY, "", (), "auto_lirpa"),  # the suite's key beats the default
        (WITH_KEY, "auditai_engine = auditai\n", (), "auto_lirpa"),  # ... and the ini value
        (WITH_KEY, "", ("--auditai-engine=auditai",), "auditai"),  # the flag beats the key
        (PASSING_SUITE, "auditai_engine = auto_lirpa\n", (), "auto_lirpa"),  # no key: the ini value
        (PASSING_SUITE, "", (), "auditai"),  # nothing given: the default
    ],
    ids=["key>default", "key>ini", "flag>key", "ini", "default"],
)
def test_engine_precedence(tiny, suite, ini, args, expected):
    tiny.makefile(".yaml", auditai_tiny=suite)
    tiny.makeini("[pytest]\n" + ini)
    assert engines(tiny, *args) == {expected, f"sheet:{expected}"}
