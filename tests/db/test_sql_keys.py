"""The idempotency-key table: validation, results stored as JSON, age-based cleanup."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import resetguard.db as db
from resetguard.db._keys import encode_result, is_duplicate_key

from .conftest import Admin

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]


def _pg() -> Any:
    import psycopg

    return psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres")


def _my() -> Any:
    import pymysql

    return pymysql.connect(host="127.0.0.1", user="root", password="", database="test")


@pytest.fixture
def key_table(admin: Admin) -> Iterator[str]:
    name = f"rg_keys_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        admin.sql("pg", f"DROP TABLE IF EXISTS {name}")
        admin.sql("my", f"DROP TABLE IF EXISTS {name}")


@pytest.mark.parametrize("connect", [_pg, _my], ids=["postgres", "mariadb"])
def test_purge_deletes_only_old_keys(connect: Any, key_table: str) -> None:
    db.ensure_key_table(connect, key_table=key_table)
    db.transaction(connect, lambda conn: 1, key="old", key_table=key_table)
    time.sleep(1.2)
    db.transaction(connect, lambda conn: 2, key="new", key_table=key_table)
    assert db.purge_keys(connect, older_than=1.0, key_table=key_table) == 1
    # "new" survived: its stored result comes back without running the unit
    assert db.transaction(connect, lambda conn: 99, key="new", key_table=key_table) == 2
    # "old" is gone: the unit runs again
    assert db.transaction(connect, lambda conn: 3, key="old", key_table=key_table) == 3


def test_async_purge(key_table: str) -> None:
    import asyncpg

    async def main() -> int:
        pool = await asyncpg.create_pool(
            "postgresql://postgres@127.0.0.1/test", min_size=1, max_size=1
        )
        try:

            async def unit(conn: Any) -> None:
                return None

            await db.aensure_key_table(pool, key_table=key_table)
            await db.atransaction(pool, unit, key="a", key_table=key_table)
            await asyncio.sleep(0.3)
            return await db.apurge_keys(pool, older_than=0.1, key_table=key_table)
        finally:
            await pool.close()

    assert asyncio.run(main()) == 1


def test_keyed_result_is_the_json_round_trip(key_table: str) -> None:
    first = db.transaction(_pg, lambda conn: ("a", 1), key="k", key_table=key_table)
    again = db.transaction(_pg, lambda conn: ("b", 2), key="k", key_table=key_table)
    assert first == ["a", 1]
    assert again == ["a", 1]


def test_keyed_unit_returning_non_json_fails_before_commit(admin: Admin, key_table: str) -> None:
    table = f"rg_nj_{uuid.uuid4().hex[:8]}"
    admin.sql("pg", f"CREATE TABLE {table} (v int)")
    try:

        def unit(conn: Any) -> object:
            conn.execute(f"INSERT INTO {table} VALUES (1)")
            return object()

        with pytest.raises(TypeError, match="must return JSON data"):
            db.transaction(_pg, unit, key="k", key_table=key_table)
        assert admin.sql("pg", f"SELECT count(*) FROM {table}") == [(0,)]  # rolled back
    finally:
        admin.sql("pg", f"DROP TABLE {table}")


def test_users_own_error_rolls_back_and_propagates_unchanged(admin: Admin) -> None:
    table = f"rg_own_{uuid.uuid4().hex[:8]}"
    admin.sql("pg", f"CREATE TABLE {table} (v int)")
    calls: list[int] = []
    try:

        def unit(conn: Any) -> None:
            calls.append(1)
            conn.execute(f"INSERT INTO {table} VALUES (1)")
            raise LookupError("no such customer")

        with pytest.raises(LookupError, match="no such customer"):
            db.transaction(_pg, unit)
        assert calls == [1]
        assert admin.sql("pg", f"SELECT count(*) FROM {table}") == [(0,)]
    finally:
        admin.sql("pg", f"DROP TABLE {table}")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": ""}, "key must be a non-empty string"),
        ({"key": "x" * 192}, "at most 191 characters"),
        ({"key": 7}, "got 7"),
        ({"key": "k", "key_table": "keys; DROP TABLE x"}, "key_table must be an SQL identifier"),
    ],
)
def test_bad_key_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        db.transaction(_pg, lambda conn: None, **kwargs)


@pytest.mark.parametrize("older_than", [0, -1, float("inf"), True, "1d"])
def test_bad_purge_age_is_named(older_than: Any) -> None:
    with pytest.raises(ValueError, match="older_than must be a positive number of seconds"):
        db.purge_keys(_pg, older_than)


def test_encode_and_duplicate_detection_units() -> None:
    assert encode_result({"a": [1, None]}) == '{"a":[1,null]}'
    with pytest.raises(TypeError, match="got set"):
        encode_result({1, 2})
    assert not is_duplicate_key(ValueError("x"))


def test_keys_and_results_with_quotes_dollars_and_percents(key_table: str) -> None:
    import asyncpg

    key = "it's $rg$ 100%s $"
    value = {"note": "a'b $rg$ %s \\ done$"}
    assert db.transaction(_pg, lambda conn: value, key=key, key_table=key_table) == value
    assert db.transaction(_pg, lambda conn: None, key=key, key_table=key_table) == value

    async def main() -> Any:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1/test")

        async def unit(c: Any) -> Any:
            return None

        try:
            return await db.atransaction(lambda: conn, unit, key=key, key_table=key_table)
        finally:
            if not conn.is_closed():
                await conn.close()

    assert asyncio.run(main()) == value


@pytest.mark.parametrize("connect", [_pg, _my], ids=["postgres", "mariadb"])
def test_concurrent_calls_with_one_key_apply_once(
    connect: Any, key_table: str, admin: Admin
) -> None:
    """Two callers run the same keyed unit at the same moment (a client retrying while its
    first request is still running): both units run, the second's key INSERT waits on the
    first's row lock, then finds the key committed, rolls its own work back and returns
    the first's result."""
    import threading

    kind = "pg" if connect is _pg else "my"
    table = f"rg_cc_{uuid.uuid4().hex[:8]}"
    admin.sql(kind, f"CREATE TABLE {table} (who varchar(16))")
    db.ensure_key_table(connect, key_table=key_table)
    both_inside = threading.Barrier(2, timeout=10)
    results: dict[str, Any] = {}

    def caller(who: str) -> None:
        def unit(conn: Any) -> str:
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {table} VALUES ('{who}')")
            both_inside.wait()
            return who

        results[who] = db.transaction(connect, unit, key="same", key_table=key_table)

    try:
        threads = [threading.Thread(target=caller, args=(w,)) for w in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert results["a"] == results["b"]  # one result for both callers
        rows = admin.sql(kind, f"SELECT who FROM {table}")
        assert [r[0] for r in rows] == [results["a"]]  # one unit's work, the other undone
    finally:
        admin.sql(kind, f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("multi", [False, True], ids=["one-statement", "multi-statements"])
def test_mysql_keys_with_quotes_and_backslashes(key_table: str, multi: bool) -> None:
    import pymysql
    from pymysql.constants import CLIENT

    conn = pymysql.connect(
        host="127.0.0.1",
        user="root",
        password="",
        database="test",
        client_flag=CLIENT.MULTI_STATEMENTS if multi else 0,
    )
    key = "it's a \\ key; COMMIT; --"
    value = {"note": "a'b \" %s ; DROP TABLE x"}
    try:
        assert db.transaction(conn, lambda c: value, key=key, key_table=key_table) == value
        assert db.transaction(conn, lambda c: None, key=key, key_table=key_table) == value
    finally:
        conn.close()
