"""The layering docs/architecture.md promises, read from the source: services/ never
imports Ray, product code never imports test support, and services' packages import
each other one way only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"
# none left: the console and the API share the deployment types through services/platform.py
KNOWN_CYCLES: set[frozenset[str]] = set()


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (lazy imports too)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def package_graph() -> dict[str, set[str]]:
    """services' first-level packages (``services/auth`` -> ``auth``) and the others each
    one imports."""
    graph: dict[str, set[str]] = {}
    for path in SERVICES.rglob("*.py"):
        parts = path.relative_to(SERVICES).parts
        if len(parts) < 2:
            continue  # top-level modules (config, errors) are below every package
        used = {m.split(".")[1] for m in imports_of(path) if m.startswith("services.")}
        graph.setdefault(parts[0], set()).update(used - {parts[0]} - {"config", "errors"})
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected groups of more than one package (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, set()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.add(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_services_never_import_ray() -> None:
    offenders = [str(path.relative_to(SERVICES)) for path in SERVICES.rglob("*.py")
                 if any(m == "ray" or m.startswith("ray.") for m in imports_of(path))]  # fmt: skip
    assert offenders == []


def test_product_code_never_imports_test_support() -> None:
    """The tiny random-weight models and the fakes live in tests/, out of the product."""
    roots = (SERVICES, SERVICES.parent / "deployments")
    offenders = [
        str(path)
        for root in roots
        for path in root.rglob("*.py")
        if any(m == "tests" or m.startswith("tests.") for m in imports_of(path))
    ]
    assert offenders == []


def test_packages_import_each_other_one_way() -> None:
    assert cycles(package_graph()) == KNOWN_CYCLES


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, set()),
        ({"a": {"b"}, "b": {"a"}}, {frozenset({"a", "b"})}),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, {frozenset({"a", "b", "c"})}),
    ],
)
def test_the_cycle_finder_finds_cycles(
    graph: dict[str, set[str]], expected: set[frozenset[str]]
) -> None:
    assert cycles(graph) == expected
