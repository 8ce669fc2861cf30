"""YAML suites: `parse_suite` (text) and `load_suite` (a file) → `auditai.suite_schema.Suite`.

Every mistake is a `SuiteError` naming the file, the line and the key; yaml is imported only
when a suite is read.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from auditai import names
from auditai.errors import SuiteError
from auditai.suite_schema import (
    DEFAULT_SPEC,
    SUITE_KEYS,
    Suite,
    UnitTest,
    _named,
    _one_of,
    did_you_mean,
    make_unit_test,
)


def _resolve_source(value: str, base: Path | None) -> str:
    """A file path relative to the suite's folder; `pkg.mod:attr` sources stay as written."""
    if _is_python_ref(value) or base is None:
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p))


def _is_python_ref(value: str) -> bool:
    """'package.module:attribute' (and not a Windows drive like C:\\...)."""
    if ":" not in value:
        return False
    mod, _, attr = value.partition(":")
    return bool(mod) and bool(attr) and all(part.isidentifier() for part in mod.split(".")) and (
        attr.replace(".", "_").isidentifier()
    )


def parse_suite(text: str, path: str | os.PathLike | None = None) -> Suite:
    """Parse and validate a YAML suite's text. Raises SuiteError (file, line, key) on any mistake."""
    import yaml

    spath = None if path is None else str(path)
    base = None if path is None else Path(path).resolve().parent

    def err(msg: str, line: int | None = None, key: str | None = None) -> SuiteError:
        return SuiteError(msg, path=spath, line=line, key=key)

    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            raise err(f"not valid YAML: {e.problem or e}", mark.line + 1 if mark else None) from None
        except yaml.YAMLError as e:
            raise err(f"not valid YAML: {e}") from None
        if root is None:
            raise err("the suite is empty; expected a mapping with `unit_tests:` (and model, data, ...)", 1)

        def value(node):
            try:
                return loader.construct_object(node, deep=True)
            except yaml.YAMLError as e:
                raise err(f"cannot read value: {e}", node.start_mark.line + 1) from None

        def mapping(node, what: str, line_key: str | None = None) -> tuple[dict, dict, dict]:
            if not isinstance(node, yaml.MappingNode):
                raise err(f"{what} must be a mapping (key: value lines), got {_node_kind(node)}",
                          node.start_mark.line + 1, line_key)
            vals, lines, nodes = {}, {}, {}
            for knode, vnode in node.value:
                k = value(knode)
                if not isinstance(k, str):
                    raise err(f"{what}: keys must be text, got {k!r}", knode.start_mark.line + 1)
                if k in vals:
                    raise err(f"{what}: key '{k}' appears twice", knode.start_mark.line + 1, k)
                vals[k], lines[k], nodes[k] = value(vnode), knode.start_mark.line + 1, vnode
            return vals, lines, nodes

        top, top_lines, top_nodes = mapping(root, "the suite")
        for k in top:
            if k not in SUITE_KEYS:
                raise err(f"unknown key '{k}' at the top of the suite; expected one of "
                          f"{_one_of(SUITE_KEYS)}" + did_you_mean(k, SUITE_KEYS), top_lines[k], k)
        for k in ("suite", "description", "model", "data"):
            if k in top and top[k] is not None and not isinstance(top[k], str):
                raise err(f"expected a text (a path or package.module:attribute for model/data), "
                          f"got {top[k]!r}", top_lines[k], k)
        spec = _named(names.parse_spec_kind, top.get("spec", DEFAULT_SPEC),
                      lambda m: err(m, top_lines.get("spec"), "spec")) or DEFAULT_SPEC
        method = _named(names.parse_method, top.get("method"), lambda m: err(m, top_lines.get("method"), "method"))
        engine = _named(names.parse_engine, top.get("engine"), lambda m: err(m, top_lines.get("engine"), "engine"))
        target = _named(names.parse_target, top.get("target"), lambda m: err(m, top_lines.get("target"), "target"))
        if "unit_tests" not in top_nodes:
            raise err("the suite has no `unit_tests:` list; expected a list of unit tests "
                      "(name, direction/dims/basis, eps, max_verified_error)", 1, "unit_tests")
        ut_node = top_nodes["unit_tests"]
        if not isinstance(ut_node, yaml.SequenceNode) or not ut_node.value:
            raise err(f"expected a non-empty list of unit tests, got {_node_kind(ut_node)}",
                      top_lines["unit_tests"], "unit_tests")
        tests: list[UnitTest] = []
        seen: dict[str, int] = {}
        for i, node in enumerate(ut_node.value):
            line = node.start_mark.line + 1
            vals, lines, _ = mapping(node, f"unit_tests[{i}]", "unit_tests")
            label = f"unit_tests[{i}]" + (f" ('{vals['name']}')" if isinstance(vals.get("name"), str) else "")
            ut = make_unit_test(vals, path=spath, line=line, key_lines=lines, where=label)
            if ut.name in seen:
                raise err(f"{label}: name '{ut.name}' is already used by the unit test on line "
                          f"{seen[ut.name]}; names must be unique", lines.get("name", line), "name")
            seen[ut.name] = line
            tests.append(dataclasses.replace(ut, spec=ut.spec or spec, method=ut.method or method,
                                             target=ut.target or target))
    finally:
        loader.dispose()
    name = top.get("suite") or (Path(spath).stem if spath else "suite")
    return Suite(
        name=name,
        path=spath,
        model=_resolve_source(top["model"], base) if top.get("model") else None,
        data=_resolve_source(top["data"], base) if top.get("data") else None,
        train_data=_resolve_source(top["train_data"], base) if top.get("train_data") else None,
        spec=spec,
        method=method,
        engine=engine,
        unit_tests=tuple(tests),
        description=top.get("description"),
        lines=top_lines,
    )


def _node_kind(node: Any) -> str:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    v = getattr(node, "value", "")
    return f"the value {v!r}" if v != "" else "nothing"


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and validate a YAML suite file (see `parse_suite`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SuiteError(f"cannot read the suite: {e.strerror or e}", path=str(path)) from None
    except UnicodeDecodeError:
        raise SuiteError("the suite is not UTF-8 text", path=str(path)) from None
    return parse_suite(text, p)
