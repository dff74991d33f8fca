"""Every ```python example in the README and the core docs pages runs, and core doctests pass."""

from __future__ import annotations

import doctest
import importlib
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", "docs/retry.md", "docs/pipeline.md"]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        path = ROOT / page
        if not path.exists():
            continue
        for i, block in enumerate(BLOCK.findall(path.read_text())):
            found.append((page, i, textwrap.dedent(block)))  # a block may sit in a list
    return found


@pytest.mark.parametrize(("page", "index", "code"), _blocks(), ids=lambda v: str(v)[:30])
def test_doc_example_runs(page: str, index: int, code: str) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{index}"}
    if "base_url" not in code:
        exec(compile(code, f"{page}[{index}]", "exec"), namespace)
        return
    from tests.http._server import FaultServer  # the examples' "your service"

    with FaultServer() as server:
        namespace["base_url"] = server.url
        exec(compile(code, f"{page}[{index}]", "exec"), namespace)


@pytest.mark.parametrize(
    "module",
    [
        "resetguard._api",
        "resetguard._backoff",
        "resetguard._classify",
        "resetguard._drivers",
        "resetguard._engine",
        "resetguard._events",
        "resetguard._retry",
        "resetguard.testing",
    ],
)
def test_docstring_examples(module: str) -> None:
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
