"""PostgreSQL drivers (psycopg 3 sync/async, psycopg_pool, asyncpg, SQLAlchemy+psycopg):
each research record reproduced against the real server, then classified.

F3 (server restart) is reproduced without restarting the shared server: a fast shutdown
sends ``FATAL 57P01 terminating connection due to administrator command`` to every backend,
which is exactly what ``pg_terminate_backend`` sends to one (the research measured the same
``AdminShutdown`` for both). F4 uses a per-session ``idle_session_timeout`` of 300 ms.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._faults import Env, run_async, run_sync
from ._records import Record, check_record, records_for
from ._servers import FaultProxy, LoopThread
from .conftest import PgAdmin, tag

pytestmark = pytest.mark.postgres

PG = ("127.0.0.1", 5432)
IDLE_TIMEOUT_MS = 300
IDLE_WAIT = 0.6


class Case:
    """One record's setup: where to connect, under which application_name, which SQL."""

    def __init__(self, record: Record, admin: PgAdmin, unused_port: int) -> None:
        self.fault = record["fault"]
        self.admin = admin
        self.app = tag("pg")
        self.marker = self.app
        self.proxy = FaultProxy(PG) if self.fault == "F6" else None
        host, port = PG
        if self.proxy is not None:
            port = self.proxy.port
        if self.fault == "F5":
            port = unused_port
        self.host, self.port = host, port
        self.options = f"-c idle_session_timeout={IDLE_TIMEOUT_MS}" if self.fault == "F4" else ""
        self.insert_sql = f"INSERT INTO rg_classify_marker(tag) VALUES ('{self.marker}')"
        self.slow_sql = (
            f"INSERT INTO rg_classify_marker(tag) SELECT '{self.marker}' FROM pg_sleep(1)"
        )
        self.env = Env(
            kill=lambda: admin.kill(self.app),
            wait_active=lambda: admin.wait_active(self.app),
            proxy=self.proxy,
            idle_wait=IDLE_WAIT,
        )

    def conninfo(self) -> str:
        info = f"host={self.host} port={self.port} dbname=test user=postgres connect_timeout=2"
        if self.options:
            info += f" options='{self.options}'"
        return info

    def run(self, call: Callable[[str], object]) -> BaseException | None:
        return run_sync(self.fault, self.env, call, self.insert_sql, self.slow_sql)

    async def arun(self, call: Callable[[str], Any]) -> BaseException | None:
        return await run_async(self.fault, self.env, call, self.insert_sql, self.slow_sql)

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()


@pytest.fixture
def case(request: pytest.FixtureRequest, pg_admin: PgAdmin, unused_port: int) -> Iterator[Case]:
    c = Case(request.node.callspec.params["record"], pg_admin, unused_port)
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


def psycopg_sync(case: Case) -> BaseException | None:
    import psycopg

    if case.fault == "F5":
        return _raised(lambda: psycopg.connect(case.conninfo()))
    with psycopg.connect(case.conninfo(), autocommit=True, application_name=case.app) as conn:
        conn.execute("SELECT 1")
        return case.run(conn.execute)


def psycopg_async(case: Case, loop: LoopThread) -> BaseException | None:
    import psycopg

    async def scenario() -> BaseException | None:
        if case.fault == "F5":
            try:
                await psycopg.AsyncConnection.connect(case.conninfo())
            except Exception as exc:
                return exc
            return None
        conn = await psycopg.AsyncConnection.connect(
            case.conninfo(), autocommit=True, application_name=case.app
        )
        try:
            await conn.execute("SELECT 1")
            return await case.arun(conn.execute)
        finally:
            await conn.close()

    return loop.run(scenario(), timeout=10)


def psycopg_pool(case: Case, *, check: bool) -> BaseException | None:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        case.conninfo(),
        min_size=1,
        max_size=1,
        timeout=0.5,
        kwargs={"autocommit": True, "application_name": case.app},
        check=ConnectionPool.check_connection if check else None,
        open=False,
    )
    pool.open(wait=case.fault != "F5", timeout=3)
    try:

        def call(sql: str) -> None:
            with pool.connection() as conn:
                conn.execute(sql)

        if case.fault == "F5":
            return _raised(lambda: call("SELECT 1"))
        call("SELECT 1")
        return case.run(call)
    finally:
        pool.close(timeout=1)


