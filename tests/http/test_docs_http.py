"""Every ```python example in docs/http.md runs (against a local server), and doctests pass."""

from __future__ import annotations

import doctest
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._server import FaultServer

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "http.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
BLOCKS = BLOCK.findall(PAGE.read_text())


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with FaultServer() as srv:
        yield srv.url


@pytest.fixture
def short_idle_url() -> Iterator[str]:
    """A service that closes keep-alive connections idle for 0.2 s (the learning example)."""
    with FaultServer(idle_close=0.2) as srv:
        yield srv.url


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_example_runs(
    index: int, base_url: str, short_idle_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, object] = {
        "__name__": f"docs_http_{index}",
        "base_url": base_url,
        "short_idle_url": short_idle_url,
    }
    exec(compile(BLOCKS[index], f"docs/http.md[{index}]", "exec"), namespace)
    if "short_idle_url" in BLOCKS[index]:
        # the learning example must show what it is about: a limit learned from the server
        out = capsys.readouterr().out
        match = re.search(r"limit ([0-9.]+) s, learned ([0-9.]+) s", out)
        assert match, out
        assert 0.15 < float(match.group(2)) < 2.0  # 80 % of an idle age past 0.2 s
        assert float(match.group(1)) == float(match.group(2))


def test_the_learning_example_is_on_the_page() -> None:
    assert sum("short_idle_url" in block for block in BLOCKS) == 1


@pytest.mark.parametrize(
    "module",
    ["resetguard.http._rules", "resetguard.http._idle", "resetguard.http._run"],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
