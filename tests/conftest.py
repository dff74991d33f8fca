"""Shared fixtures: the real services on this machine.

A test that needs PostgreSQL, MariaDB or Redis uses the matching fixture. When the service
does not answer, the test is skipped on a developer's machine, but under ``CI=true`` the
run fails: CI must never pass by skipping the real-server tests.
"""

from __future__ import annotations

import os
import socket

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
MYSQL_HOST, MYSQL_PORT = "127.0.0.1", 3306
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, under CI=true, fail) when ``host:port`` does not accept connections."""
    if _answers(host, port):
        return
    message = f"{name} is not answering on {host}:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a missing service fails the run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """DSN of the local PostgreSQL (trust auth, database ``test``)."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    return f"host={PG_HOST} port={PG_PORT} dbname=test user=postgres"


@pytest.fixture(scope="session")
def mysql_params() -> dict[str, object]:
    """Connection keywords for the local MariaDB (root, no password, database ``test``)."""
    require_service("MariaDB", MYSQL_HOST, MYSQL_PORT)
    return {
        "host": MYSQL_HOST,
        "port": MYSQL_PORT,
        "user": "root",
        "password": "",
        "database": "test",
    }


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the local Redis."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port
