"""The layering of docs/architecture.md, read from the source (``scripts/import_cycles.py``):
no import cycle, no upward import."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
SCRIPT = ROOT / "scripts" / "import_cycles.py"
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


def _scan() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_cycles", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _imports() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports (any scope)."""
    scan = _scan()
    graph: dict[str, set[str]] = scan.import_graph(SRC / PACKAGE)
    return graph


def test_the_package_has_no_import_cycle() -> None:
    graph = _imports()
    assert len(graph) > 40  # the walk found the package
    assert _scan().cycles(graph) == []


def test_a_sibling_import_is_not_an_import_of_the_package(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("from . import b\nA = 1\n")
    (pkg / "b.py").write_text("B = 2\n")
    scan = _scan()
    graph = scan.import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"}
    assert scan.cycles(graph) == []


def test_the_retry_core_imports_only_downwards() -> None:
    graph = _imports()
    upward = [
        f"{module} -> {target}"
        for module, rank in CORE_RANKS.items()
        for target in graph[module]
        if target == PACKAGE or CORE_RANKS.get(target, 99) > rank
    ]
    assert upward == []
