"""resetguard.db.execute / aexecute: single statements outside a transaction. Reads are
retried on any connection fault; writes only when the fault came before sending."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import resetguard
import resetguard.db as db
from resetguard.proxy import FaultProxy

from ._commit_toxic import MARKER, SqlReset
from .conftest import MY, PG, Admin

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

FAST = resetguard.Backoff(initial=0.01, cap=0.05)


@pytest.fixture
def pg_table(admin: Admin) -> Iterator[str]:
    name = f"rg_ex_{uuid.uuid4().hex[:10]}"
    admin.sql("pg", f"CREATE TABLE {name} (tag text)")
    try:
        yield name
    finally:
        admin.sql("pg", f"DROP TABLE IF EXISTS {name}")


def test_read_is_retried_after_the_pooled_session_was_killed(admin: Admin) -> None:
    import psycopg_pool

    with psycopg_pool.ConnectionPool(
        "host=127.0.0.1 port=5432 dbname=test user=postgres", min_size=1, max_size=1
    ) as pool:
        first = db.execute(pool, "SELECT pg_backend_pid()", readonly=True)[0][0]
        admin.kill("pg", first)  # the pool (check=None) hands out the dead connection
        second = db.execute(pool, "SELECT pg_backend_pid()", readonly=True)[0][0]
    assert second != first


def test_read_is_retried_after_a_reset_mid_statement() -> None:
    import psycopg

    with FaultProxy(PG) as proxy:
        proxy.add_toxic(SqlReset(stream="upstream", pattern=MARKER, when="after"))
        calls: list[int] = []

        def connect() -> Any:
            calls.append(1)
            if len(calls) == 2:
                proxy.clear_toxics()
            return psycopg.connect(f"host=127.0.0.1 port={proxy.port} dbname=test user=postgres")

        rows = db.execute(connect, f"SELECT {MARKER} 42", readonly=True)
    assert rows == [(42,)]
    assert len(calls) == 2


def test_write_sent_then_reset_is_not_retried(admin: Admin, pg_table: str) -> None:
    import psycopg

    with FaultProxy(PG) as proxy:
        proxy.add_toxic(SqlReset(stream="upstream", pattern=MARKER, when="after"))
        calls: list[int] = []

        def connect() -> Any:
            calls.append(1)
            return psycopg.connect(
                f"host=127.0.0.1 port={proxy.port} dbname=test user=postgres", autocommit=True
            )

        with pytest.raises(resetguard.OutcomeUnknown) as caught:
            db.execute(connect, f"INSERT INTO {pg_table} {MARKER} VALUES ('w')", readonly=False)
    assert len(calls) == 1  # never run twice
    assert resetguard.outcome_unknown(caught.value)
    # an autocommit INSERT whose reply was lost did run: a retry would have duplicated it
    assert admin.count("pg", pg_table, "w") == 1


def test_write_refused_before_sending_is_retried(admin: Admin, pg_table: str) -> None:
    import pymysql

    name = f"rg_ex_{uuid.uuid4().hex[:10]}"
    admin.sql("my", f"CREATE TABLE {name} (tag varchar(16)) ENGINE=InnoDB")
    try:
        with FaultProxy(MY) as proxy:
            down = proxy.add_toxic("down")

            def back_up(event: resetguard.RetryScheduled) -> None:
                proxy.remove_toxic(down.name)

            policy = resetguard.Retry(backoff=FAST, on_retry=back_up, idempotent=False)
            count = db.execute(
                lambda: pymysql.connect(
                    host="127.0.0.1", port=proxy.port, user="root", password="", database="test"
                ),
                f"INSERT INTO {name} VALUES (%s)",
                ("w",),
                readonly=False,
                policy=policy,
            )
        assert count == 1
        assert admin.count("my", name, "w") == 1
    finally:
        admin.sql("my", f"DROP TABLE IF EXISTS {name}")


def test_async_read_is_retried_after_kill(admin: Admin) -> None:
    import asyncpg

    async def main() -> tuple[int, int]:
        pool = await asyncpg.create_pool(
            "postgresql://postgres@127.0.0.1:5432/test", min_size=1, max_size=1
        )
        try:
            first = (await db.aexecute(pool, "SELECT pg_backend_pid()", readonly=True))[0][0]
            await asyncio.to_thread(admin.kill, "pg", first)
            second = (await db.aexecute(pool, "SELECT pg_backend_pid()", readonly=True))[0][0]
            return first, second
        finally:
            await pool.close()

    first, second = asyncio.run(main())
    assert first != second


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="readonly must be True or False, got 'yes'"):
        db.execute(lambda: None, "SELECT 1", readonly="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"policy must be a resetguard\.Retry, got 3"):
        db.execute(lambda: None, "SELECT 1", readonly=True, policy=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pool must be"):
        db.execute(42, "SELECT 1", readonly=True)
    import psycopg_pool

    apool = psycopg_pool.AsyncConnectionPool("host=127.0.0.1", open=False)
    with pytest.raises(TypeError, match="is asynchronous"):
        db.execute(apool, "SELECT 1", readonly=True)
