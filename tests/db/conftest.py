"""The driver matrix for resetguard.db's tests: one harness per driver and pool, an admin
that kills sessions by id, a resetguard proxy in front of each server, a unique table per
test (dropped afterwards).

A unit in these tests is a list of SQL statements plus a ``hook(run, step, session_id)``
called before each statement, where a test kills the session or arms a proxy toxic, and
once more after the last one (``step == len(statements)``: COMMIT comes next).
The unit returns its run number, so a test sees which run committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import resetguard
import resetguard.db as db
from resetguard.proxy import FaultProxy

PG = ("127.0.0.1", 5432)
MY = ("127.0.0.1", 3306)

Hook = Callable[[int, int, int], None]  # (run, step, session id)


class Admin:
    """One autocommit admin connection per server: kills sessions, counts rows, drops tables."""

    def __init__(self) -> None:
        import psycopg
        import pymysql

        self.pg = psycopg.connect(
            "host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=True
        )
        self.my = pymysql.connect(
            host="127.0.0.1", port=3306, user="root", password="", database="test", autocommit=True
        )

    def sql(self, kind: str, sql: str, args: Any = None) -> list[Any]:
        if kind == "pg":
            cur = self.pg.execute(sql, args)
            return cur.fetchall() if cur.description else []
        with self.my.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def kill(self, kind: str, session: int) -> None:
        if kind == "pg":
            self.sql("pg", "SELECT pg_terminate_backend(%s, 3000)", (session,))
        else:
            self.sql("my", f"KILL {int(session)}")
        time.sleep(0.1)  # let the FIN / error packet reach the client first

    def count(self, kind: str, table: str, tag: str) -> int:
        return int(self.sql(kind, f"SELECT count(*) FROM {table} WHERE tag = %s", (tag,))[0][0])

    def close(self) -> None:
        self.pg.close()
        self.my.close()


@pytest.fixture(scope="session")
def admin(postgres_dsn: str, mysql_params: dict[str, object]) -> Iterator[Admin]:
    a = Admin()
    try:
        yield a
    finally:
        a.close()


# --------------------------------------------------------------------------- drivers


@dataclass
class Driver:
    """How to open one driver's pool (or factory) and run statements on its connections."""

    name: str
    kind: str  # "pg" or "my"
    is_async: bool
    opener: Callable[[int, bool], Any]  # (port, short idle timeout) -> (async) context manager
    exec: Callable[[Any, str], Any]  # run one statement on a connection (may return awaitable)
    session: Callable[[Any], Any]  # the server's id of the connection's session
    factory: bool = False  # a connect factory (one connection per unit), not a pool
    idle_wait: float = 0.0  # seconds to stay idle so a short idle timeout fires


def _pg_info(port: int, idle: bool) -> str:
    info = f"host=127.0.0.1 port={port} dbname=test user=postgres connect_timeout=3"
    return info + (" options='-c idle_session_timeout=300'" if idle else "")


def _my_kwargs(port: int, idle: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "user": "root",
        "password": "",
        "connect_timeout": 3,
    }
    if idle:
        kw["init_command"] = "SET SESSION wait_timeout=1"
    return kw


@contextlib.contextmanager
def _psycopg_pool(port: int, idle: bool) -> Iterator[Any]:
    import psycopg_pool

    with psycopg_pool.ConnectionPool(
        _pg_info(port, idle), min_size=1, max_size=1, timeout=5, open=True
    ) as pool:
        yield pool


@contextlib.asynccontextmanager
async def _psycopg_async_pool(port: int, idle: bool) -> AsyncIterator[Any]:
    import psycopg_pool

    pool = psycopg_pool.AsyncConnectionPool(
        _pg_info(port, idle), min_size=1, max_size=1, timeout=5, open=False
    )
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.contextmanager
def _psycopg_factory(port: int, idle: bool) -> Iterator[Any]:
    import psycopg

    yield lambda: psycopg.connect(_pg_info(port, idle))


@contextlib.contextmanager
def _pymysql_factory(port: int, idle: bool) -> Iterator[Any]:
    import pymysql

    yield lambda: pymysql.connect(database="test", **_my_kwargs(port, idle))


@contextlib.contextmanager
def _pymysql_connection(port: int, idle: bool) -> Iterator[Any]:
    import pymysql

    conn = pymysql.connect(database="test", **_my_kwargs(port, idle))
    try:
        yield conn
    finally:
        conn.close() if conn.open else None


@contextlib.contextmanager
def _pymysql_multi(port: int, idle: bool) -> Iterator[Any]:
    import pymysql
    from pymysql.constants import CLIENT

    conn = pymysql.connect(
        database="test", client_flag=CLIENT.MULTI_STATEMENTS, **_my_kwargs(port, idle)
    )
    try:
        yield conn
    finally:
        conn.close() if conn.open else None


