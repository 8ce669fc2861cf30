"""The plugin's fixtures: thin accessors of the run's `AuditaiSession` (config.stash)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from pytest_auditai.session import SESSION, UNIT_TEST, AuditaiFailure
from pytest_auditai.verdicts import fail_on_gates, verify_item


def _session(request: pytest.FixtureRequest):
    return request.config.stash[SESSION]


@pytest.fixture(scope="session")
def auditai_device(request: pytest.FixtureRequest) -> str:
    """The device verification runs on: --auditai-device with 'auto' resolved ('cpu', 'cuda:0', ...)."""
    return _session(request).device


@pytest.fixture(scope="session")
def auditai_model(request: pytest.FixtureRequest) -> Any:
    """The AuditModel of --auditai-model (or the ini value), loaded once per run."""
    try:
        return _session(request).model(None)
    except AuditaiFailure as e:
        msg = str(e)
    pytest.fail(msg, pytrace=False)


@pytest.fixture(scope="session")
def auditai_data(request: pytest.FixtureRequest, auditai_model: Any) -> Any:
    """The AuditData of --auditai-data encoded by the model (codes cached across runs in
    pytest's cache, keyed by the model's and the data's content hashes)."""
    try:
        return _session(request).data(None, None)
    except AuditaiFailure as e:
        msg = str(e)
    pytest.fail(msg, pytrace=False)


@pytest.fixture
def auditai_verify(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """A function to verify a unit test imperatively: the YAML fields as keywords.

    `auditai_verify(direction="pose", eps=[0.5, 1.0])` returns the VerificationResult; its rows
    reach the spec-sheet. With a threshold (`max_verified_error=...`) the test fails as a
    decorated one would; without one nothing is gated.
    """
    from auditai.suite import unit_test_fields, unit_test_from_kwargs

    session = _session(request)
    node = request.node

    def run(name: str | None = None, **fields: Any) -> Any:
        fields = unit_test_fields(name=name or f"{node.name}", **fields)
        ut = unit_test_from_kwargs(fields, getattr(node, "obj", None))
        gated = ut.has_gate  # without a threshold: report-only, in the sheet, never failed
        key = f"{node.nodeid}::{ut.name}"
        result = session.verify(key, node.module.__name__ if hasattr(node, "module") else "",
                                 ut)
        if gated:
            fail_on_gates(session, key, ut, result, node)
        return result

    return run


@pytest.fixture
def auditai_result(request: pytest.FixtureRequest) -> Any:
    """The VerificationResult of this test's `@auditai.unit_test` / `@pytest.mark.auditai`."""
    if request.node.stash.get(UNIT_TEST, None) is None:
        pytest.fail("the auditai_result fixture needs @auditai.unit_test(...) or "
                    "@pytest.mark.auditai(...) on the test function", pytrace=False)
    return verify_item(request.node)
