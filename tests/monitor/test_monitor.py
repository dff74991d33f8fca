"""Monitor: counting, windows, bounded endpoints, events, track(), reporter."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import pytest

from resetguard._classify import Failure, Kind, Phase
from resetguard._events import (
    AttemptFailed,
    BreakerStateChanged,
    BudgetExhaustedEvent,
    ClientDisconnected,
    ConnectionEvent,
    GaveUp,
    RetryScheduled,
    RetrySucceeded,
    emit,
    hooks_active,
)
from resetguard._monitor import OUTCOMES, Monitor, OutcomeCounts


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_outcomes_cover_every_kind_plus_success_and_other() -> None:
    assert OUTCOMES[0] == "success"
    assert OUTCOMES[-1] == "other"
    assert set(OUTCOMES[1:-1]) == {k.value for k in Kind}


def test_record_labels_kinds_failures_exceptions() -> None:
    m = Monitor()
    m.record()
    m.record("success")
    m.record(None)
    m.record("reset")
    m.record(Kind.TIMEOUT)
    m.record(Failure(kind=Kind.CLOSED, phase=Phase.AWAIT, source="httpx", reused=True))
    m.record(BrokenPipeError(32, "Broken pipe"))
    m.record(ConnectionRefusedError(111, "Connection refused"))
    m.record(KeyError("not a connection fault"))
    c = m.report().calls
    assert (c.success, c.reset, c.timeout, c.closed, c.broken_pipe, c.refused, c.other) == (
        3,
        1,
        1,
        1,
        1,
        1,
        1,
    )
    assert c.total == 9
    assert c.faults == 5
    assert c.failures == 6
    assert c.reset_rate == pytest.approx(1 / 9)
    assert c.fault_rate == pytest.approx(5 / 9)
    assert c.error_rate == pytest.approx(6 / 9)
    r = m.report()
    assert r.phases["await"] == 1
    assert r.sources["httpx"] == 1
    assert r.reused_faults == 1


def test_bad_input_is_rejected_with_the_value() -> None:
    m = Monitor()
    with pytest.raises(ValueError, match="'resett'"):
        m.record("resett")
    with pytest.raises(ValueError, match="-1"):
        m.record("success", latency=-1)
    with pytest.raises(ValueError, match="phase/source"):
        m.record("success", phase="connect")
    with pytest.raises(ValueError, match="'nope'"):
        m.record("reset", phase="nope")
    for kwargs, text in [
        ({"window": 0}, "window"),
        ({"window": True}, "window"),
        ({"buckets": 0}, "buckets"),
        ({"max_endpoints": -1}, "max_endpoints"),
        ({"latency_buckets": (1.0, 0.5)}, "latency_buckets"),
        ({"idle_buckets": ()}, "idle_buckets"),
    ]:
        with pytest.raises(ValueError, match=text):
            Monitor(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        Monitor(name=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        m.start_reporter(0)
    with pytest.raises(ValueError, match="'bogus'"):
        OutcomeCounts().get("bogus")


def test_sliding_window_forgets_old_buckets() -> None:
    clock = FakeClock()
    m = Monitor(window=10.0, buckets=5, clock=clock)
    m.record("reset")
    clock.now += 4.0
    m.record("success")
    m.record("success")
    r = m.report()
    assert r.window_calls.total == 3
    assert r.window == pytest.approx(4.0)  # shorter than the window while young
    clock.now += 7.0  # the first bucket (t=1000) has left the 10 s window
    r = m.report()
    assert r.window_calls.total == 2
    assert r.window_calls.reset == 0
    assert r.calls.total == 3  # lifetime keeps everything
    assert r.window == pytest.approx(10.0)
    assert r.per_second("success") == pytest.approx(0.2)
    clock.now += 100.0
    r = m.report()
    assert r.window_calls.total == 0
    assert r.window_calls.reset_rate == 0.0
    m.record("timeout")
    assert m.report().window_calls.timeout == 1


def test_endpoint_table_is_bounded_lru_and_counts_evictions() -> None:
    m = Monitor(max_endpoints=3)
    for name in ("a", "b", "c"):
        m.record("success", endpoint=name)
    m.record("reset", endpoint="a")  # a is now the most recent
    m.record("success", endpoint="d")  # evicts b
    m.record("success", endpoint="e")  # evicts c
    r = m.report()
    assert set(r.endpoints) == {"a", "d", "e"}
    assert r.endpoints["a"].calls.reset == 1
    assert r.endpoints["a"].calls.total == 2
    assert r.evicted_endpoints == 2
    assert r.calls.total == 6  # totals survive eviction


def test_endpoint_memory_stays_bounded_under_many_endpoints() -> None:
    m = Monitor(max_endpoints=50)
    for i in range(5000):
        m.record("success", endpoint=f"host-{i}")
    r = m.report()
    assert len(r.endpoints) == 50
    assert r.evicted_endpoints == 4950
    assert "host-4999" in r.endpoints


def test_endpoint_credentials_are_redacted() -> None:
    m = Monitor()
    m.record("reset", endpoint="postgresql://app:s3cret@db.internal:5432/prod")
    (shown,) = m.report().endpoints
    assert "s3cret" not in shown
    assert shown == "postgresql://***@db.internal:5432/prod"
    assert "s3cret" not in m.report().format()
    assert "s3cret" not in str(m.report().as_dict())


def test_label_tables_are_bounded() -> None:
    m = Monitor()
    for i in range(200):
        m.record(Failure(kind=Kind.RESET, source=f"lib{i}"))
    sources = m.report().sources
    assert len(sources) <= 65
    assert sum(sources.values()) == 200
    assert sources["(other)"] == 200 - 64


def test_events_are_counted_when_installed() -> None:
    m = Monitor()
    assert not m.installed
    reset = ConnectionResetError(104, "Connection reset by peer")
    failure = Failure(kind=Kind.RESET, phase=Phase.AWAIT, reused=True, source="httpx")
    with m:
        assert hooks_active()
        emit(AttemptFailed(name="GET /x", attempt=1, exception=reset, failure=failure, elapsed=0.1))
        emit(AttemptFailed(name="GET /x", attempt=1, exception=KeyError(), failure=None, elapsed=0))
        emit(
            RetryScheduled(
                name="GET /x",
                attempt=1,
                max_attempts=3,
                delay=0.1,
                exception=reset,
                failure=failure,
            )
        )
        emit(RetrySucceeded(name="GET /x", attempts=2, elapsed=0.3))
        emit(
            GaveUp(
                name="POST /y",
                attempts=1,
                reason="unsafe",
                exception=reset,
                failure=failure,
                elapsed=0,
            )
        )
        emit(BudgetExhaustedEvent(name="api", balance=0.0))
        emit(BreakerStateChanged(name="db", old="closed", new="open", reason="failures", at=1.0))
        emit(BreakerStateChanged(name="db", old="open", new="half_open", reason="timer", at=2.0))
        emit(ConnectionEvent(name="httpx", action="reused", idle_age=3.0))
        emit(ConnectionEvent(name="httpx", action="failed", idle_age=4.5, failure=failure))
        emit(ClientDisconnected(name="asgi", path="/slow"))
    assert not m.installed
    emit(RetrySucceeded(name="after", attempts=2, elapsed=0.0))  # not counted any more
    r = m.report()
    assert r.attempt_failures.reset == 1
    assert r.attempt_failures.other == 1
    assert r.endpoints["GET /x"].attempt_failures.total == 2
    assert r.calls.total == 0  # events never invent calls
    assert (r.retries, r.recovered, r.budget_exhausted, r.client_disconnects) == (1, 1, 1, 1)
    assert dict(r.gave_up) == {"unsafe": 1}
    assert dict(r.breaker_transitions) == {"open": 1, "half_open": 1}
    assert dict(r.breakers) == {"db": "half_open"}
    assert dict(r.connections) == {"reused": 1, "failed": 1}
    assert r.reuse_idle_age.count == 1
    assert r.failure_idle_age.sum == pytest.approx(4.5)
    assert r.reused_faults == 2  # the attempt and the connection failure
    assert r.phases["await"] == 2


def test_install_twice_and_uninstall_twice_are_errors() -> None:
    m = Monitor().install()
    try:
        with pytest.raises(RuntimeError, match="already installed"):
            m.install()
    finally:
        m.uninstall()
    with pytest.raises(RuntimeError, match="not installed"):
        m.uninstall()


def test_track_sync_counts_and_reraises_the_same_exception() -> None:
    clock = FakeClock()
    m = Monitor(clock=clock)

    @m.track
    def work(fail: BaseException | None = None) -> str:
        clock.now += 0.2
        if fail is not None:
            raise fail
        return "done"

    assert work() == "done"
    err = ConnectionResetError(104, "Connection reset by peer")
    with pytest.raises(ConnectionResetError) as info:
        work(err)
    assert info.value is err
    r = m.report()
    name = work.__qualname__
    assert r.endpoints[name].calls.success == 1
    assert r.endpoints[name].calls.reset == 1
    assert r.latency.count == 2
    assert r.latency.sum == pytest.approx(0.4)
    assert work.__name__ == "work"


def test_track_async_with_endpoint() -> None:
    m = Monitor()

    @m.track(endpoint="svc")
    async def work(fail: bool) -> int:
        await asyncio.sleep(0)
        if fail:
            raise TimeoutError("read timed out")
        return 7

    async def main() -> None:
        assert await work(False) == 7
        with pytest.raises(TimeoutError):
            await work(True)

    asyncio.run(main())
    calls = m.report().endpoints["svc"].calls
    assert (calls.success, calls.timeout) == (1, 1)


def test_track_rejects_non_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        Monitor().track(42)  # type: ignore[call-overload]


def test_track_counts_a_real_reset_from_a_loopback_server() -> None:
    """A real RST (SO_LINGER 0) from a real server is classified as a reset."""
    m = Monitor()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        @m.track(endpoint=f"127.0.0.1:{port}")
        def call() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                peer, _ = server.accept()
                peer.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                peer.close()
                c.sendall(b"ping")
                return c.recv(10)

        with pytest.raises(ConnectionResetError):
            call()
    r = m.report()
    assert r.calls.reset == 1
    assert r.sources["stdlib"] == 1


def test_latency_histogram_buckets() -> None:
    m = Monitor(latency_buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0, 3.0):
        m.record("success", latency=value)
    h = m.report().latency
    assert h.counts == (2, 1, 2)
    assert h.cumulative() == (2, 3, 5)
    assert h.count == 5


def test_reset_forgets_everything() -> None:
    m = Monitor()
    m.record("reset", endpoint="x", latency=0.1)
    m.reset()
    r = m.report()
    assert r.calls.total == 0
    assert not r.endpoints
    assert r.latency.count == 0


def test_thread_safety_under_concurrent_record() -> None:
    m = Monitor(max_endpoints=8)
    n_threads, per_thread = 4, 5000

    def worker(i: int) -> None:
        for j in range(per_thread):
            m.record("reset" if j % 10 == 0 else "success", endpoint=f"e{(i + j) % 12}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    r = m.report()
    assert r.calls.total == n_threads * per_thread
    assert r.calls.reset == n_threads * per_thread // 10
    assert len(r.endpoints) == 8


def test_report_is_frozen_and_formats() -> None:
    m = Monitor(name="api")
    m.record("reset")
    m.record("success")
    r = m.report()
    with pytest.raises(AttributeError):
        r.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.phases["x"] = 1  # type: ignore[index]
    line = r.format()
    assert line.startswith("api: 2 calls, 1 resets (50.00%)")
    d = r.as_dict()
    assert d["calls"] == {"success": 1, "reset": 1}
    assert d["reset_rate"] == 0.5


def test_reporter_thread_logs_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    m = Monitor(name="svc")
    m.record("reset")
    caplog.set_level(logging.INFO, logger="resetguard.monitor")
    reporter = m.start_reporter(0.01)
    try:
        assert reporter.wait_for(2, timeout=5.0)
    finally:
        reporter.stop()
    assert not reporter.running
    records = [r for r in caplog.records if r.name == "resetguard.monitor"]
    assert len(records) >= 2
    assert records[0].getMessage().startswith("svc: 1 calls, 1 resets")
    assert records[0].rg_calls == {"reset": 1}  # type: ignore[attr-defined]
    assert records[0].rg_reset_rate == 1.0  # type: ignore[attr-defined]


def test_reporter_sink_and_context_manager() -> None:
    m = Monitor()
    seen: list[object] = []
    with m.start_reporter(0.01, sink=seen.append) as reporter:
        assert reporter.wait_for(1, timeout=5.0)
    assert not reporter.running
    count = len(seen)
    assert count >= 1
    assert reporter.wait_for(count + 1, timeout=0.05) is False  # stopped: nothing more


def test_report_periodically_async_until_cancelled() -> None:
    m = Monitor()
    seen: list[object] = []

    async def main() -> None:
        task = asyncio.create_task(m.report_periodically(0.01, sink=seen.append))
        for _ in range(500):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(seen) >= 2


def test_monitor_as_local_hook() -> None:
    m = Monitor()
    emit(RetrySucceeded(name="x", attempts=2, elapsed=0.0), local=m)
    assert m.report().recovered == 1
