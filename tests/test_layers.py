"""The layers of the code (docs/layers.md), checked on the source: arrows point down only.

``orchestrator/`` never imports ``launchers/`` (the daemon finds a backend by name);
``orchestrator/nodeside/`` imports only the standard library (it runs on compute nodes with
``python -I -S``); and no two modules import each other, directly or round a circle, at import
time (imports inside functions and under ``TYPE_CHECKING`` do not count: they run later or never).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "launchers", "sweeps", "hydra_plugins")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        yield _module_name(path), path


def _imports(path: Path, *, at_import_time: bool) -> Iterator[tuple[str, int]]:
    """Modules ``path`` imports (absolute names) with their line numbers."""
    tree = ast.parse(path.read_text(), str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(nodes: list[ast.stmt]) -> Iterator[tuple[str, int]]:
        for node in nodes:
            if isinstance(node, ast.Import):
                yield from ((alias.name, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                yield base, node.lineno
                # ``from pkg import sub`` may name a sub-module.
                yield from ((f"{base}.{alias.name}", node.lineno) for alias in node.names)
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if not (at_import_time and "TYPE_CHECKING" in test):
                    yield from visit(node.body)
                yield from visit(node.orelse)
            elif isinstance(node, ast.Try | ast.With):
                for block in ("body", "handlers", "orelse", "finalbody"):
                    for child in getattr(node, block, []):
                        inner = child.body if isinstance(child, ast.ExceptHandler) else [child]
                        yield from visit(inner)
            elif not at_import_time and hasattr(node, "body"):
                yield from visit(node.body)

    yield from visit(tree.body)


def test_orchestrator_never_imports_launchers() -> None:
    arrows = [
        f"{module} line {line} imports {target}"
        for module, path in _sources("orchestrator")
        for target, line in _imports(path, at_import_time=False)
        if target == "launchers" or target.startswith("launchers.")
    ]
    assert not arrows, "orchestrator/ must not import launchers/:\n" + "\n".join(arrows)


def test_nodeside_imports_only_the_standard_library() -> None:
    bad = [
        f"{module} line {line} imports {target}"
        for module, path in _sources("orchestrator/nodeside")
        for target, line in _imports(path, at_import_time=False)
        if target.split(".")[0] not in sys.stdlib_module_names
        and target.split(".")[0] != "__future__"
        and not target.startswith("orchestrator.nodeside")
        and target != "orchestrator"
    ]
    assert not bad, "\n".join(bad)
    for module in ("pathlib", "typing"):  # each costs every task milliseconds at start
        assert not [t for _, p in _sources("orchestrator/nodeside") for t, _ in
                    _imports(p, at_import_time=True) if t == module], module  # fmt: skip


def _import_graph() -> dict[str, set[str]]:
    modules = {name: path for package in PACKAGES for name, path in _sources(package)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {t for t, _ in _imports(path, at_import_time=True) if t in modules}
        graph[name] = targets - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, or None (depth-first search, iterative)."""
    state: dict[str, int] = {}
    for start, targets in graph.items():
        if state.get(start):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(targets)))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                # A package's __init__ importing its own sub-modules is not a circle.
                if not child.startswith(node + ".") and not node.startswith(child + "."):
                    return [*path[path.index(child) :], child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_no_import_circles() -> None:
    cycle = _cycle(_import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("package", PACKAGES)
def test_the_graph_sees_the_package(package: str) -> None:
    # The checks above would pass vacuously on a wrong root or an empty parse.
    assert sum(1 for name in _import_graph() if name.split(".")[0] == package) >= 3
