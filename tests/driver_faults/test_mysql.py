"""MariaDB drivers (PyMySQL, aiomysql, mysql-connector-python, SQLAlchemy+PyMySQL): each
research record reproduced against the real server, then classified.

Sessions are killed by connection id (``KILL <id>``), the id read through the driver itself
(``SELECT CONNECTION_ID()``; pools are sized 1 so the same connection comes back). F3
(server restart) is reproduced without restarting the shared server: on SIGTERM MariaDB
closes every client connection like ``KILL`` does (a FIN, no error packet), and the research
measured the same 2013 / "Connection not available" for both. F4 sets the session's own
``wait_timeout`` to 1 s (the minimum) with ``init_command``; the global one is untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._faults import Env, run_async, run_sync
from ._records import Record, check_record, records_for
from ._servers import FaultProxy, LoopThread
from .conftest import MysqlAdmin, tag

pytestmark = pytest.mark.mysql

MARIADB = ("127.0.0.1", 3306)
IDLE_WAIT = 1.3  # wait_timeout=1 s; MariaDB's timer has 1 s granularity


class Case:
    def __init__(self, record: Record, admin: MysqlAdmin, unused_port: int) -> None:
        self.fault = record["fault"]
        self.admin = admin
        self.marker = tag("my")
        self.proxy = FaultProxy(MARIADB) if self.fault == "F6" else None
        host, port = MARIADB
        if self.proxy is not None:
            port = self.proxy.port
        if self.fault == "F5":
            port = unused_port
        self.host, self.port = host, port
        self.init_command = "SET SESSION wait_timeout=1" if self.fault == "F4" else None
        self.insert_sql = f"INSERT INTO rg_classify_marker(tag) VALUES ('{self.marker}')"
        self.slow_sql = (
            f"INSERT INTO rg_classify_marker(tag) SELECT '{self.marker}' FROM (SELECT SLEEP(1)) s"
        )
        self.conn_id: int | None = None
        self.env = Env(
            kill=lambda: admin.kill(self._id()),
            wait_active=lambda: admin.wait_active(self._id()),
            proxy=self.proxy,
            idle_wait=IDLE_WAIT,
        )

    def _id(self) -> int:
        assert self.conn_id is not None, "warm-up did not read CONNECTION_ID()"
        return self.conn_id

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": "root",
            "password": "",
            "autocommit": True,
        }
        if self.init_command:
            params["init_command"] = self.init_command
        return params

    def run(self, call: Callable[[str], object]) -> BaseException | None:
        return run_sync(self.fault, self.env, call, self.insert_sql, self.slow_sql)

    async def arun(self, call: Callable[[str], Any]) -> BaseException | None:
        return await run_async(self.fault, self.env, call, self.insert_sql, self.slow_sql)

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()


@pytest.fixture
def case(
    request: pytest.FixtureRequest, mysql_admin: MysqlAdmin, unused_port: int
) -> Iterator[Case]:
    c = Case(request.node.callspec.params["record"], mysql_admin, unused_port)
    try:
        yield c
    finally:
        c.close()


def _raised(fn: Callable[[], object]) -> BaseException | None:
    try:
        fn()
    except Exception as exc:
        return exc
    return None


# --------------------------------------------------------------------------- scenarios


def pymysql_conn(case: Case) -> BaseException | None:
    import pymysql

    params = {**case.params(), "database": "test", "connect_timeout": 2}
    if case.fault == "F5":
        return _raised(lambda: pymysql.connect(**params))
    conn = pymysql.connect(**params)
    try:

        def call(sql: str) -> Any:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()

        case.conn_id = call("SELECT CONNECTION_ID()")[0][0]
        return case.run(call)
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def aiomysql_conn(case: Case, loop: LoopThread, *, pool: bool) -> BaseException | None:
    import aiomysql

    params = {**case.params(), "db": "test", "connect_timeout": 2}

    async def scenario() -> BaseException | None:
        if case.fault == "F5":
            try:
                if pool:
                    await aiomysql.create_pool(minsize=1, maxsize=1, **params)
                else:
                    await aiomysql.connect(**params)
            except Exception as exc:
                return exc
            return None
        target: Any = (
            await aiomysql.create_pool(minsize=1, maxsize=1, **params)
            if pool
            else await aiomysql.connect(**params)
        )

        async def call(sql: str) -> Any:
            if pool:
                async with target.acquire() as conn, conn.cursor() as cur:
                    await cur.execute(sql)
                    return await cur.fetchall()
            async with target.cursor() as cur:
                await cur.execute(sql)
                return await cur.fetchall()

        try:
            case.conn_id = (await call("SELECT CONNECTION_ID()"))[0][0]
            return await case.arun(call)
        finally:
            target.close()
            if pool:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(target.wait_closed(), 3)

    return loop.run(scenario(), timeout=10)


def mysql_connector(case: Case, *, pool: bool) -> BaseException | None:
    import mysql.connector
    from mysql.connector import pooling

    params = {**case.params(), "database": "test", "connection_timeout": 2, "use_pure": True}
    if case.fault == "F5":
        if pool:
            return _raised(lambda: pooling.MySQLConnectionPool(pool_size=1, **params))
        return _raised(lambda: mysql.connector.connect(**params))
    if pool:
        cnxpool = pooling.MySQLConnectionPool(pool_size=1, pool_name=case.marker[-16:], **params)

        def call(sql: str) -> Any:
            conn = cnxpool.get_connection()
            try:
                cur = conn.cursor()
                cur.execute(sql)
                return cur.fetchall()
            finally:
                with contextlib.suppress(Exception):
                    conn.close()

        case.conn_id = call("SELECT CONNECTION_ID()")[0][0]
        return case.run(call)
    conn = mysql.connector.connect(**params)
    try:

        def call_plain(sql: str) -> Any:
            cur = conn.cursor()
            cur.execute(sql)
            return cur.fetchall()

        case.conn_id = call_plain("SELECT CONNECTION_ID()")[0][0]
        return case.run(call_plain)
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def sqlalchemy_pymysql(case: Case, *, pre_ping: bool) -> BaseException | None:
    from sqlalchemy import create_engine, text

    connect_args: dict[str, Any] = {"connect_timeout": 2}
    if case.init_command:
        connect_args["init_command"] = case.init_command
    engine = create_engine(
        f"mysql+pymysql://root@{case.host}:{case.port}/test",
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=pre_ping,
        isolation_level="AUTOCOMMIT",
        connect_args=connect_args,
    )
    try:

        def call(sql: str) -> Any:
            with engine.connect() as conn:
                result = conn.execute(text(sql))
                return result.fetchall() if result.returns_rows else None

        if case.fault == "F5":
            return _raised(lambda: call("SELECT 1"))
        case.conn_id = call("SELECT CONNECTION_ID()")[0][0]
        return case.run(call)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the test

MYSQL_DRIVERS = (
    "pymysql",
    "aiomysql",
    "aiomysql-pool",
    "mysql-connector",
    "mysql-connector-pool",
    "sa-pymysql",
    "sa-pymysql-preping",
)


@pytest.mark.parametrize("record", records_for(*MYSQL_DRIVERS))
def test_mysql_record(
    record: Record, case: Case, loop_thread: LoopThread, mysql_admin: MysqlAdmin
) -> None:
    scenarios: dict[str, Callable[[], BaseException | None]] = {
        "pymysql": lambda: pymysql_conn(case),
        "aiomysql": lambda: aiomysql_conn(case, loop_thread, pool=False),
        "aiomysql-pool": lambda: aiomysql_conn(case, loop_thread, pool=True),
        "mysql-connector": lambda: mysql_connector(case, pool=False),
        "mysql-connector-pool": lambda: mysql_connector(case, pool=True),
        "sa-pymysql": lambda: sqlalchemy_pymysql(case, pre_ping=False),
        "sa-pymysql-preping": lambda: sqlalchemy_pymysql(case, pre_ping=True),
    }
    exc = scenarios[record["driver_key"]]()
    check_record(record, exc)
    if record["fault"] in ("F1", "F2", "F3", "F4"):
        expected = 1 if record["executed_on_server"] else 0
        assert mysql_admin.marker_rows(case.marker) == expected
