"""The proxy package has no import cycle: stages are written against ``StageHost``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "import_cycles", REPO / "scripts" / "import_cycles.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_scan_finds_a_cycle_hidden_under_type_checking(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import B\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\nB = 1\n"
    )
    (pkg / "c.py").write_text("from pkg import a\n")
    scan = _script()
    assert scan.cycles(scan.import_graph(pkg)) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle_in_the_proxy_package() -> None:
    scan = _script()
    graph = scan.import_graph(REPO / "src" / "resetguard")
    assert "resetguard.proxy._stages" in graph["resetguard.proxy._proxy"]
    assert not graph["resetguard.proxy._stages"] & {"resetguard.proxy._proxy"}
    knots = [g for g in scan.cycles(graph) if any(m.startswith("resetguard.proxy") for m in g)]
    assert knots == []
