"""resetguard.db.pool_settings: the values, their limits, the rendered code, and their effect
on real pools against the local PostgreSQL and MariaDB (session-level idle timeouts only)."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from resetguard.db import DRIVERS, pool_settings, safe_expiry

_NUMERIC_LIMITS = {
    "psycopg_pool": ("max_idle", "max_lifetime"),
    "asyncpg": ("max_inactive_connection_lifetime",),
    "sqlalchemy": ("pool_recycle",),
    "aiomysql": ("pool_recycle",),
    "redis": ("health_check_interval",),
}


@pytest.mark.parametrize("timeout", [1.0, 5.0, 60.0, 600.0, 28800.0])
@pytest.mark.parametrize("driver", sorted(_NUMERIC_LIMITS))
def test_every_limit_is_below_the_server_idle_timeout(driver: str, timeout: float) -> None:
    settings = pool_settings(driver, server_idle_timeout=timeout)
    assert settings.idle_limit == safe_expiry(timeout) < timeout
    for name in _NUMERIC_LIMITS[driver]:
        value = settings[name].value
        assert isinstance(value, float)
        assert 0 < value < timeout, (name, value)


def test_pymongo_idle_limit_is_in_milliseconds() -> None:
    settings = pool_settings("pymongo", server_idle_timeout=60)
    assert settings["maxIdleTimeMS"].value == 57_000  # 60 s - 5 %
    assert settings["retryReads"].value is True
    assert settings["retryWrites"].value is True


@pytest.mark.parametrize("never", [None, 0])
def test_no_server_timeout_sizes_for_nat(never: float | None) -> None:
    assert pool_settings("sqlalchemy", server_idle_timeout=never)["pool_recycle"].value == 300.0
    redis = pool_settings("redis", server_idle_timeout=never)
    assert redis["health_check_interval"].value == 30.0
    # The reason talks about what the code does (issue 12: no "retire after 300 s" here).
    assert "300" not in redis["health_check_interval"].reason


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_setting_has_a_reason_and_renders(driver: str) -> None:
    settings = pool_settings(driver, server_idle_timeout=30)
    assert settings.settings
    for setting in settings.settings:
        assert len(setting.reason) > 20, setting
    url = "mongodb://127.0.0.1:1/" if driver == "pymongo" else "mysql://u:***@127.0.0.1:3306/db"
    code = settings.render(url, comment="The server drops idle sessions.")
    compile(code, f"<{driver}>", "exec")
    for setting in settings.settings:
        assert f"{setting.name}=" in code
    assert "# The server drops idle sessions." in code


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"driver": "psycopg2"}, ValueError, "'psycopg2'"),
        ({"driver": "redis", "server_idle_timeout": -1}, ValueError, "-1"),
        ({"driver": "redis", "server_idle_timeout": math.nan}, ValueError, "nan"),
        ({"driver": "redis", "server_idle_timeout": math.inf}, ValueError, "inf"),
        ({"driver": "redis", "server_idle_timeout": True}, TypeError, "True"),
        ({"driver": "redis", "server_idle_timeout": "30"}, TypeError, "'30'"),
        ({"driver": "sqlalchemy", "backend": "oracle"}, ValueError, "'oracle'"),
    ],
)
def test_bad_input_names_the_value(kwargs: dict[str, Any], error: type, needle: str) -> None:
    driver = kwargs.pop("driver")
    with pytest.raises(error, match=needle):
        pool_settings(driver, **kwargs)


def test_rendered_sync_code_builds_real_clients() -> None:
    ns: dict[str, Any] = {}
    psycopg = pool_settings("psycopg_pool", server_idle_timeout=1.5)
    exec(psycopg.render("postgresql://postgres@127.0.0.1:5432/test"), ns)
    assert ns["pool"].max_idle == pytest.approx(0.75)
    assert ns["pool"]._check is not None
    engine_code = pool_settings("sqlalchemy", server_idle_timeout=2, backend="postgresql")
    exec(engine_code.render("postgresql+psycopg://postgres@127.0.0.1/test"), ns)
    assert ns["engine"].pool._recycle == pytest.approx(1.0)
    assert ns["engine"].pool._pre_ping is True
    ns["engine"].dispose()
    exec(pool_settings("redis", server_idle_timeout=10).render("redis://127.0.0.1:1/0"), ns)
    conn_kwargs = ns["client"].connection_pool.connection_kwargs
    assert conn_kwargs["health_check_interval"] == 9
    assert conn_kwargs["retry"].get_retries() == 0
    ns["client"].close()
    exec(pool_settings("pymongo", server_idle_timeout=10).render("mongodb://127.0.0.1:1/"), ns)
    try:
        assert ns["client"].options.pool_options.max_idle_time_seconds == 9
        assert ns["client"].options.retry_writes is True
    finally:
        ns["client"].close()


# -- effect on real pools: a server that drops idle sessions after 1 s ---------------------

_PG_IDLE_1S = "postgresql://postgres@127.0.0.1:5432/test?options=-c%20idle_session_timeout%3D1000"


@pytest.mark.postgres
def test_psycopg_pool_with_the_settings_survives_the_idle_timeout(postgres_dsn: str) -> None:
    from psycopg_pool import ConnectionPool

    kwargs = pool_settings("psycopg_pool", server_idle_timeout=1.0).kwargs()
    with ConnectionPool(_PG_IDLE_1S, min_size=1, max_size=1, open=True, **kwargs) as pool:  # type: ignore[arg-type]
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        time.sleep(1.6)  # the server has closed the idle session by now
        with pool.connection() as conn:
            assert conn.execute("SELECT 2").fetchone() == (2,)


@pytest.mark.postgres
def test_psycopg_pool_without_the_check_hands_out_the_dead_connection(postgres_dsn: str) -> None:
    # The control for the test above: the research fact that makes check= necessary.
    import psycopg
    from psycopg_pool import ConnectionPool

    with ConnectionPool(_PG_IDLE_1S, min_size=1, max_size=1, open=True) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        time.sleep(1.6)
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
            conn.execute("SELECT 2")


@pytest.mark.mysql
def test_sqlalchemy_engine_with_the_settings_survives_wait_timeout(
    mysql_params: dict[str, object],
) -> None:
    from sqlalchemy import create_engine, text

    kwargs = pool_settings("sqlalchemy", server_idle_timeout=1.0, backend="mysql").kwargs()
    engine = create_engine(
        "mysql+pymysql://root@127.0.0.1:3306/test",
        connect_args={"init_command": "SET SESSION wait_timeout=1"},
        pool_size=1,
        **kwargs,  # type: ignore[arg-type]
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        time.sleep(2.2)  # MariaDB closes the session after 1-2 s idle
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 2")).scalar() == 2
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_asyncpg_pool_accepts_the_settings(postgres_dsn: str) -> None:
    import asyncpg

    kwargs = pool_settings("asyncpg", server_idle_timeout=1.0).kwargs()

    async def scenario() -> int:
        pool = await asyncpg.create_pool(
            "postgresql://postgres@127.0.0.1:5432/test", min_size=1, max_size=1, **kwargs
        )
        try:
            async with pool.acquire() as conn:
                await conn.execute("SELECT 1")
            await asyncio.sleep(1.6)  # idle past max_inactive_connection_lifetime (0.5 s)
            async with pool.acquire() as conn:
                # The session's server-side keepalive came from server_settings.
                assert await conn.fetchval("SHOW tcp_keepalives_idle") == "60"
                return int(await conn.fetchval("SELECT 3"))
        finally:
            await pool.close()

    assert asyncio.run(scenario()) == 3


@pytest.mark.mysql
def test_aiomysql_pool_recycles_before_wait_timeout(mysql_params: dict[str, object]) -> None:
    import aiomysql

    kwargs = pool_settings("aiomysql", server_idle_timeout=1.0).kwargs()

    async def scenario() -> int:
        pool = await aiomysql.create_pool(
            host="127.0.0.1",
            port=3306,
            user="root",
            db="test",
            minsize=1,
            maxsize=1,
            init_command="SET SESSION wait_timeout=1",
            **kwargs,
        )
        try:
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute("SELECT 1")
            await asyncio.sleep(2.2)
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute("SELECT 4")
                (value,) = await cur.fetchone()
                return int(value)
        finally:
            pool.close()
            await pool.wait_closed()

    assert asyncio.run(scenario()) == 4


def test_importing_resetguard_db_imports_no_driver() -> None:
    import subprocess
    import sys

    code = (
        "import sys, resetguard.db\n"
        "drivers = ('redis', 'pymongo', 'psycopg', 'psycopg_pool', 'asyncpg', 'pymysql',"
        " 'aiomysql', 'sqlalchemy')\n"
        "print(sorted(m for m in drivers if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
