"""`--auditai-device` and the other choice options are validated at parse time."""

import argparse

import pytest

from pytest_auditai import options as opt


@pytest.mark.parametrize("value", ["auto", "cpu", "cuda", "cuda:0", "CUDA:3"])
def test_valid_devices_parse(value):
    assert opt.parse_device(value) == value.lower()


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "tpu", ""])
def test_invalid_devices_are_rejected(value):
    with pytest.raises(argparse.ArgumentTypeError, match="expected 'auto'"):
        opt.parse_device(value)


def test_bad_device_fails_on_the_command_line(pytester):
    result = pytester.runpytest("--auditai-device=gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid device 'gpu'" in result.stderr.str()


def test_bad_method_suggests_the_closest(pytester):
    result = pytester.runpytest("--auditai-method=crown_ibp")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "did you mean 'crown-ibp'?" in result.stderr.str()


def test_report_suffix_is_checked(pytester):
    result = pytester.runpytest("--auditai-report=out.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "expected one of .json, .md, .html" in result.stderr.str()


def test_bad_ini_device_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nauditai_device = gpu\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "auditai_device" in result.stderr.str() and "invalid device" in result.stderr.str()


def test_bad_tolerance_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nauditai_baseline_tolerance = lots\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "auditai_baseline_tolerance" in result.stderr.str()


@pytest.mark.cuda
def test_cuda_device_resolves_on_a_gpu(pytester):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytester.makepyfile(test_dev="def test_dev(auditai_device):\n    assert auditai_device == 'cuda:0'\n")
    pytester.runpytest("--auditai-device=cuda:0").assert_outcomes(passed=1)
