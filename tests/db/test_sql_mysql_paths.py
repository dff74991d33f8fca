"""The MySQL-protocol key path on the real MariaDB: which way the key INSERT travels with
COMMIT (chosen from the version the server reports), quoting under sql_mode ORACLE and
NO_BACKSLASH_ESCAPES, no BEGIN of our own when autocommit is off, and a None result
stored as SQL NULL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import resetguard.db as db
from resetguard.db._keys import decode_result, mariadb_claim_and_commit, mysql_claim_and_commit
from resetguard.db._pools import mysql_claim

from .conftest import Admin

pytestmark = pytest.mark.mysql

# a key and a result that break any quoting done by hand
KEY = "it's a \\ key; COMMIT; END; -- \" $$"
VALUE = {"note": "a'b \" \\' %s ; END; DROP TABLE x", "n": [1, None]}


@pytest.fixture
def tables(admin: Admin) -> Iterator[tuple[str, str]]:
    """A (tag, n) table and a key table name, dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    table, keys = f"rg_my_{suffix}", f"rg_mykeys_{suffix}"
    admin.sql("my", f"CREATE TABLE {table} (tag varchar(64), n int) ENGINE=InnoDB")
    try:
        yield table, keys
    finally:
        admin.sql("my", f"DROP TABLE IF EXISTS {table}")
        admin.sql("my", f"DROP TABLE IF EXISTS {keys}")


def _connect(multi: bool = False, **kwargs: Any) -> Any:
    import pymysql
    from pymysql.constants import CLIENT

    flag = CLIENT.MULTI_STATEMENTS if multi else 0
    return pymysql.connect(
        host="127.0.0.1", user="root", password="", database="test", client_flag=flag, **kwargs
    )


def _questions(conn: Any) -> int:
    """Statements this session has sent so far (MariaDB's per-session ``Questions``)."""
    with conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Questions'")
        return int(cur.fetchone()[1])


def _unit(table: str, tag: str, value: Any) -> Any:
    def unit(conn: Any) -> Any:
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} (tag, n) VALUES (%s, 0)", (tag,))
            cur.execute(f"UPDATE {table} SET n = n + 1 WHERE tag = %s", (tag,))
        return value

    return unit


def _stored(admin: Admin, keys: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in admin.sql("my", f"SELECT idem_key, result FROM {keys}")]


# --------------------------------------------------------------------------- the chosen path


def test_path_follows_the_reported_server_version() -> None:
    """MariaDB (10.1 and later) gets the compound statement whatever the flags; a server
    reporting a MySQL version gets a multi-statement message only when the connection
    allows multi-statements, else two round trips."""
    plain, multi = _connect(), _connect(multi=True)
    try:
        assert "MariaDB" in plain.server_version  # the server on this machine
        assert mysql_claim(plain) is mariadb_claim_and_commit
        assert mysql_claim(multi) is mariadb_claim_and_commit
        for version in ("8.0.36", "8.4.0-log", "5.7.44-0ubuntu0.18.04.1"):
            plain.server_version = multi.server_version = version
            assert mysql_claim(plain) is None, version
            assert mysql_claim(multi) is mysql_claim_and_commit, version
        # MariaDB before 10.1 has no compound statements outside stored programs
        plain.server_version = multi.server_version = "5.5.5-10.0.38-MariaDB"
        assert mysql_claim(plain) is None
        assert mysql_claim(multi) is mysql_claim_and_commit
        plain.server_version = "11.4.2-MariaDB-log"
        assert mysql_claim(plain) is mariadb_claim_and_commit
    finally:
        plain.close()
        multi.close()


@pytest.mark.parametrize(
    ("version", "multi", "statements"),
    [
        (None, False, 3),  # MariaDB as reported: INSERT, UPDATE, the compound statement
        (None, True, 3),
        ("8.0.36", False, 4),  # MySQL: INSERT, UPDATE, key INSERT, COMMIT
        ("8.0.36", True, 4),  # the same four statements, the last two in one message
    ],
    ids=["mariadb", "mariadb-multi", "mysql", "mysql-multi"],
)
def test_each_path_commits_the_unit_and_its_key_once(
    admin: Admin, tables: tuple[str, str], version: str | None, multi: bool, statements: int
) -> None:
    table, keys = tables
    conn = _connect(multi=multi)
    try:
        db.ensure_key_table(conn, key_table=keys)
        if version is not None:
            conn.server_version = version
        before = _questions(conn)
        assert db.transaction(conn, _unit(table, "a", VALUE), key=KEY, key_table=keys) == VALUE
        assert _questions(conn) - before - 1 == statements  # - 1: the SHOW itself
        # the same key again: the stored result, the second run's work rolled back
        assert db.transaction(conn, _unit(table, "a", "other"), key=KEY, key_table=keys) == VALUE
    finally:
        conn.close()
    assert admin.sql("my", f"SELECT tag, n FROM {table}") == [("a", 1)]
    [(key, result)] = _stored(admin, keys)
    assert key == KEY
    assert result == '{"note":"a\'b \\" \\\\\' %s ; END; DROP TABLE x","n":[1,null]}'


def test_no_begin_is_sent_when_autocommit_is_off(tables: tuple[str, str]) -> None:
    """Autocommit off (PyMySQL's default): the unit's first statement opens the
    transaction, so a unit costs its statements and COMMIT, nothing more."""
    table, _ = tables
    conn = _connect()
    try:
        assert not conn.get_autocommit()
        before = _questions(conn)
        db.transaction(conn, _unit(table, "a", None))
        assert _questions(conn) - before - 1 == 3  # INSERT, UPDATE, COMMIT
    finally:
        conn.close()


