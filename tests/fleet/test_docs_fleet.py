"""Every ```python block of docs/fleet.md runs against the real Redis, and the fleet
module's doctests pass; the keys the examples make are deleted after each."""

from __future__ import annotations

import doctest
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import resetguard.fleet._redis

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "fleet.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
NAMESPACES = ("shop", "doc")  # the namespaces the examples use


def _blocks() -> list[str]:
    return BLOCK.findall(PAGE.read_text())


@pytest.fixture
def clean_keys(redis_url: str) -> Iterator[None]:
    import redis

    yield
    client = redis.Redis.from_url(redis_url)
    for ns in NAMESPACES:
        keys = list(client.scan_iter(match=f"{ns}:*"))
        if keys:
            client.delete(*keys)
    client.close()


def test_page_has_examples() -> None:
    assert len(_blocks()) >= 5


@pytest.mark.usefixtures("clean_keys")
@pytest.mark.parametrize("index", range(len(_blocks())))
def test_doc_example_runs(index: int) -> None:
    code = _blocks()[index]
    namespace: dict[str, object] = {"__name__": f"fleet_docs_{index}"}
    exec(compile(code, f"docs/fleet.md[{index}]", "exec"), namespace)


@pytest.mark.usefixtures("clean_keys")
def test_docstring_examples() -> None:
    result = doctest.testmod(resetguard.fleet._redis, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