@contextlib.asynccontextmanager
async def _asyncpg_pool(port: int, idle: bool) -> AsyncIterator[Any]:
    import asyncpg

    settings = {"idle_session_timeout": "300"} if idle else {}
    pool = await asyncpg.create_pool(
        host="127.0.0.1",
        port=port,
        user="postgres",
        database="test",
        min_size=1,
        max_size=1,
        server_settings=settings,
        timeout=3,
    )
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def _aiomysql_pool(port: int, idle: bool) -> AsyncIterator[Any]:
    import aiomysql

    pool = await aiomysql.create_pool(minsize=1, maxsize=1, db="test", **_my_kwargs(port, idle))
    try:
        yield pool
    finally:
        pool.close()
        await pool.wait_closed()


@contextlib.contextmanager
def _sa_engine(url: str, port: int, idle: bool) -> Iterator[Any]:
    import sqlalchemy as sa

    if url.startswith("postgresql"):
        args: dict[str, Any] = {"options": "-c idle_session_timeout=300"} if idle else {}
    else:
        args = {"init_command": "SET SESSION wait_timeout=1"} if idle else {}
    engine = sa.create_engine(url.format(port=port), pool_size=1, connect_args=args)
    try:
        yield engine
    finally:
        engine.dispose()


@contextlib.asynccontextmanager
async def _sa_async_engine(port: int, idle: bool) -> AsyncIterator[Any]:
    from sqlalchemy.ext.asyncio import create_async_engine

    args = {"server_settings": {"idle_session_timeout": "300"}} if idle else {}
    engine = create_async_engine(
        f"postgresql+asyncpg://postgres@127.0.0.1:{port}/test", pool_size=1, connect_args=args
    )
    try:
        yield engine
    finally:
        await engine.dispose()


def _pg_exec(conn: Any, sql: str) -> Any:
    return conn.execute(sql)


def _my_exec(conn: Any, sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)


async def _aiomy_exec(conn: Any, sql: str) -> None:
    async with conn.cursor() as cur:
        await cur.execute(sql)


def _sa_exec(conn: Any, sql: str) -> Any:
    import sqlalchemy as sa

    return conn.execute(sa.text(sql))


def _sa_session(conn: Any) -> Any:
    raw = conn.connection.dbapi_connection
    return raw.info.backend_pid if hasattr(raw, "info") else raw.thread_id()


async def _sa_async_session(conn: Any) -> Any:
    raw = await conn.get_raw_connection()
    return raw.driver_connection.get_server_pid()


def _value(x: Any) -> Any:
    return x


DRIVERS = {
    d.name: d
    for d in (
        Driver("psycopg", "pg", False, _psycopg_pool, _pg_exec, lambda c: c.info.backend_pid),
        Driver(
            "psycopg-async",
            "pg",
            True,
            _psycopg_async_pool,
            _pg_exec,
            lambda c: c.info.backend_pid,
        ),
        Driver(
            "psycopg-factory",
            "pg",
            False,
            _psycopg_factory,
            _pg_exec,
            lambda c: c.info.backend_pid,
            factory=True,
        ),
        Driver("pymysql", "my", False, _pymysql_factory, _my_exec, lambda c: c.thread_id(), True),
        Driver(
            "pymysql-conn",
            "my",
            False,
            _pymysql_connection,
            _my_exec,
            lambda c: c.thread_id(),
            idle_wait=1.6,
        ),
        Driver(
            "pymysql-multi",
            "my",
            False,
            _pymysql_multi,
            _my_exec,
            lambda c: c.thread_id(),
            idle_wait=1.6,
        ),
        Driver("asyncpg", "pg", True, _asyncpg_pool, _pg_exec, lambda c: c.get_server_pid()),
        Driver(
            "aiomysql",
            "my",
            True,
            _aiomysql_pool,
            _aiomy_exec,
            lambda c: c.thread_id(),
            idle_wait=1.6,
        ),
        Driver(
            "sqlalchemy-psycopg",
            "pg",
            False,
            lambda port, idle: _sa_engine(
                "postgresql+psycopg://postgres@127.0.0.1:{port}/test", port, idle
            ),
            _sa_exec,
            _sa_session,
        ),
        Driver(
            "sqlalchemy-pymysql",
            "my",
            False,
            lambda port, idle: _sa_engine("mysql+pymysql://root@127.0.0.1:{port}/test", port, idle),
            _sa_exec,
            _sa_session,
            idle_wait=1.6,
        ),
        Driver(
            "sqlalchemy-asyncpg",
            "pg",
            True,
            _sa_async_engine,
            _sa_exec,
            _sa_async_session,
        ),
    )
}
for _d in DRIVERS.values():
    if not _d.idle_wait:
        _d.idle_wait = 0.7

