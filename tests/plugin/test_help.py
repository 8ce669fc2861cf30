"""`pytest --help` documents every option in an `auditai` group, plus the ini values."""

from pytest_auditai import options as opt


def test_help_lists_the_auditai_group_and_every_option(pytester):
    result = pytester.runpytest("--help")
    assert result.ret == 0
    out = result.stdout.str()
    assert "auditai: semantic unit tests for trained models" in out
    group = out[out.index("auditai: semantic unit tests"):]
    for option in (opt.MODEL, opt.DATA, opt.DEVICE, opt.METHOD, opt.ENGINE, opt.REPORT,
                   opt.BASELINE, opt.TRUST_PICKLE):
        assert option in group, option
    for ini in (opt.ini_name(opt.MODEL), opt.INI_SUITE_PATTERN, opt.INI_BASELINE_TOLERANCE):
        assert ini in out, ini
    assert "auto (CUDA when available, else" in group
