"""`@auditai.unit_test` and `@pytest.mark.auditai`: gate first, then the function with
`auditai_result`."""

import pytest

from auditai.errors import SuiteError
from auditai.suite import TAG, unit_test

OPTS = ("--auditai-model=tinymodel:MODEL", "--auditai-data=tinymodel:DATA", "--auditai-device=cpu")


def test_decorator_only_tags():
    @unit_test(direction="pose", eps=[0.5, 1.0], max_verified_error=0.2)
    def test_x(auditai_result):
        return 42

    ut = getattr(test_x, TAG)
    assert ut.name == "test_x" and ut.eps == (0.5, 1.0) and ut.set == {"direction": "pose"}
    assert ut.path == __file__ and ut.line is not None
    assert test_x(None) == 42


def test_decorator_errors_at_decoration():
    with pytest.raises(SuiteError, match="did you mean 'crown'"):
        unit_test(direction="pose", eps=1.0, max_verified_error=0.2, method="crwn")
    with pytest.raises(SuiteError, match="not both"):
        unit_test(direction="pose", eps=1.0, max_verified_error=0.2, min_verified_accuracy=0.8)
    report_only = getattr(unit_test(direction="pose", eps=1.0)(lambda: None), TAG)
    assert not report_only.has_gate and report_only.gate(1.0)  # no gate: measured, never failed


def test_decorated_test_gets_the_result(tiny):
    tiny.makepyfile(test_dec='''
        import auditai

        @auditai.unit_test(direction="pose", eps=[0.5, 1.0], max_verified_error=0.6)
        def test_pose(auditai_result):
            assert auditai_result.verified_error == [0.25, 0.5]
            assert auditai_result.falsified_fraction[-1] > 0.9   # a user's extra assertion fails

        @auditai.unit_test(direction="pose", eps=1.0, max_verified_error=0.1)
        def test_pose_gate(auditai_result):
            raise AssertionError("never called: the gate fails first")
    ''')
    result = tiny.runpytest(*OPTS)
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "assert 0.5 > 0.9" in out
    assert "verified error 0.5 > max 0.1" in out and "never called" not in out


def test_marker_directly(tiny):
    tiny.makepyfile(test_mark='''
        import pytest

        @pytest.mark.auditai("light_ok", direction="light", eps=2.0, max_verified_error=0.0)
        def test_light():
            pass

        @pytest.mark.auditai(direction="light", eps=2.0, max_verified_eror=0.0)
        def test_typo():
            pass
    ''')
    result = tiny.runpytest(*OPTS)
    result.assert_outcomes(passed=1, failed=1)
    assert "did you mean 'max_verified_error'?" in result.stdout.str()
    assert "light_ok" in result.stdout.str()  # the summary row


def test_result_fixture_without_marker_is_an_error(pytester):
    pytester.makepyfile(test_x="def test_x(auditai_result):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    assert "needs @auditai.unit_test" in result.stdout.str()
