"""Every ```python block of the breaker and budget pages runs, and the modules' doctests pass."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["docs/circuit-breaker.md", "docs/budget.md"]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _blocks() -> list[tuple[str, int, str]]:
    return [
        (page, i, block)
        for page in PAGES
        for i, block in enumerate(BLOCK.findall((ROOT / page).read_text()))
    ]


def test_every_page_has_examples() -> None:
    counts = {page: sum(1 for p, _, _ in _blocks() if p == page) for page in PAGES}
    assert all(n >= 3 for n in counts.values()), counts


@pytest.mark.parametrize(("page", "index", "code"), _blocks(), ids=lambda v: str(v)[:30])
def test_doc_example_runs(page: str, index: int, code: str) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{index}"}
    exec(compile(code, f"{page}[{index}]", "exec"), namespace)


@pytest.mark.parametrize("module", ["resetguard._breaker", "resetguard._budget"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