ALL = list(DRIVERS)
POOLS = [name for name, d in DRIVERS.items() if not d.factory]


async def _maybe(x: Any) -> Any:
    return await x if asyncio.iscoroutine(x) or isinstance(x, asyncio.Future) else x


# --------------------------------------------------------------------------- one scenario


class Scenario:
    """One test's table, proxy and driver; runs units through resetguard.db."""

    def __init__(self, driver: Driver, admin: Admin) -> None:
        self.driver = driver
        self.admin = admin
        self.kind = driver.kind
        suffix = uuid.uuid4().hex[:10]
        self.table = f"rg_db_{suffix}"
        self.keys = f"rg_keys_{suffix}"
        self.tag = f"t{suffix}"
        self.proxy = FaultProxy(PG if self.kind == "pg" else MY)
        self.proxy.__enter__()
        text = "text" if self.kind == "pg" else "varchar(64)"
        engine = "" if self.kind == "pg" else " ENGINE=InnoDB"
        admin.sql(self.kind, f"CREATE TABLE {self.table} (tag {text}, n int){engine}")
        self.sessions: list[Any] = []

    def close(self) -> None:
        self.proxy.__exit__(None, None, None)
        self.admin.sql(self.kind, f"DROP TABLE IF EXISTS {self.table}")
        self.admin.sql(self.kind, f"DROP TABLE IF EXISTS {self.keys}")

    def _session_sql(self) -> str:
        return "SELECT pg_backend_pid()" if self.kind == "pg" else "SELECT CONNECTION_ID()"

    def rows(self) -> int:
        return self.admin.count(self.kind, self.table, self.tag)

    def statements(self, *, marker: str = "") -> list[str]:
        """An INSERT then an UPDATE of the same row (a torn unit would show n = 0)."""
        return [
            f"INSERT INTO {self.table} (tag, n) VALUES ('{self.tag}', 0)",
            f"UPDATE {self.table} {marker}SET n = n + 1 WHERE tag = '{self.tag}'",
        ]

    def torn(self) -> int:
        return int(
            self.admin.sql(
                self.kind,
                f"SELECT count(*) FROM {self.table} WHERE tag = %s AND n <> 1",
                (self.tag,),
            )[0][0]
        )

    def run(
        self,
        hook: Hook | None = None,
        *,
        key: str | None = None,
        policy: resetguard.Retry | None = None,
        port: int | None = None,
        idle: bool = False,
        marker: str = "",
        warm_up: bool = False,
    ) -> tuple[Any, list[int]]:
        """Run the unit once through db.transaction/atransaction: (result or error, runs)."""
        stmts = self.statements(marker=marker)
        runs: list[int] = []
        port = self.proxy.port if port is None else port
        d = self.driver
        kwargs: dict[str, Any] = {"key": key, "policy": policy, "key_table": self.keys}

        if not d.is_async:

            def unit(conn: Any) -> int:
                runs.append(len(runs) + 1)
                session = d.session(conn)
                self.sessions.append(session)
                for step, sql in enumerate(stmts):
                    if hook is not None:
                        hook(len(runs), step, session)
                    d.exec(conn, sql)
                if hook is not None:
                    hook(len(runs), len(stmts), session)
                return len(runs)

            with d.opener(port, idle) as pool:
                if warm_up:
                    rows = db.execute(pool, self._session_sql(), readonly=True)
                    self.sessions.append(rows[0][0])
                    time.sleep(d.idle_wait)
                try:
                    return db.transaction(pool, unit, **kwargs), runs
                except Exception as exc:
                    return exc, runs

        async def aunit(conn: Any) -> int:
            runs.append(len(runs) + 1)
            session = await _maybe(d.session(conn))
            self.sessions.append(session)
            for step, sql in enumerate(stmts):
                if hook is not None:
                    hook(len(runs), step, session)
                await d.exec(conn, sql)
            if hook is not None:
                hook(len(runs), len(stmts), session)
            return len(runs)

        async def main() -> tuple[Any, list[int]]:
            async with d.opener(port, idle) as pool:
                if warm_up:
                    rows = await db.aexecute(pool, self._session_sql(), readonly=True)
                    self.sessions.append(rows[0][0])
                    await asyncio.sleep(d.idle_wait)
                try:
                    return await db.atransaction(pool, aunit, **kwargs), runs
                except Exception as exc:
                    return exc, runs

        return asyncio.run(asyncio.wait_for(main(), 60))


@pytest.fixture
def scenario(request: pytest.FixtureRequest, admin: Admin) -> Iterator[Scenario]:
    s = Scenario(DRIVERS[request.param], admin)
    try:
        yield s
    finally:
        s.close()
