"""Every ```python example in docs/databases.md runs against the local servers, and the
resetguard.db docstrings name real functions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import resetguard.db

ROOT = Path(__file__).resolve().parents[2]
PAGE = "docs/databases.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
BLOCKS = BLOCK.findall((ROOT / PAGE).read_text())

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]


def test_page_has_examples() -> None:
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_example_runs(index: int, postgres_dsn: str, mysql_params: dict[str, object]) -> None:
    namespace: dict[str, object] = {"__name__": f"databases_doc_{index}"}
    exec(compile(BLOCKS[index], f"{PAGE}[{index}]", "exec"), namespace)


def test_public_api_is_sorted_and_complete() -> None:
    assert resetguard.db.__all__ == sorted(resetguard.db.__all__)
    for name in resetguard.db.__all__:
        assert hasattr(resetguard.db, name), name