def asyncpg_conn(case: Case, loop: LoopThread, *, pool: bool) -> BaseException | None:
    import asyncpg

    settings = {"application_name": case.app}
    if case.fault == "F4":
        settings["idle_session_timeout"] = str(IDLE_TIMEOUT_MS)
    kwargs: dict[str, Any] = {
        "host": case.host,
        "port": case.port,
        "user": "postgres",
        "database": "test",
        "timeout": 2,
        "server_settings": settings,
    }

    async def scenario() -> BaseException | None:
        if case.fault == "F5":
            try:
                if pool:
                    await asyncpg.create_pool(min_size=1, max_size=1, **kwargs)
                else:
                    await asyncpg.connect(**kwargs)
            except Exception as exc:
                return exc
            return None
        target: Any = (
            await asyncpg.create_pool(min_size=1, max_size=1, **kwargs)
            if pool
            else await asyncpg.connect(**kwargs)
        )
        try:
            await target.execute("SELECT 1")
            return await case.arun(target.execute)
        finally:
            with contextlib.suppress(Exception):
                await asyncio_wait(target.close(), 3)

    return loop.run(scenario(), timeout=10)


async def asyncio_wait(aw: Any, timeout: float) -> Any:
    import asyncio

    return await asyncio.wait_for(aw, timeout)


def sqlalchemy_psycopg(case: Case, *, pre_ping: bool) -> BaseException | None:
    from sqlalchemy import create_engine, text

    connect_args: dict[str, Any] = {"application_name": case.app, "connect_timeout": 2}
    if case.options:
        connect_args["options"] = case.options
    engine = create_engine(
        f"postgresql+psycopg://postgres@{case.host}:{case.port}/test",
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=pre_ping,
        isolation_level="AUTOCOMMIT",
        connect_args=connect_args,
    )
    try:

        def call(sql: str) -> None:
            with engine.connect() as conn:
                conn.execute(text(sql))

        if case.fault == "F5":
            return _raised(lambda: call("SELECT 1"))
        call("SELECT 1")
        return case.run(call)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the test

PG_DRIVERS = (
    "psycopg",
    "psycopg-async",
    "psycopg_pool",
    "psycopg_pool-check",
    "asyncpg",
    "asyncpg-pool",
    "sa-psycopg",
    "sa-psycopg-preping",
)


@pytest.mark.parametrize("record", records_for(*PG_DRIVERS))
def test_pg_record(record: Record, case: Case, loop_thread: LoopThread, pg_admin: PgAdmin) -> None:
    key = record["driver_key"]
    scenarios: dict[str, Callable[[], BaseException | None]] = {
        "psycopg": lambda: psycopg_sync(case),
        "psycopg-async": lambda: psycopg_async(case, loop_thread),
        "psycopg_pool": lambda: psycopg_pool(case, check=False),
        "psycopg_pool-check": lambda: psycopg_pool(case, check=True),
        "asyncpg": lambda: asyncpg_conn(case, loop_thread, pool=False),
        "asyncpg-pool": lambda: asyncpg_conn(case, loop_thread, pool=True),
        "sa-psycopg": lambda: sqlalchemy_psycopg(case, pre_ping=False),
        "sa-psycopg-preping": lambda: sqlalchemy_psycopg(case, pre_ping=True),
    }
    exc = scenarios[key]()
    check_record(record, exc)
    if record["fault"] in ("F1", "F2", "F3", "F4"):
        # The statement's effect matches the research: F1/F3/F4 either failed before the
        # statement ran or (pool hid the fault) ran it once; F2's kill rolled it back.
        expected = 1 if record["executed_on_server"] else 0
        assert pg_admin.marker_rows(case.marker) == expected
