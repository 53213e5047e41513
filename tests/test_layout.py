"""mlcli's layout stays readable: no import cycle, layers in one order, few top-level modules, few
long functions, and no module reaching into another's private names.

The layer order itself is import-linter's contract in pyproject.toml (``make check`` runs
``lint-imports``); these tests hold what a contract cannot: cycles between any two modules
(imports inside functions and under ``TYPE_CHECKING`` count), the size limits, private names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "mlcli"
MAX_TOP_LEVEL_MODULES = 10
MAX_LINES = 80
MAX_LONG_FUNCTIONS = 2  # the plain and the stacked training loop, each read top to bottom


def _sources() -> dict[str, Path]:
    """Every module of mlcli and of its Hydra plug-ins, by dotted name."""
    found = {}
    for top in (PACKAGE, ROOT / "hydra_plugins"):
        for path in sorted(top.rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(edges.get(node, ())):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_anywhere_in_mlcli():
    """Between any two modules, counting every import (in functions, under TYPE_CHECKING)."""
    graph = grimp.build_graph("mlcli", include_external_packages=False)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert _cycles(edges) == []


def test_at_most_ten_top_level_modules_beside_the_packages():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


def test_at_most_two_functions_longer_than_eighty_lines():
    long = []
    for name, path in _sources().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1  # the def line to the last, docstring too
                if lines > MAX_LINES:
                    long.append(f"{name}.{node.name} ({lines} lines)")
    assert len(long) <= MAX_LONG_FUNCTIONS, long


def _module_names(tree: ast.Module, sources: dict[str, Path]) -> dict[str, str]:
    """Local names bound to mlcli modules (``from mlcli.x import y`` where y is a module, or
    ``import mlcli.x as y``), mapped to the module."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mlcli") and alias.asname:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlcli"):
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if dotted in sources:
                    bound[alias.asname or alias.name] = dotted
    return bound


def _private_uses(name: str, path: Path, sources: dict[str, Path]) -> list[str]:
    """``from mlcli.x import _y`` and ``x._y`` (x an mlcli module) in module ``name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("mlcli", ".")):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{name}: from {node.module} import {alias.name}")
    modules = _module_names(tree, sources)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and modules[node.value.id] != name
        ):
            found.append(f"{name}: {modules[node.value.id]}.{node.attr}")
    return found


def test_the_private_name_finder_finds_both_forms(tmp_path):
    path = tmp_path / "x.py"
    path.write_text(
        "from mlcli.engine.loop import _hidden\nfrom mlcli.engine import loop\nloop._other\n"
    )
    sources = {"mlcli.engine.loop": path, "mlcli.x": path}
    assert _private_uses("mlcli.x", path, sources) == [
        "mlcli.x: from mlcli.engine.loop import _hidden",
        "mlcli.x: mlcli.engine.loop._other",
    ]


@pytest.mark.parametrize("name", sorted(_sources()))
def test_no_module_imports_another_modules_private_names(name):
    sources = _sources()
    assert _private_uses(name, sources[name], sources) == []
