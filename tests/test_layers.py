"""The shape of the house (docs/internals.md): import-layer contracts and no import cycle.

Two checks, both reading the source only:

- the import-linter contracts of pyproject.toml (`lint-imports`): the engine imports only
  torch and the standard library; the library never imports the plugin or pytest; the
  spec-sheet record imports no renderer;
- no cycle among the modules of `auditai/` and `pytest_auditai/`, counting every `import`:
  at module level, inside functions and under `if TYPE_CHECKING:`. An edge goes to the module
  named (`from a.b import c` is an edge to `a.b.c` when that is a module, else to `a.b`); the
  implicit import of a module's parent packages is not an edge.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def modules(packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted name → file, for every module of `packages` (under the repository root)."""
    out: dict[str, Path] = {}
    for pkg in packages:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()

    def add(target: str) -> None:
        if target in known and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                add(sub if sub in known else mod)
    return found


def graph(packages: tuple[str, ...] = ("auditai", "pytest_auditai")) -> dict[str, set[str]]:
    """Module → the project modules it imports."""
    known = modules(packages)
    return {m: _imports(m, p, known) for m, p in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        # iterative DFS: (node, iterator over its successors)
        work = [(v, iter(sorted(g[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(g[nxt]))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def path_in(g: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One cycle through the first module of a component, for the failure message."""
    start = comp[0]
    members = set(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for u in frontier:
            for w in sorted(g[u] & members):
                if w == start:
                    chain = [u]
                    while chain[-1] != start:
                        chain.append(prev[chain[-1]])
                    return [start, *reversed(chain[:-1]), start] if u != start else [start, start]
                if w not in prev:
                    prev[w] = u
                    nxt.append(w)
        frontier = nxt
    return comp


KNOWN_CYCLES: list[list[str]] = []  # none: keep it so


def test_no_import_cycle_in_the_project():
    g = graph()
    found = cycles(g)
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert all(c in found for c in KNOWN_CYCLES), "a known cycle is gone: take it off the list"
    assert not new, "import cycles: " + "; ".join(" → ".join(path_in(g, c)) for c in new)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    """The finder itself: a lazy import inside a function closes a cycle it must report."""
    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkgx import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkgx.c import g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (pkg / "d.py").write_text("import pkgx.a\n")
    known = {}
    for f in sorted(pkg.glob("*.py")):
        name = "pkgx" if f.stem == "__init__" else f"pkgx.{f.stem}"
        known[name] = f
    g = {m: _imports(m, p, known) for m, p in known.items()}
    assert g["pkgx.a"] == {"pkgx.b"} and g["pkgx.c"] == {"pkgx.a"} and g["pkgx.d"] == {"pkgx.a"}
    assert cycles(g) == [["pkgx.a", "pkgx.b", "pkgx.c"]]
    assert path_in(g, ["pkgx.a", "pkgx.b", "pkgx.c"]) == ["pkgx.a", "pkgx.b", "pkgx.c", "pkgx.a"]


def test_the_engine_imports_only_torch_and_the_standard_library():
    """Every import in auditai/bounds: torch, the standard library, auditai.bounds itself, the
    two torch-free leaves (auditai.errors, auditai.names), or the optional auto_LiRPA adapter
    (lirpa.py, imported lazily)."""
    allowed_project = {"auditai.errors", "auditai.names"}
    bad = []
    for f in sorted((ROOT / "auditai" / "bounds").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    continue  # relative: inside auditai.bounds
                names = [node.module or ""]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if (top == "torch" or top in sys.stdlib_module_names or n.startswith("auditai.bounds")
                        or n in allowed_project or (top == "auto_LiRPA" and f.name == "lirpa.py")):
                    continue
                bad.append(f"{f.relative_to(ROOT)}:{node.lineno}: {n}")
    assert not bad, "auditai/bounds imports beyond torch and the standard library: " + ", ".join(bad)


def test_import_linter_contracts_hold():
    """`lint-imports` on pyproject.toml's contracts (import-linter is a dev dependency)."""
    cli = pytest.importorskip("importlinter.cli", reason="import-linter is not installed (pip install -e '.[dev]')")
    code = cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert code == 0, "an import-layer contract is broken: run `lint-imports` for the chain"
