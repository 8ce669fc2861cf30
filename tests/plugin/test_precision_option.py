"""--auditai-precision (ini auditai_precision): float32 or float64 bounds; auto (default) is
float64 on CPU. The result says which arithmetic bounded it."""

import pytest


OPTS = ("--auditai-model=tinymodel:MODEL", "--auditai-data=tinymodel:DATA", "--auditai-device=cpu")

TEST = '''
import auditai

@auditai.unit_test(direction="pose", eps=[0.5, 1.0], max_verified_error=0.6)
def test_pose(auditai_result):
    assert auditai_result.precision == "{expected}"
    assert auditai_result.verified_error == [0.25, 0.5]   # the same verdicts in both precisions
'''


@pytest.mark.parametrize("args, ini, expected", [
    ((), "", "float64"),
    (("--auditai-precision=float32",), "", "float32"),
    ((), "auditai_precision = float32\n", "float32"),
    (("--auditai-precision=float64",), "auditai_precision = float32\n", "float64"),
], ids=["default-cpu", "flag", "ini", "flag>ini"])
def test_precision_option(tiny, args, ini, expected):
    tiny.makeini("[pytest]\n" + ini)
    tiny.makepyfile(test_prec=TEST.format(expected=expected))
    tiny.runpytest(*OPTS, *args).assert_outcomes(passed=1)


def test_bad_precision_is_a_usage_error(tiny):
    result = tiny.runpytest("--auditai-precision=half")
    assert result.ret != 0
    assert "invalid precision 'half'" in result.stderr.str()
    tiny.makeini("[pytest]\nauditai_precision = fp16\n")
    result = tiny.runpytest()
    assert result.ret != 0
    assert "auditai_precision" in (result.stdout.str() + result.stderr.str())
