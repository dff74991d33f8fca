"""Issue 10's database cases, written on the core engine directly (``Retry.run`` and
``a.sent()``), with a real psycopg transaction on the local PostgreSQL.

* A ``pg_terminate_backend`` before ``sent()`` is rerun on a fresh connection, and the row
  is written once.
* A reset injected at COMMIT through resetguard proxy surfaces as an unknown outcome after
  exactly one run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import resetguard
from resetguard.proxy import FaultProxy

from ._commit_toxic import SqlReset
from .conftest import PG, Admin

pytestmark = pytest.mark.postgres

POLICY = resetguard.Retry(
    attempts=3, backoff=resetguard.Backoff(initial=0.01, cap=0.05), idempotent=None
)


@pytest.fixture
def table(admin: Admin) -> Iterator[str]:
    name = f"rg_pnr_{uuid.uuid4().hex[:10]}"
    admin.sql("pg", f"CREATE TABLE {name} (tag text)")
    try:
        yield name
    finally:
        admin.sql("pg", f"DROP TABLE IF EXISTS {name}")


def test_terminate_backend_before_sent_reruns_on_fresh_connection(admin: Admin, table: str) -> None:
    import psycopg

    pids: list[int] = []

    def attempt(a: Any) -> int:
        with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres") as conn:
            pids.append(conn.info.backend_pid)
            conn.execute(f"INSERT INTO {table} VALUES ('row')")
            if a.number == 1:
                admin.kill("pg", conn.info.backend_pid)
            conn.execute(f"INSERT INTO {table} VALUES ('second')")  # fails on attempt 1
            a.sent()
            conn.commit()
            return a.number

    assert POLICY.run(attempt) == 2
    assert len(pids) == 2
    assert pids[0] != pids[1]
    assert admin.count("pg", table, "row") == 1
    assert admin.count("pg", table, "second") == 1


def test_reset_at_commit_through_proxy_is_unknown_after_one_run(admin: Admin, table: str) -> None:
    import psycopg

    runs: list[int] = []
    with FaultProxy(PG) as proxy:

        def attempt(a: Any) -> None:
            runs.append(a.number)
            with psycopg.connect(
                f"host=127.0.0.1 port={proxy.port} dbname=test user=postgres"
            ) as conn:
                conn.execute(f"INSERT INTO {table} VALUES ('row')")
                proxy.add_toxic(SqlReset(stream="upstream", when="after"))
                a.sent()
                conn.commit()  # committed on the server; the reply is lost

        with pytest.raises(psycopg.OperationalError) as caught:
            POLICY.run(attempt)
    assert runs == [1]
    assert resetguard.outcome_unknown(caught.value)
    assert admin.count("pg", table, "row") == 1  # it did commit: a rerun would duplicate it
