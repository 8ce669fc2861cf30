"""Verify one pytest item and apply its gates: shared by the hooks (`plugin.py`) and the
fixtures (`fixtures.py`), which import this module and never each other."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_auditai.session import SESSION, UNIT_TEST, AuditaiFailure


def verify_item(item: pytest.Item) -> Any:
    """The (cached) VerificationResult of a decorated/marked Python test."""
    from auditai.errors import AuditaiError

    ut = item.stash[UNIT_TEST]
    if isinstance(ut, Exception):
        pytest.fail(f"{type(ut).__name__}: {ut}", pytrace=False)
    session = item.config.stash[SESSION]
    try:
        return session.verify(item.nodeid, getattr(item, "module", None).__name__, ut)
    except (AuditaiFailure, AuditaiError) as e:
        msg = f"{type(e).__name__}: {e}" if isinstance(e, AuditaiError) else str(e)
    pytest.fail(msg, pytrace=False)


def fail_on_gates(session: Any, key: str, ut: Any, result: Any, node: Any) -> None:
    """Check the gate of `ut` at each of its ε; fail the test with every failed gate's text."""
    failures = []
    for eps in ut.eps:
        try:
            session.check(key, ut, result, eps, node)
        except AuditaiFailure as e:
            failures.append(str(e))
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