def test_autocommit_connection_gets_a_transaction(admin: Admin, tables: tuple[str, str]) -> None:
    """Autocommit on: START TRANSACTION first, so a failing unit leaves nothing behind."""
    table, _ = tables
    conn = _connect(autocommit=True)

    def fails(c: Any) -> None:
        _unit(table, "a", None)(c)
        raise LookupError("no such customer")

    try:
        with pytest.raises(LookupError):
            db.transaction(conn, fails)
        assert admin.sql("my", f"SELECT count(*) FROM {table}") == [(0,)]
        db.transaction(conn, _unit(table, "b", None))
        assert conn.get_autocommit()  # left as the caller set it
    finally:
        conn.close()
    assert admin.sql("my", f"SELECT tag, n FROM {table}") == [("b", 1)]


# --------------------------------------------------------------------------- sql_mode

MODES = [
    "ORACLE",
    "NO_BACKSLASH_ESCAPES",
    "ORACLE,NO_BACKSLASH_ESCAPES",
    "ANSI_QUOTES,STRICT_ALL_TABLES",
]


@pytest.mark.parametrize("autocommit", [False, True], ids=["implicit", "autocommit"])
@pytest.mark.parametrize("multi", [False, True], ids=["plain", "multi"])
@pytest.mark.parametrize("mode", MODES)
def test_key_path_quoting_under_sql_mode(
    admin: Admin, tables: tuple[str, str], mode: str, multi: bool, autocommit: bool
) -> None:
    """The key and its result are quoted by the driver, which follows the server's
    NO_BACKSLASH_ESCAPES; ORACLE mode (where BEGIN starts a block) runs the compound
    statement and START TRANSACTION alike. What is stored is exactly the key and the JSON."""
    table, keys = tables
    conn = _connect(multi=multi, sql_mode=mode, autocommit=autocommit)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@SESSION.sql_mode")
            assert set(mode.split(",")) <= set(cur.fetchone()[0].split(","))
        assert db.transaction(conn, _unit(table, "a", VALUE), key=KEY, key_table=keys) == VALUE
        assert db.transaction(conn, _unit(table, "a", None), key=KEY, key_table=keys) == VALUE
        assert db.transaction(conn, _unit(table, "b", None), key="k2", key_table=keys) is None
    finally:
        conn.close()
    assert admin.sql("my", f"SELECT tag, n FROM {table} ORDER BY tag") == [("a", 1), ("b", 1)]
    stored = dict(_stored(admin, keys))
    assert set(stored) == {KEY, "k2"}
    assert decode_result(stored[KEY]) == VALUE
    assert stored["k2"] is None  # None is stored as SQL NULL


def test_aiomysql_key_path_under_oracle_and_no_backslash_escapes(
    admin: Admin, tables: tuple[str, str]
) -> None:
    import aiomysql

    table, keys = tables

    async def unit(conn: Any) -> Any:
        async with conn.cursor() as cur:
            await cur.execute(f"INSERT INTO {table} (tag, n) VALUES ('a', 0)")
            await cur.execute(f"UPDATE {table} SET n = n + 1 WHERE tag = 'a'")
        return VALUE

    async def main() -> list[Any]:
        pool = await aiomysql.create_pool(
            host="127.0.0.1",
            user="root",
            password="",
            db="test",
            minsize=1,
            maxsize=1,
            # (aiomysql's own sql_mode= sends the modes unquoted: a syntax error for two)
            init_command="SET SESSION sql_mode = 'ORACLE,NO_BACKSLASH_ESCAPES'",
        )
        try:
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute("SELECT @@SESSION.sql_mode")
                modes = set((await cur.fetchone())[0].split(","))
            assert {"ORACLE", "NO_BACKSLASH_ESCAPES"} <= modes
            first = await db.atransaction(pool, unit, key=KEY, key_table=keys)
            again = await db.atransaction(pool, unit, key=KEY, key_table=keys)
            return [first, again]
        finally:
            pool.close()
            await pool.wait_closed()

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [VALUE, VALUE]
    assert admin.sql("my", f"SELECT tag, n FROM {table}") == [("a", 1)]
    [(key, result)] = _stored(admin, keys)
    assert key == KEY
    assert decode_result(result) == VALUE


@pytest.mark.parametrize("connect", ["pg", "my"])
def test_none_result_is_stored_as_null(admin: Admin, connect: str) -> None:
    import psycopg

    keys = f"rg_nullkeys_{uuid.uuid4().hex[:8]}"

    def factory() -> Any:
        if connect == "pg":
            return psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres")
        return _connect()

    try:
        assert db.transaction(factory, lambda c: None, key="none", key_table=keys) is None
        assert db.transaction(factory, lambda c: 7, key="none", key_table=keys) is None
        assert db.transaction(factory, lambda c: "null", key="text", key_table=keys) == "null"
        rows = admin.sql(connect, f"SELECT idem_key, result FROM {keys} ORDER BY idem_key")
        assert [tuple(r) for r in rows] == [("none", None), ("text", '"null"')]
    finally:
        admin.sql(connect, f"DROP TABLE IF EXISTS {keys}")
