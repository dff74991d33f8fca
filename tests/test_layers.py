"""The layering of docs/architecture.md, read from the source: no import cycle, no upward import."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "resetguard"

#: The retry core, bottom first: a module may import only modules of its own or a lower rank.
CORE_RANKS = {
    "resetguard._validate": 0,
    "resetguard._clock": 0,
    "resetguard._exceptions": 0,
    "resetguard._events": 1,
    "resetguard._classify": 1,
    "resetguard._backoff": 1,
    "resetguard._breaker": 2,
    "resetguard._budget": 2,
    "resetguard._policy": 3,
    "resetguard._engine": 4,
    "resetguard._drivers": 5,
    "resetguard._retry": 6,
    "resetguard._api": 7,
    "resetguard._pipeline": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports (any scope)."""
    modules = {_module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # ``from . import _clock`` imports the module, not the package's __init__
                own = [stem] if node.module else []
                targets = own + [f"{stem}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = _imports()
    assert len(graph) > 40  # the walk found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_retry_core_imports_only_downwards() -> None:
    graph = _imports()
    upward = [
        f"{module} -> {target}"
        for module, rank in CORE_RANKS.items()
        for target in graph[module]
        if target == PACKAGE or CORE_RANKS.get(target, 99) > rank
    ]
    assert upward == []
