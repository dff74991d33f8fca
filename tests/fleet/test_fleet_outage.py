"""Redis stopped, stalled or restarted under running callers: no caller ever sees a Redis
error or waits more than one socket timeout, and the shared state comes back.

These tests use a private redis-server of their own (never the shared one)."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable

import pytest

import resetguard
from resetguard.fleet import RedisBackend

from ._servers import request
from .conftest import PrivateRedis

pytestmark = pytest.mark.redis

SYNC = 0.1
TIMEOUT = 0.05


def _drive(
    fn: Callable[[], object], seconds: float, allowed: tuple[type[BaseException], ...]
) -> tuple[int, float]:
    """Call ``fn`` for ``seconds``; any exception outside ``allowed`` propagates.
    Returns (calls, slowest call in seconds)."""
    calls, slowest = 0, 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end and calls < 100_000:
        started = time.monotonic()
        with contextlib.suppress(*allowed):
            fn()
        slowest = max(slowest, time.monotonic() - started)
        calls += 1
        time.sleep(0.002)
    return calls, slowest


def _up(backend: RedisBackend) -> bool:
    return backend.reachable  # read through a call: it changes under the test's feet


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _fleet_state(url: str, key: str) -> dict[bytes, bytes]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return client.hgetall(key)  # type: ignore[return-value]
    finally:
        client.close()


def test_redis_killed_then_restarted_mid_run(
    private_redis: PrivateRedis, unused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="resetguard")
    ns = f"rg-outage-{uuid.uuid4().hex}"
    backend = RedisBackend.from_url(
        private_redis.url, namespace=ns, sync_interval=SYNC, timeout=TIMEOUT
    )
    healthy = resetguard.CircuitBreaker("healthy", backend=backend)
    failing = resetguard.CircuitBreaker(
        "failing", failure_threshold=3, open_duration=60, jitter=0, backend=backend
    )
    budget = resetguard.RetryBudget("budget", min_per_second=1, backend=backend)

    @resetguard.retry(attempts=3, backoff=resetguard.Backoff.none(), breaker=failing, budget=budget)
    def refused() -> bytes:
        return request(unused_port)

    try:
        assert _drive(lambda: healthy.call(len, "x"), 0.3, ())[0] > 0
        assert backend.reachable
        private_redis.stop()  # Redis goes away in mid-run
        # Callers get their own errors only: the dependency's, or the breaker's.
        calls, slowest = _drive(refused, 1.0, (ConnectionRefusedError, resetguard.CircuitOpen))
        assert calls > 10
        assert slowest < 0.5, slowest
        assert _drive(lambda: healthy.call(len, "x"), 0.3, ())[0] > 0
        assert not _up(backend)
        assert failing.state is resetguard.CircuitState.OPEN  # decided locally meanwhile
        assert failing.statistics().backend == "fleet-unreachable"
        assert budget.statistics().backend == "fleet-unreachable"
        warnings = [r for r in caplog.records if "does not answer" in r.getMessage()]
        assert len(warnings) == 1  # warned once, however many calls
        private_redis.start()  # Redis returns, empty: the state is shared again
        assert _wait(lambda: backend.reachable, 5.0)
        key = backend.key("breaker", "failing")
        assert _wait(lambda: _fleet_state(private_redis.url, key).get(b"s") == b"1", 5.0)
        assert any("answers again" in r.getMessage() for r in caplog.records)
        # A fresh process (its own backend and breaker) now sees the breaker open.
        other = RedisBackend.from_url(private_redis.url, namespace=ns, sync_interval=SYNC)
        try:
            twin = resetguard.CircuitBreaker(
                "failing", failure_threshold=3, open_duration=60, jitter=0, backend=other
            )
            assert _wait(lambda: twin.state is resetguard.CircuitState.OPEN, 5.0)
            with pytest.raises(resetguard.CircuitOpen) as caught:
                twin.call(len, "x")
            assert caught.value.retry_after is not None
            assert caught.value.retry_after > 30
        finally:
            other.close()
        assert failing.statistics().backend == "fleet"
    finally:
        backend.close()


def test_stalled_redis_costs_a_caller_at_most_one_timeout(
    private_redis: PrivateRedis, unused_port: int
) -> None:
    ns = f"rg-stall-{uuid.uuid4().hex}"
    backend = RedisBackend.from_url(
        private_redis.url, namespace=ns, sync_interval=SYNC, timeout=TIMEOUT
    )
    breaker = resetguard.CircuitBreaker(
        "stalled", failure_threshold=2, open_duration=0.3, jitter=0, backend=backend
    )
    budget = resetguard.RetryBudget("stalled", min_per_second=5, backend=backend)

    @resetguard.retry(attempts=3, backoff=resetguard.Backoff.none(), breaker=breaker, budget=budget)
    def refused() -> bytes:
        return request(unused_port)

    try:
        assert backend.sync()
        private_redis.pause()  # SIGSTOP: connections hang, nothing is refused
        durations = []
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            started = time.monotonic()
            with contextlib.suppress(ConnectionRefusedError, resetguard.CircuitOpen):
                refused()
            durations.append(time.monotonic() - started)
            time.sleep(0.005)
        assert len(durations) > 10
        # A decision may wait one socket timeout; then the backend knows and stops asking.
        assert max(durations) < TIMEOUT * 3 + 0.3, max(durations)
        assert sum(d > TIMEOUT * 0.8 for d in durations) <= 2, durations
        assert not backend.reachable
        private_redis.resume()
        assert _wait(lambda: backend.reachable, 5.0)
        assert breaker.statistics().backend == "fleet"
    finally:
        backend.close()


def _raise_reset() -> None:
    raise ConnectionResetError(104, "Connection reset by peer")


def test_a_cut_off_process_follows_the_fleet_when_it_returns(
    redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A FaultProxy in front of the shared Redis cuts one process off, then resets its
    connections; the shared Redis itself is never touched."""
    from resetguard.proxy import FaultProxy

    caplog.set_level(logging.INFO, logger="resetguard")
    with FaultProxy("127.0.0.1:6379") as proxy:
        cut = RedisBackend.from_url(
            f"redis://{proxy.host}:{proxy.port}/0",
            namespace=namespace,
            sync_interval=SYNC,
            timeout=TIMEOUT,
        )
        direct = RedisBackend.from_url(redis_url, namespace=namespace, sync_interval=SYNC)
        options = {"failure_threshold": 2, "open_duration": 60.0, "jitter": 0.0}
        try:
            a = resetguard.CircuitBreaker("shared", backend=cut, **options)  # type: ignore[arg-type]
            b = resetguard.CircuitBreaker("shared", backend=direct, **options)  # type: ignore[arg-type]
            assert cut.sync()
            assert direct.sync()
            proxy.disable()  # process A loses Redis
            for _ in range(2):  # ...and sees failures the fleet does not see
                with pytest.raises(ConnectionResetError):
                    a.call(_raise_reset)
            assert a.state is resetguard.CircuitState.OPEN  # decided locally
            assert _wait(lambda: not cut.reachable, 2.0)
            assert b.call(len, "ok") == 2
            moves: list[tuple[resetguard.BreakerStateChanged, bool]] = []
            # the listener also records whether the backend read as reachable when the
            # fleet's state arrived: it must already (no "fleet" decision while unreachable)
            a.add_listener(lambda m: moves.append((m, cut.reachable)))
            proxy.enable()
            # Back: the fleet's state (closed, newer than A's view) wins.
            assert _wait(lambda: a.state is resetguard.CircuitState.CLOSED, 5.0)
            assert cut.reachable
            assert [(m.new, m.decided_by, up) for m, up in moves] == [("closed", "fleet", True)]
            assert b.state is resetguard.CircuitState.CLOSED
            # Every connection reset in mid-run: callers never notice, syncing resumes.
            proxy.reset_connections()
            calls, slowest = _drive(lambda: a.call(len, "x"), 0.5, ())
            assert calls > 10
            assert slowest < 0.5
            assert _wait(lambda: cut.reachable and cut.sync(), 5.0)
            warnings = [r for r in caplog.records if "does not answer" in r.getMessage()]
            assert 1 <= len(warnings) <= 2  # once per outage: the cut, maybe the reset
        finally:
            cut.close()
            direct.close()


def test_a_server_that_is_not_redis_never_fails_a_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Something else listens where Redis should be (it answers +OK to everything)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.1)
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(b"+OK\r\n" * max(1, data.count(b"*")))

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    backend = RedisBackend.from_url(
        f"redis://127.0.0.1:{port}/0", namespace="x", sync_interval=SYNC
    )
    try:
        breaker = resetguard.CircuitBreaker("odd", failure_threshold=1, backend=backend)
        budget = resetguard.RetryBudget("odd", backend=backend)
        with pytest.raises(ConnectionResetError):
            breaker.call(_raise_reset)  # trips: the push to "Redis" fails
        assert breaker.state is resetguard.CircuitState.OPEN
        assert budget.withdraw()  # decided locally
        assert not backend.reachable
        warnings = [r for r in caplog.records if "does not answer" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        backend.close()
        stop.set()
        thread.join(timeout=5)
        listener.close()
