"""YAML suites as pytest test files: one item per unit test and gated ε.

Node ids read `auditai_faces.yaml::pose[eps=1.0]`. Every mistake in a suite (schema, or a
name the model does not have) is a collection error naming the file, line and key.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from pytest_auditai.session import SESSION, AuditaiFailure


def _short_error(excinfo: pytest.ExceptionInfo) -> str | None:
    """Our own message for our own exceptions; None lets pytest render a traceback."""
    from auditai.errors import AuditaiError

    if excinfo.errisinstance(AuditaiFailure):
        return str(excinfo.value)
    if excinfo.errisinstance(AuditaiError):
        return f"{type(excinfo.value).__name__}: {excinfo.value}"
    return None


class YamlSuiteFile(pytest.File):
    """A YAML suite file (`auditai_*.yaml`)."""

    suite: Any = None

    def collect(self) -> Iterator[pytest.Item]:
        from auditai.errors import SuiteError
        from auditai.suite import load_suite

        self.suite = suite = load_suite(self.path)
        session = self.config.stash[SESSION]
        try:
            model = session.model(suite.model)
        except AuditaiFailure as e:
            raise SuiteError(str(e), path=str(self.path), line=suite.lines.get("model"),
                             key="model") from None
        except Exception as e:  # the model cannot be loaded: name the source
            raise SuiteError(f"cannot load the model: {type(e).__name__}: {e}", path=str(self.path),
                             line=suite.lines.get("model"), key="model") from None
        for ut in suite.unit_tests:
            ut.set_kind(model)  # names checked now: a wrong name is a collection error
        for ut in suite.unit_tests:
            for eps in ut.eps:
                name = f"{ut.name}[eps={float(eps)}]"
                # The node id given as text, as pytest parses the ids it stores (--lf, --ff,
                # --sw): a generic child id would keep "[eps=...]" in the name, not as params,
                # and never equal the stored id of the failed item.
                yield AuditaiItem.from_parent(self, name=name, nodeid=f"{self.nodeid}::{name}",
                                              unit_test=ut, eps=float(eps))

    def repr_failure(self, excinfo: pytest.ExceptionInfo, style=None):  # type: ignore[override]
        return _short_error(excinfo) or super().repr_failure(excinfo)


class AuditaiItem(pytest.Item):
    """One unit test at one gated ε; the verification is shared by all ε of the unit test."""

    def __init__(self, *, unit_test: Any, eps: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unit_test = unit_test
        self.eps = eps
        self.add_marker(pytest.mark.auditai)

    @property
    def key(self) -> str:
        return f"{self.parent.nodeid}::{self.unit_test.name}"

    def runtest(self) -> None:
        session = self.config.stash[SESSION]
        suite = self.parent.suite
        result = session.verify(self.key, suite.name, self.unit_test, suite.model, suite.data,
                                suite.engine, suite.train_data)
        session.check(self.key, self.unit_test, result, self.eps, self)

    def repr_failure(self, excinfo: pytest.ExceptionInfo, style=None):  # type: ignore[override]
        return _short_error(excinfo) or super().repr_failure(excinfo)

    def reportinfo(self):
        line = (self.unit_test.line - 1) if self.unit_test.line else 0
        return self.path, line, f"auditai unit test {self.unit_test.name} at eps={self.eps}"
