"""`pytest --auditai-results DIR`: a sharded run's merged results as the usual test items.

`auditai verify SUITE --out DIR` (torchrun on a cluster, or one process) leaves DIR/results.json:
per unit test its defining fields, the merged VerificationResult and the spec-sheet entry. This
module collects that file as one item per unit test and gated ε, and each item hands the stored
result to the session's ordinary path (`AuditaiSession.check`: gate, baseline, JUnit
properties; `entries`: terminal table and --auditai-report), so nothing is verified again.
Imports no torch at import time (auditai.gate, the gates and rows, is torch-free).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_auditai import options as opt
from pytest_auditai.items import AuditaiItem
from auditai.gate import rows_for, unit_test_dict
from pytest_auditai.session import SESSION, Entry

RESULTS_FILE: pytest.StashKey[Path] = pytest.StashKey()
RESULTS_SCHEMA = "auditai.sharded-results/1"  # = auditai.distributed.shard.RESULTS_SCHEMA


def configure_results(config: pytest.Config) -> None:
    """Check DIR/results.json exists and add it to what pytest collects."""
    value = str(opt.get_option(config, opt.RESULTS))
    root = Path(value)
    if not root.is_absolute():
        cli = config.getoption(opt.ini_name(opt.RESULTS), default=None)
        base = Path(config.invocation_params.dir) if cli or not config.inipath else config.inipath.parent
        root = base / root
    file = root / "results.json"
    if not file.is_file():
        hint = (" (the run has chunks but was not merged: run `auditai merge DIR`)"
                if (root / "manifest.json").is_file() else
                " (expected the run folder of `auditai verify SUITE --out DIR`)")
        raise pytest.UsageError(f"{opt.RESULTS}: {file} does not exist{hint}")
    config.stash[RESULTS_FILE] = file.resolve()
    if str(file) not in config.args:
        config.args.append(str(file))


def collect_results_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """The collector of DIR/results.json when it is the --auditai-results file, else None."""
    want = parent.config.stash.get(RESULTS_FILE, None)
    if want is None or file_path.resolve() != want:
        return None
    return ResultsFile.from_parent(parent, path=file_path)


class _Suite:
    """What an AuditaiItem's parent provides (`suite.name` …) for stored results."""

    def __init__(self, name: str) -> None:
        self.name, self.model, self.data, self.engine, self.train_data = name, None, None, None, None


class ResultsFile(pytest.File):
    """DIR/results.json of a sharded run: one item per unit test and gated ε."""

    suite: Any = None
    record: dict | None = None

    def collect(self) -> Iterator[pytest.Item]:
        from auditai.errors import SuiteError
        from auditai.suite import make_unit_test

        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise SuiteError(f"cannot read the run's results: {e}", path=str(self.path)) from None
        if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
            raise SuiteError(f"not the results of `auditai verify --out` (expected schema "
                             f"{RESULTS_SCHEMA!r})", path=str(self.path))
        self.record = data
        self.suite = _Suite(str(data.get("suite") or "suite"))
        for t in data.get("unit_tests", []):
            ut = make_unit_test(t["unit_test"], path=str(self.path),
                                where=f"unit test '{t['unit_test'].get('name')}' in {self.path}")
            for eps in ut.eps:
                yield ResultsItem.from_parent(self, name=f"{ut.name}[eps={float(eps)}]",
                                              unit_test=ut, eps=float(eps), stored=t)

    def repr_failure(self, excinfo: pytest.ExceptionInfo, style=None):  # type: ignore[override]
        from pytest_auditai.items import _short_error

        return _short_error(excinfo) or super().repr_failure(excinfo)


class ResultsItem(AuditaiItem):
    """A unit test at one gated ε whose result comes from the run folder."""

    def __init__(self, *, stored: dict, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stored = stored

    def runtest(self) -> None:
        session = self.config.stash[SESSION]
        result = adopt(session, self.key, self.parent.suite.name, self.unit_test, self.stored,
                       self.parent.record or {})
        session.check(self.key, self.unit_test, result, self.eps, self)

    def reportinfo(self):
        return self.path, 0, f"auditai unit test {self.unit_test.name} at eps={self.eps} (stored)"


def adopt(session: Any, key: str, suite: str, ut: Any, stored: dict, record: dict) -> Any:
    """Record a stored result in the session as `AuditaiSession.verify` records a fresh one."""
    if key in session._results:
        return session._results[key]
    from auditai.verify import VerificationResult

    result = VerificationResult.from_dict(stored["result"])
    session._results[key] = result
    session.entries[key] = Entry(
        key=key, suite=suite, unit_test=unit_test_dict(ut), rows=rows_for(ut, result),
        result=stored["result"], model=dict(record.get("model") or {}),
        data=dict(record.get("data") or {}), sheet=stored.get("sheet"),
    )
    return result
