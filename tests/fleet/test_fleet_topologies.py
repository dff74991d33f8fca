"""Sentinel and Cluster through redis-py's own client objects, no extra code: a private
master with a private Sentinel watching it, and a private single-node cluster."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import resetguard
from resetguard.fleet import RedisBackend

from .conftest import PrivateRedis

pytestmark = pytest.mark.redis


def _fast_retry() -> object:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _reset() -> None:
    raise ConnectionResetError(104, "Connection reset by peer")


@contextlib.contextmanager
def _started(*servers: PrivateRedis) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.stop()


def _share_one_breaker_and_budget(make: Callable[[], object]) -> None:
    """Two backends on two clients of the topology: a trip and the budget are shared."""
    sides = [RedisBackend(make(), namespace="topology", sync_interval=0.1) for _ in range(2)]
    try:
        a, b = (
            resetguard.CircuitBreaker("dep", failure_threshold=2, open_duration=30, backend=s)
            for s in sides
        )
        for _ in range(2):
            with pytest.raises(ConnectionResetError):
                a.call(_reset)
        assert _wait(lambda: b.state is resetguard.CircuitState.OPEN, 3.0)
        assert b.statistics().backend == "fleet"
        budgets = [
            resetguard.RetryBudget("dep", min_per_second=0.2, ttl=10, backend=s) for s in sides
        ]
        assert [budgets[0].withdraw(), budgets[1].withdraw(), budgets[1].withdraw()] == [
            True,
            True,
            False,
        ]  # one floor of 2 tokens for both
        assert all(side.reachable for side in sides)
    finally:
        for side in sides:
            side.close()


def test_sentinel_master_for(tmp_path: Path) -> None:
    from redis.sentinel import Sentinel

    master, sentinel = PrivateRedis(), PrivateRedis()
    with _started(master, sentinel):
        master.start()
        config = tmp_path / "sentinel.conf"
        config.write_text(f"sentinel monitor fleet 127.0.0.1 {master.port} 1\n")
        sentinel.start("--sentinel", config=str(config), cwd=str(tmp_path))
        watcher = Sentinel([("127.0.0.1", sentinel.port)], socket_timeout=0.5)
        assert _wait(lambda: watcher.discover_master("fleet")[1] == master.port, 5.0)

        def client() -> object:
            return watcher.master_for(
                "fleet",
                socket_timeout=0.1,
                socket_connect_timeout=0.1,
                retry=_fast_retry(),
            )

        _share_one_breaker_and_budget(client)
        with pytest.raises(ValueError, match="socket_timeout=None"):
            RedisBackend(watcher.master_for("fleet", socket_timeout=None))


def test_cluster_client(tmp_path: Path) -> None:
    import redis
    from redis.cluster import RedisCluster

    node = PrivateRedis()
    with _started(node):
        node.start(
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(tmp_path / "nodes.conf"),
            cwd=str(tmp_path),
        )
        admin = redis.Redis("127.0.0.1", node.port, socket_timeout=1)
        admin.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)  # one node holds every slot
        assert _wait(lambda: admin.cluster("info")["cluster_state"] == "ok", 10.0)
        admin.close()

        def client() -> object:
            return RedisCluster(
                host="127.0.0.1",
                port=node.port,
                socket_timeout=0.1,
                socket_connect_timeout=0.1,
                retry=_fast_retry(),
            )

        _share_one_breaker_and_budget(client)
        with pytest.raises(ValueError, match="retries"):
            # RedisCluster retries 3 times with backoff by default.
            RedisBackend(
                RedisCluster(
                    host="127.0.0.1", port=node.port, socket_timeout=0.1, socket_connect_timeout=0.1
                )
            )
