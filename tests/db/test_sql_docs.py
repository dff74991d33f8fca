"""Every ```python example in docs/databases.md runs against the local servers, and the
resetguard.db docstrings name real functions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import resetguard.db

ROOT = Path(__file__).resolve().parents[2]
PAGE = "docs/databases.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
BLOCKS = BLOCK.findall((ROOT / PAGE).read_text())

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]


@pytest.fixture(scope="module", autouse=True)
def _drop_default_key_table(admin: Any) -> Iterator[None]:
    """The examples use the default key table: drop it afterwards (shared servers)."""
    yield
    for kind in ("pg", "my"):
        admin.sql(kind, "DROP TABLE IF EXISTS resetguard_keys")


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
