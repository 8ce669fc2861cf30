"""`-p no:auditai` turns everything off: no options, no YAML collection."""

from .conftest import PASSING_SUITE


def test_no_auditai_disables_collection_and_options(tiny):
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE)
    tiny.makepyfile(test_plain="def test_ok():\n    assert True\n")
    off = tiny.runpytest("-p", "no:auditai", "--collect-only", "-q")
    assert off.ret == 0
    assert "auditai_tiny.yaml" not in off.stdout.str()
    assert "test_plain.py::test_ok" in off.stdout.str()
    bad = tiny.runpytest("-p", "no:auditai", "--auditai-device=cpu")
    assert bad.ret != 0
    assert "unrecognized arguments: --auditai-device" in bad.stderr.str()
