"""Fixtures for the driver-fault tests: admin connections that kill sessions, a loop thread.

The admins never touch global server settings: they kill only the sessions a test opened
(found by a unique application / client name or connection id).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ._servers import LoopThread, wait_until


def tag(prefix: str) -> str:
    """A unique name for one scenario's sessions and marker rows."""
    return f"rg-{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    with LoopThread() as runner:
        yield runner


class PgAdmin:
    """Kills the backends of one ``application_name`` with ``pg_terminate_backend``."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True, application_name="rg-admin")
        self.conn.execute("CREATE TABLE IF NOT EXISTS rg_classify_marker (tag text)")

    def wait_active(self, app: str) -> None:
        """Wait until a backend of ``app`` is executing a statement (it was sent)."""

        def active() -> bool:
            row = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                " AND state = 'active'",
                (app,),
            ).fetchone()
            return bool(row and row[0])

        wait_until(active, timeout=3.0, what=f"an active backend of {app}")

    def kill(self, app: str) -> int:
        """Terminate every backend of ``app`` and wait until they are gone."""
        rows = self.conn.execute(
            "SELECT pg_terminate_backend(pid, 3000) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (app,),
        ).fetchall()
        assert rows, f"no backend of {app} to kill"
        return len(rows)

    def marker_rows(self, marker: str) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM rg_classify_marker WHERE tag = %s", (marker,)
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="session")
def pg_admin(postgres_dsn: str) -> Iterator[PgAdmin]:
    admin = PgAdmin(postgres_dsn)
    try:
        yield admin
    finally:
        admin.close()


class MysqlAdmin:
    """Kills MariaDB sessions by connection id (``KILL <id>``)."""

    def __init__(self, params: dict[str, Any]) -> None:
        import pymysql

        self.params = params
        self.conn = pymysql.connect(**params, autocommit=True)
        with self.conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS rg_classify_marker (tag varchar(64))")

    def _query(self, sql: str, args: Any = None) -> list[Any]:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def wait_active(self, conn_id: int) -> None:
        def active() -> bool:
            rows = self._query(
                "SELECT INFO FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,)
            )
            return bool(rows and rows[0][0])

        wait_until(active, timeout=3.0, what=f"MariaDB thread {conn_id} executing")

    def kill(self, conn_id: int) -> None:
        self._query(f"KILL {int(conn_id)}")

        def gone() -> bool:
            rows = self._query(
                "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,)
            )
            return not rows or rows[0][0] == "Killed"

        wait_until(gone, timeout=3.0, what=f"MariaDB thread {conn_id} gone")

    def marker_rows(self, marker: str) -> int:
        rows = self._query("SELECT count(*) FROM rg_classify_marker WHERE tag = %s", (marker,))
        return int(rows[0][0])

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="session")
def mysql_admin(mysql_params: dict[str, Any]) -> Iterator[MysqlAdmin]:
    admin = MysqlAdmin(mysql_params)
    try:
        yield admin
    finally:
        admin.close()


class RedisAdmin:
    """Kills Redis clients by name (``CLIENT KILL ID <id>`` for each)."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, client_name="rg-admin")

    def ids(self, name: str, cmd: str | None = None) -> list[int]:
        return [
            int(c["id"])
            for c in self.client.client_list()
            if c.get("name") == name and (cmd is None or c.get("cmd") == cmd)
        ]

    def wait_cmd(self, name: str, cmd: str) -> None:
        wait_until(lambda: bool(self.ids(name, cmd)), timeout=3.0, what=f"{name} running {cmd}")

    def kill(self, name: str) -> int:
        ids = self.ids(name)
        assert ids, f"no Redis client named {name} to kill"
        for client_id in ids:
            self.client.execute_command("CLIENT", "KILL", "ID", client_id)  # type: ignore[no-untyped-call]
        wait_until(lambda: not self.ids(name), timeout=3.0, what=f"{name} clients gone")
        return len(ids)

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="session")
def redis_admin(redis_url: str) -> Iterator[RedisAdmin]:
    admin = RedisAdmin(redis_url)
    try:
        yield admin
    finally:
        admin.close()


def settle(seconds: float) -> None:
    """Let a kill / FIN / RST reach the client side before the next call (as the research
    slept 0.5 s); short, because loopback delivers it within microseconds."""
    time.sleep(seconds)
