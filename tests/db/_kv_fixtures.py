"""Fixtures for the Redis tests of resetguard.db (imported by test_kv_redis.py, not a conftest,
so the SQL half of tests/db can have its own conftest): a private redis-server, unique keys,
an admin."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = ["admin", "key", "private_redis", "private_redis_without_config"]


@contextmanager
def _redis_server(port: int, *extra: str) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--timeout", "1"]
    args += ["--save", "", "--appendonly", "no", "--daemonize", "no", *extra]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("private redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def private_redis(redis_url: str, unused_port: int) -> Iterator[str]:
    """A private redis-server with ``timeout 1`` on a free port: the shared server's
    global settings are never touched. Started and stopped (by pid) here."""
    with _redis_server(unused_port) as url:
        yield url


@pytest.fixture
def private_redis_without_config(redis_url: str, unused_port: int) -> Iterator[str]:
    """As :func:`private_redis`, with ``CONFIG`` renamed away (as managed Redis services do)."""
    with _redis_server(unused_port, "--rename-command", "CONFIG", "") as url:
        yield url


@pytest.fixture
def key(redis_url: str) -> Iterator[str]:
    """A unique key on the shared Redis, deleted afterwards."""
    import redis

    name = f"rg:test:kv:{uuid.uuid4().hex}"
    yield name
    admin = redis.Redis.from_url(redis_url)
    admin.delete(name)
    admin.close()


@pytest.fixture
def admin(redis_url: str) -> Iterator[Any]:
    """A plain client on the shared Redis for reading counters and killing our clients."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def kill_clients(admin: Any, name: str) -> int:
    """``CLIENT KILL ID`` each connection named ``name`` (only the test's own)."""
    ids = [int(c["id"]) for c in admin.client_list() if c.get("name") == name]
    for client_id in ids:
        admin.execute_command("CLIENT", "KILL", "ID", client_id)
    return len(ids)
