"""Semantic unit tests: the YAML suite schema, its validation and the `unit_test` decorator.

The rooms: `auditai.suite_schema` (UnitTest, Suite, the validation of a unit test's fields),
`auditai.suite_parse` (YAML suites); this module re-exports both and holds the decorator.

A unit test (paper §2.2) is a latent set around each sample's code — a named direction, latent
dims or a basis, a norm and radii ε — plus a specification and a gate on the verified error at
each gated ε. `report_eps` values are measured for the spec-sheet but not gated.

Every mistake is a `SuiteError` naming the file, the line and the key, what was expected, and
the closest valid key or name ("did you mean ...", via difflib). This module imports neither
pytest nor torch at import time: the decorator only tags a function (`__auditai_unit_test__`)
and the pytest plugin turns the tag into its `auditai` marker.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from auditai.suite_parse import load_suite, parse_suite
from auditai.suite_schema import (
    DEFAULT_METHOD,
    DEFAULT_SPEC,
    DEFAULT_TARGET,
    ENGINES,
    METHODS,
    NORMS,
    SET_KEYS,
    SPECS,
    SUITE_KEYS,
    TARGETS,
    THRESHOLD_KEYS,
    UNIT_TEST_KEYS,
    Suite,
    UnitTest,
    did_you_mean,
    make_unit_test,
)

#: attribute the `unit_test` decorator sets on a function (the plugin reads it)
TAG = "__auditai_unit_test__"
#: the keyword the plugin passes the VerificationResult by (not in the wrapper's signature)
RESULT_ARG = "auditai_result"


# --------------------------------------------------------------------------- decorator
def unit_test(
    name: str | None = None,
    *,
    direction: str | None = None,
    dims: Sequence[int] | int | str | None = None,
    basis: str | None = None,
    norm: str | float = "inf",
    eps: float | Sequence[float],
    report_eps: Sequence[float] = (),
    max_verified_error: float | None = None,
    min_verified_accuracy: float | None = None,
    spec: str | None = None,
    method: str | None = None,
    target: str | None = None,
) -> Callable[[Callable], Callable]:
    """Declare a test function as a semantic unit test (the YAML fields as keywords).

    The pytest plugin runs the verification, fails the test when the gate fails, and otherwise
    calls the function with the result as the `auditai_result` fixture. Without a threshold the
    unit test is report-only (measured for the spec-sheet, never failed). Only tags the function:
    equivalent to `@pytest.mark.auditai(...)` with the same keywords. Mistakes raise
    SuiteError at decoration time, naming the function's file and line.

    >>> @unit_test(direction="pose", eps=[0.5, 1.0], max_verified_error=0.2)
    ... def test_pose(auditai_result): ...
    >>> test_pose.__auditai_unit_test__.eps
    (0.5, 1.0)
    """
    kwargs = unit_test_fields(
        name=name, direction=direction, dims=dims, basis=basis, norm=norm, eps=eps,
        report_eps=report_eps, max_verified_error=max_verified_error,
        min_verified_accuracy=min_verified_accuracy, spec=spec, method=method, target=target,
    )
    unit_test_from_kwargs({"name": "unit_test", **kwargs})  # mistakes fail here, at decoration

    def tag(fn: Callable) -> Callable:
        wrapper = _plugin_call(fn)
        setattr(wrapper, TAG, unit_test_from_kwargs(kwargs, fn))
        return wrapper

    return tag


def _plugin_call(fn: Callable) -> Callable:
    """`fn` without `auditai_result` in its signature: the plugin passes the result by keyword
    (so pytest never looks for a fixture of that name), and a test run without the plugin
    (`-p no:auditai`) is skipped with the reason instead of erroring on a missing fixture.

    The skip is `unittest.SkipTest`, which pytest reports as a skip: no pytest import here.
    """
    sig = inspect.signature(fn)
    wants = RESULT_ARG in sig.parameters

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        if RESULT_ARG in kw:  # the plugin's call
            if not wants:
                kw.pop(RESULT_ARG)
            return fn(*args, **kw)
        given = wants and RESULT_ARG in sig.bind_partial(*args, **kw).arguments
        if not given and os.environ.get("PYTEST_CURRENT_TEST"):
            import unittest

            ut = getattr(wrapper, TAG, None)
            raise unittest.SkipTest(
                f"auditai unit test '{getattr(ut, 'name', fn.__name__)}' not verified: the auditai "
                "pytest plugin is not active (disabled by -p no:auditai, or not installed)"
            )
        return fn(*args, **kw)  # a direct call, outside a pytest test

    if wants:
        wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[p for n, p in sig.parameters.items() if n != RESULT_ARG])
    return wrapper


def unit_test_fields(**kwargs: Any) -> dict[str, Any]:
    """Keyword arguments → YAML-like fields (drops Nones and empty report_eps)."""
    out = {k: v for k, v in kwargs.items() if v is not None}
    if out.get("report_eps") == ():
        del out["report_eps"]
    if out.get("norm") == "inf":
        del out["norm"]
    return out


def unit_test_from_kwargs(fields: Mapping[str, Any], fn: Callable | None = None) -> UnitTest:
    """A UnitTest from decorator / `pytest.mark.auditai` keywords; errors name fn's file/line."""
    fields = dict(fields)
    path = line = None
    if fn is not None:
        try:
            path = inspect.getsourcefile(fn)
            line = inspect.getsourcelines(fn)[1]
        except (OSError, TypeError):
            pass
        fields.setdefault("name", getattr(fn, "__name__", "unit_test"))
    for key in ("eps", "report_eps"):
        if isinstance(fields.get(key), tuple):
            fields[key] = list(fields[key])
    return make_unit_test(fields, path=path, line=line, where=f"unit test '{fields.get('name', '?')}'")


__all__ = [
    "DEFAULT_METHOD", "DEFAULT_SPEC", "DEFAULT_TARGET", "ENGINES", "METHODS", "NORMS", "RESULT_ARG",
    "SET_KEYS", "SPECS", "SUITE_KEYS", "TAG", "TARGETS", "THRESHOLD_KEYS", "UNIT_TEST_KEYS", "Suite",
    "UnitTest", "did_you_mean", "load_suite", "make_unit_test", "parse_suite", "unit_test",
    "unit_test_fields", "unit_test_from_kwargs",
]
