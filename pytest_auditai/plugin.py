"""auditai pytest plugin: hooks only, lazy imports.

Loaded in every pytest run of the environment (entry point `pytest11: auditai`), so importing
this module must stay cheap and safe: no torch, no auditai model code at import time. The work
lives in `session.py` (state in `config.stash`), `items.py` (YAML suites), `fixtures.py`
and `report.py`. `-p no:auditai` turns it all off.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_auditai import options as opt
from pytest_auditai.fixtures import (  # noqa: F401  (fixtures are found on the plugin module)
    auditai_data,
    auditai_device,
    auditai_model,
    auditai_result,
    auditai_verify,
)
from pytest_auditai.session import SESSION, UNIT_TEST, WORKER_KEY, AuditaiSession
from pytest_auditai.verdicts import fail_on_gates, verify_item

TAG = "__auditai_unit_test__"  # = auditai.suite.TAG (not imported: keeps this module light)
RESULT_ARG = "auditai_result"  # = auditai.suite.RESULT_ARG


def pytest_addoption(parser: pytest.Parser) -> None:
    opt.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{opt.MARKER}(name=None, *, direction|dims|basis, eps, norm='inf', report_eps=(), "
        "max_verified_error|min_verified_accuracy, spec, method, target): a semantic unit test; the "
        "plugin verifies it, gates it and passes the result as the auditai_result fixture",
    )
    try:  # ini values are validated as their flags are, before anything runs
        for option in (opt.DEVICE, opt.METHOD, opt.TARGET, opt.ENGINE, opt.PRECISION, opt.REPORT):
            opt.get_option(config, option)
        opt.parse_tolerance(config.getini(opt.INI_BASELINE_TOLERANCE))
    except Exception as e:
        raise pytest.UsageError(f"auditai: {e}") from None
    session = AuditaiSession(config)
    config.stash[SESSION] = session
    if opt.get_option(config, opt.RESULTS):
        from pytest_auditai.results import configure_results

        configure_results(config)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(session), "auditai_xdist")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix.lower() == ".json":
        from pytest_auditai.results import collect_results_file

        return collect_results_file(file_path, parent)
    if file_path.suffix.lower() not in (".yaml", ".yml"):
        return None
    patterns = parent.config.getini(opt.INI_SUITE_PATTERN) or [opt.DEFAULT_SUITE_PATTERN]
    if not any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return None
    from pytest_auditai.items import YamlSuiteFile

    return YamlSuiteFile.from_parent(parent, path=file_path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Python tests tagged by `@auditai.unit_test` or marked `@pytest.mark.auditai(...)`."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        fn = getattr(item, "obj", None)
        tagged = getattr(fn, TAG, None)
        marker = item.get_closest_marker(opt.MARKER)
        if tagged is not None:
            item.stash[UNIT_TEST] = tagged
            if marker is None:
                item.add_marker(pytest.mark.auditai)
        elif marker is not None and (marker.args or marker.kwargs):
            from auditai.errors import SuiteError
            from auditai.suite import unit_test_from_kwargs

            try:
                if len(marker.args) > 1:
                    raise SuiteError("pytest.mark.auditai takes the unit test's name as its only "
                                     "positional argument; give the other fields as keywords")
                kw = dict(marker.kwargs)
                if marker.args:
                    kw["name"] = marker.args[0]
                item.stash[UNIT_TEST] = unit_test_from_kwargs(kw, fn)
            except SuiteError as e:
                item.stash[UNIT_TEST] = e


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Gate a unit-test function before it runs: a failed gate fails it, unrun. A function of
    `@auditai.unit_test` is then called here with the result as `auditai_result=` (its
    signature does not ask for that fixture, so that it skips itself without the plugin)."""
    ut = pyfuncitem.stash.get(UNIT_TEST, None)
    if ut is None:
        return None
    result = verify_item(pyfuncitem)
    fail_on_gates(pyfuncitem.config.stash[SESSION], pyfuncitem.nodeid, ut, result, pyfuncitem)
    fn = pyfuncitem.obj
    if getattr(fn, TAG, None) is None:
        return None  # `@pytest.mark.auditai`: pytest calls it, with the auditai_result fixture
    import inspect

    names = inspect.signature(fn).parameters
    fn(**{n: v for n, v in pyfuncitem.funcargs.items() if n in names}, **{RESULT_ARG: result})
    return True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state: AuditaiSession | None = session.config.stash.get(SESSION, None)
    if state is None:
        return
    if state.is_worker:
        session.config.workeroutput[WORKER_KEY] = json.dumps(state.export(), default=str)
        return
    try:
        state.write_reports()
    except OSError as e:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"auditai: cannot write a report: {e}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state: AuditaiSession | None = config.stash.get(SESSION, None)
    if state is None or state.is_worker or not state.entries:
        return
    terminalreporter.write_sep("=", "auditai spec-sheet")
    for line in state.summary_lines():
        terminalreporter.write_line(line)
    if state.reports_written:
        terminalreporter.write_line("reports: " + ", ".join(state.reports_written))


class _XdistHooks:
    """Registered only when pytest-xdist is present: workers' entries reach the controller."""

    def __init__(self, state: AuditaiSession) -> None:
        self.state = state

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        data = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if data:
            self.state.merge(json.loads(data))
