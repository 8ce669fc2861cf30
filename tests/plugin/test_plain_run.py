"""A run without suites or options is unaffected; importing the plugin does not import torch."""

import subprocess
import sys


def test_plain_run_is_unaffected(pytester):
    pytester.makepyfile(test_plain="def test_ok():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "auditai spec-sheet" not in result.stdout.str()


def test_plugin_import_does_not_import_torch():
    code = ("import sys, pytest_auditai.plugin, auditai.suite; "
            "bad = [m for m in ('torch', 'numpy', 'auditai.model', 'auditai.verify') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_yaml_files_outside_the_pattern_are_ignored(pytester):
    pytester.makefile(".yaml", config="a: [1, 2\n")  # broken YAML, but not a suite by name
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
