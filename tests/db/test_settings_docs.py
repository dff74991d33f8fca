"""Every ```python example in docs/redis.md, docs/mongodb.md and docs/pool-settings.md runs,
and the docstring examples of the Redis / MongoDB / settings modules pass."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

from tests.conftest import REDIS_HOST, REDIS_PORT, require_service

ROOT = Path(__file__).resolve().parent.parent.parent
PAGES = ["docs/redis.md", "docs/mongodb.md", "docs/pool-settings.md"]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        for i, block in enumerate(BLOCK.findall((ROOT / page).read_text())):
            found.append((page, i, block))
    return found


def test_every_page_has_examples() -> None:
    pages = {page for page, _, _ in _blocks()}
    assert pages == set(PAGES)


@pytest.mark.parametrize(("page", "index", "code"), _blocks(), ids=lambda v: str(v)[:30])
def test_doc_example_runs(page: str, index: int, code: str) -> None:
    if page == "docs/redis.md":
        require_service("Redis", REDIS_HOST, REDIS_PORT)
    namespace: dict[str, object] = {"__name__": f"docs_{index}"}
    exec(compile(code, f"{page}[{index}]", "exec"), namespace)


@pytest.mark.parametrize("module", ["resetguard.db._settings", "resetguard.db._redis"])
def test_docstring_examples(module: str) -> None:
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("resetguard.db._redis", "redis_client"),
        ("resetguard.db._redis", "async_redis_client"),
        ("resetguard.db._mongo", "mongo_listeners"),
        ("resetguard.db._mongo", "mongo_client_options"),
    ],
)
def test_public_function_examples_run(module: str, name: str) -> None:
    """The ``Example::`` blocks that are code, not doctests, run too."""
    if module.endswith("_redis"):
        require_service("Redis", REDIS_HOST, REDIS_PORT)
    doc = getattr(importlib.import_module(module), name).__doc__
    assert doc
    assert "Example::" in doc
    example = doc.split("Example::", 1)[1]
    lines = [line for line in example.splitlines() if line.strip()]
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    code = "\n".join(line[indent:] for line in example.splitlines())
    exec(compile(code, f"<{name} example>", "exec"), {"__name__": "example"})
