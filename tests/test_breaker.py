"""CircuitBreaker: triggers, half-open probes, open-period growth, events, bad input.

Time is a fake clock; the network test uses a real loopback port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
from collections.abc import Callable

import pytest

import resetguard
from resetguard._breaker import BreakerPolicy, CircuitBreaker, CircuitState, _default_counts

RESET = ConnectionResetError(104, "Connection reset by peer")


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None, **options: object) -> CircuitBreaker:
    options.setdefault("jitter", 0)
    return CircuitBreaker("test", clock=clock or Clock(), **options)  # type: ignore[arg-type]


def fail(exc: BaseException = RESET) -> Callable[[], None]:
    def raiser() -> None:
        raise exc

    return raiser


def ok() -> str:
    return "ok"


def attempt(breaker: CircuitBreaker, fn: Callable[[], object]) -> str:
    """Run fn through the breaker and say what happened."""
    try:
        breaker.call(fn)
    except resetguard.CircuitOpen:
        return "rejected"
    except Exception:
        return "raised"
    return "ok"


# --------------------------------------------------------------------------- consecutive


def test_default_trips_after_five_consecutive_connection_faults() -> None:
    breaker = make()
    for _ in range(4):
        assert attempt(breaker, fail()) == "raised"
    assert breaker.state is CircuitState.CLOSED
    assert attempt(breaker, fail()) == "raised"
    assert breaker.state is CircuitState.OPEN
    stats = breaker.statistics()
    assert (stats.failures, stats.trips, stats.consecutive_failures) == (5, 1, 5)


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = make(failure_threshold=3)
    for _ in range(5):
        attempt(breaker, fail())
        attempt(breaker, fail())
        attempt(breaker, ok)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.statistics().failures == 10


def test_errors_that_are_not_connection_faults_are_ignored() -> None:
    breaker = make(failure_threshold=2)
    for _ in range(10):
        assert attempt(breaker, fail(KeyError("missing"))) == "raised"
    stats = breaker.statistics()
    assert breaker.state is CircuitState.CLOSED
    assert (stats.ignored, stats.failures, stats.calls) == (10, 0, 10)


def test_ignored_errors_do_not_break_a_failure_streak() -> None:
    breaker = make(failure_threshold=2)
    attempt(breaker, fail())
    attempt(breaker, fail(ValueError("bad input")))
    attempt(breaker, fail())
    assert breaker.state is CircuitState.OPEN


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError(104, "Connection reset by peer"),
        ConnectionResetError(),
        ConnectionResetError(2, "odd errno"),
        BrokenPipeError(32, "Broken pipe"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionAbortedError(103, "Software caused connection abort"),
        TimeoutError("timed out"),
    ],
)
def test_default_counting_shortcut_agrees_with_classify(exc: Exception) -> None:
    assert _default_counts(exc) is True
    assert resetguard.classify(exc) is not None


def test_counts_predicate_overrides_the_default() -> None:
    breaker = make(failure_threshold=2, counts=lambda exc: isinstance(exc, LookupError))
    attempt(breaker, fail())  # a reset, but not counted by this predicate
    assert breaker.statistics().ignored == 1
    attempt(breaker, fail(KeyError("a")))
    attempt(breaker, fail(IndexError("b")))
    assert breaker.state is CircuitState.OPEN


def test_open_breaker_rejects_without_calling_and_says_when_to_come_back() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1, open_duration=10)
    attempt(breaker, fail())
    clock.now += 4
    called = []
    with pytest.raises(resetguard.CircuitOpen) as info:
        breaker.call(called.append, 1)
    assert called == []
    assert info.value.retry_after == pytest.approx(6)
    assert info.value.breaker == "test"
    assert isinstance(info.value, resetguard.Rejected)
    assert breaker.statistics().rejected == 1
    assert breaker.statistics().retry_after == pytest.approx(6)
    assert str(info.value) == "circuit breaker 'test' is open; next probe in 6.0 s"
    clock.now += 5.95
    with pytest.raises(resetguard.CircuitOpen) as info:
        breaker.call(called.append, 1)
    assert str(info.value) == "circuit breaker 'test' is open; next probe in 50 ms"


# --------------------------------------------------------------------------- half-open


def test_half_open_after_the_open_period_then_a_successful_probe_closes() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1, open_duration=10)
    attempt(breaker, fail())
    clock.now += 9.999
    assert breaker.state is CircuitState.OPEN
    clock.now += 0.001
    assert breaker.state is CircuitState.HALF_OPEN
    assert attempt(breaker, ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_failed_probe_reopens_with_a_growing_capped_period() -> None:
    clock = Clock()
    breaker = make(
        clock,
        failure_threshold=1,
        open_duration=10,
        open_duration_multiplier=3,
        open_duration_max=50,
    )
    periods = []
    attempt(breaker, fail())
    for _ in range(4):
        periods.append(breaker.statistics().retry_after)
        clock.now += 1000
        assert attempt(breaker, fail()) == "raised"  # the probe fails
        assert breaker.state is CircuitState.OPEN
    periods.append(breaker.statistics().retry_after)
    assert periods == pytest.approx([10, 30, 50, 50, 50])
    # Closing resets the growth.
    clock.now += 1000
    attempt(breaker, ok)
    attempt(breaker, fail())
    assert breaker.statistics().retry_after == pytest.approx(10)


def test_jitter_shortens_the_open_period_by_the_injected_random() -> None:
    breaker = CircuitBreaker(
        "j", failure_threshold=1, open_duration=10, jitter=0.5, clock=Clock(), random=lambda: 0.4
    )
    attempt(breaker, fail())
    assert breaker.statistics().retry_after == pytest.approx(10 * (1 - 0.5 * 0.4))


def test_half_open_admits_n_probes_at_once_and_closes_after_m_successes() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1, half_open_probes=2, success_threshold=3)
    attempt(breaker, fail())
    clock.now += 1000
    first, second = breaker._acquire(), breaker._acquire()
    with pytest.raises(resetguard.CircuitOpen, match="probe slot"):
        breaker._acquire()
    assert breaker.statistics().half_open_in_flight == 2
    breaker._release(first, None, 0.0)
    breaker._release(second, None, 0.0)
    assert breaker.state is CircuitState.HALF_OPEN
    third = breaker._acquire()
    breaker._release(third, None, 0.0)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.statistics().rejected == 1


def test_ignored_probe_frees_its_slot_without_counting() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1)
    attempt(breaker, fail())
    clock.now += 1000
    assert attempt(breaker, fail(KeyError("x"))) == "raised"
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.statistics().half_open_in_flight == 0
    assert attempt(breaker, ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_outcome_of_a_call_started_before_a_trip_moves_nothing() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1)
    slow_ticket = breaker._acquire()  # started while closed
    attempt(breaker, fail())  # trips
    clock.now += 1000
    probe = breaker._acquire()  # half-open probe
    breaker._release(slow_ticket, None, 0.0)  # the old call finally succeeds
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.statistics().half_open_in_flight == 1
    breaker._release(probe, RESET, 0.0)
    assert breaker.state is CircuitState.OPEN
    stats = breaker.statistics()
    assert (stats.successes, stats.failures) == (1, 2)


# --------------------------------------------------------------------------- rates


def test_failure_rate_over_a_count_window_waits_for_the_minimum() -> None:
    breaker = make(failure_threshold=None, failure_rate=0.5, window=10, minimum_calls=6)
    outcomes = [fail(), ok, fail(), ok, fail()]  # 3 of 5: 60 %, below the minimum
    for fn in outcomes:
        attempt(breaker, fn)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.statistics().failure_rate is None
    attempt(breaker, ok)  # 3 of 6 = 50 %
    assert breaker.state is CircuitState.OPEN


def test_count_window_forgets_the_oldest_calls() -> None:
    breaker = make(failure_threshold=None, failure_rate=0.5, window=4, minimum_calls=4)
    for fn in (fail(), ok, ok, ok, ok, fail()):
        attempt(breaker, fn)
    stats = breaker.statistics()
    # The first failure slid out: the window is ok, ok, ok, fail.
    assert (stats.window_calls, stats.window_failures, stats.failure_rate) == (4, 1, 0.25)
    attempt(breaker, fail())
    assert breaker.state is CircuitState.OPEN


def test_time_window_expires_old_buckets() -> None:
    clock = Clock(0.0)
    breaker = make(
        clock,
        failure_threshold=None,
        failure_rate=0.5,
        window_duration=10,
        window_buckets=5,
        minimum_calls=4,
    )
    for _ in range(3):
        attempt(breaker, fail())
    clock.now = 12.0  # the failures at t=0 have left the window
    for _ in range(3):
        attempt(breaker, ok)
    assert breaker.state is CircuitState.CLOSED
    stats = breaker.statistics()
    assert (stats.window_calls, stats.window_failures) == (3, 0)
    attempt(breaker, fail())
    attempt(breaker, fail())
    assert breaker.state is CircuitState.CLOSED  # 2 of 5 = 40 %
    attempt(breaker, fail())
    assert breaker.state is CircuitState.OPEN  # 3 of 6 = 50 %
    clock.now = 1000.0  # idle far longer than the window: everything expires
    stats = breaker.statistics()
    assert stats.window_calls == 0


def test_slow_calls_trip_the_slow_call_rate() -> None:
    clock = Clock()
    breaker = make(
        clock,
        failure_threshold=None,
        slow_call_rate=0.5,
        slow_call_duration=1.0,
        window=4,
        minimum_calls=4,
    )

    def slow() -> str:
        clock.now += 2.0
        return "late"

    for fn in (slow, ok, ok, slow):
        assert attempt(breaker, fn) == "ok"
    assert breaker.state is CircuitState.OPEN
    assert breaker.statistics().slow_calls == 2


def test_slow_probe_reopens() -> None:
    clock = Clock()
    breaker = make(
        clock, failure_threshold=1, slow_call_rate=1.0, slow_call_duration=1.0, minimum_calls=1
    )
    attempt(breaker, fail())
    clock.now += 1000

    def slow() -> None:
        clock.now += 5

    attempt(breaker, slow)
    assert breaker.state is CircuitState.OPEN


# --------------------------------------------------------------------------- manual, events


def test_isolate_rejects_until_reset() -> None:
    clock = Clock()
    breaker = make(clock)
    breaker.isolate()
    clock.now += 10**6
    with pytest.raises(resetguard.CircuitOpen, match="isolated") as info:
        breaker.call(ok)
    assert info.value.retry_after is None
    assert breaker.state is CircuitState.OPEN
    breaker.reset()
    assert attempt(breaker, ok) == "ok"


def test_reset_forgets_counts_but_keeps_totals() -> None:
    breaker = make(failure_threshold=3)
    attempt(breaker, fail())
    attempt(breaker, fail())
    breaker.reset()
    attempt(breaker, fail())
    attempt(breaker, fail())
    assert breaker.state is CircuitState.CLOSED
    assert breaker.statistics().failures == 4


def test_listeners_hooks_and_logs_see_every_state_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1, open_duration=5)
    mine: list[resetguard.BreakerStateChanged] = []
    everyone: list[resetguard.Event] = []
    breaker.add_listener(mine.append)
    resetguard.add_hook(everyone.append)
    try:
        with caplog.at_level(logging.INFO, logger="resetguard.breaker"):
            attempt(breaker, fail())
            clock.now += 5
            attempt(breaker, ok)
    finally:
        resetguard.remove_hook(everyone.append)
    moves = [(e.old, e.new) for e in mine]
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert [e for e in everyone if isinstance(e, resetguard.BreakerStateChanged)] == mine
    assert mine[0].reason.startswith("1 consecutive failures")
    assert mine[1].at == 1005.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        mine[0].new = "closed"  # type: ignore[misc]
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels[0][0] == "WARNING"
    assert "'test': closed -> open" in levels[0][1]
    assert [lvl for lvl, _ in levels[1:]] == ["INFO", "INFO"]


def test_a_raising_listener_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    breaker = make(failure_threshold=1)

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    seen: list[object] = []
    breaker.add_listener(broken)
    breaker.add_listener(seen.append)
    with caplog.at_level(logging.ERROR, logger="resetguard.breaker"):
        assert attempt(breaker, fail()) == "raised"
    assert len(seen) == 1
    assert "listener bug" in caplog.text
    breaker.remove_listener(broken)
    with pytest.raises(ValueError, match="not registered"):
        breaker.remove_listener(broken)


def test_statistics_is_a_frozen_snapshot() -> None:
    breaker = make()
    before = breaker.statistics()
    breaker.call(ok)
    assert (before.successes, breaker.statistics().successes) == (0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.successes = 5  # type: ignore[misc]


# --------------------------------------------------------------------------- shapes


def test_decorator_keeps_the_function_identity_and_passes_arguments() -> None:
    breaker = make(failure_threshold=1)

    @breaker
    def add(a: int, b: int = 0) -> int:
        """Adds."""
        return a + b

    assert add(2, b=3) == 5
    assert add.__name__ == "add"
    assert add.__doc__ == "Adds."
    assert breaker.statistics().successes == 1


def test_decorated_failures_open_the_breaker_and_reject() -> None:
    breaker = make(failure_threshold=2)
    calls = []

    @breaker
    def down() -> None:
        calls.append(1)
        raise RESET

    for _ in range(2):
        with pytest.raises(ConnectionResetError):
            down()
    with pytest.raises(resetguard.CircuitOpen):
        down()
    assert len(calls) == 2


def test_async_decorator_and_acall() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1)

    @breaker
    async def fetch(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2

    async def down() -> None:
        await asyncio.sleep(0)
        raise RESET

    async def scenario() -> list[str]:
        seen = [str(await fetch(21))]
        try:
            await breaker.acall(down)
        except ConnectionResetError:
            seen.append("reset")
        try:
            await fetch(1)
        except resetguard.CircuitOpen:
            seen.append("rejected")
        return seen

    assert asyncio.run(scenario()) == ["42", "reset", "rejected"]
    assert asyncio.iscoroutinefunction(fetch)


def test_cancelled_probe_frees_its_slot() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1)
    attempt(breaker, fail())
    clock.now += 1000

    async def scenario() -> str:
        gate = asyncio.Event()
        task = asyncio.ensure_future(breaker.acall(gate.wait))
        await asyncio.sleep(0)
        assert breaker.statistics().half_open_in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await breaker.acall(asyncio.sleep, 0, "probe ok")

    assert asyncio.run(scenario()) == "probe ok"
    assert breaker.state is CircuitState.CLOSED
    assert breaker.statistics().ignored == 1


def test_time_based_window_with_the_real_clock_defaults() -> None:
    breaker = CircuitBreaker("rt", failure_threshold=None, failure_rate=1.0, window_duration=60)
    for _ in range(breaker.policy.minimum_calls):
        attempt(breaker, fail())
    assert breaker.state is CircuitState.OPEN
    assert repr(breaker) == "<CircuitBreaker 'rt' open>"


# --------------------------------------------------------------------------- real network


def test_real_refused_connections_open_the_breaker_and_a_real_server_closes_it(
    unused_port: int,
) -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=3, open_duration=1)

    @breaker
    def connect() -> bytes:
        with socket.create_connection(("127.0.0.1", unused_port), timeout=2) as conn:
            return conn.recv(16)

    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            connect()
    with pytest.raises(resetguard.CircuitOpen):
        connect()

    server = socket.create_server(("127.0.0.1", unused_port))
    served = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"hello")
        served.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        clock.now += 1
        assert connect() == b"hello"
        assert breaker.state is CircuitState.CLOSED
    finally:
        server.close()
        thread.join(timeout=5)
    assert served.is_set()
    assert not thread.is_alive()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold must be >= 1, got 0"),
        ({"failure_threshold": -3}, ValueError, "got -3"),
        ({"failure_threshold": 2.5}, TypeError, "failure_threshold must be an int, got 2.5"),
        ({"failure_threshold": True}, TypeError, "got True"),
        ({"failure_rate": 0}, ValueError, r"failure_rate must be in \(0, 1\], got 0"),
        ({"failure_rate": 1.5}, ValueError, "got 1.5"),
        ({"failure_rate": float("nan")}, ValueError, "nan"),
        ({"slow_call_rate": 0.5}, ValueError, "slow_call_duration=None"),
        ({"slow_call_duration": 1.0}, ValueError, "slow_call_rate=None"),
        ({"slow_call_rate": 0.5, "slow_call_duration": 0}, ValueError, "got 0"),
        ({"slow_call_rate": -0.1, "slow_call_duration": 1}, ValueError, "got -0.1"),
        ({"failure_rate": 0.5, "window": 10, "minimum_calls": 11}, ValueError, "window=10"),
        ({"window": 0}, ValueError, "window must be >= 1, got 0"),
        ({"minimum_calls": 0}, ValueError, "minimum_calls must be >= 1, got 0"),
        ({"window_duration": 0}, ValueError, "window_duration must be a finite number > 0"),
        ({"window_buckets": 0}, ValueError, "window_buckets must be >= 1, got 0"),
        ({"half_open_probes": 0}, ValueError, "half_open_probes must be >= 1, got 0"),
        ({"success_threshold": 0}, ValueError, "success_threshold must be >= 1, got 0"),
        ({"open_duration": 0}, ValueError, "open_duration must be a finite number > 0, got 0"),
        ({"open_duration": float("inf")}, ValueError, "got inf"),
        ({"open_duration_multiplier": 0.5}, ValueError, "must be >= 1, got 0.5"),
        ({"open_duration": 60, "open_duration_max": 30}, ValueError, "open_duration_max=30"),
        ({"jitter": 1}, ValueError, r"jitter must be in \[0, 1\), got 1"),
        ({"jitter": -0.1}, ValueError, "got -0.1"),
        ({"failure_threshold": None}, ValueError, "could never open"),
        ({"counts": "connection"}, TypeError, "counts must be callable, got 'connection'"),
        ({"clock": 5}, TypeError, "clock must be callable, got 5"),
    ],
)
def test_bad_input_names_the_value(options: dict[str, object], error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        CircuitBreaker("bad", **options)  # type: ignore[arg-type]


def test_bad_name_and_listener() -> None:
    with pytest.raises(TypeError, match="name must be a str, got 3"):
        CircuitBreaker(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="listener must be callable"):
        make().add_listener(None)  # type: ignore[arg-type]


def test_policy_is_frozen_and_computes_the_open_period() -> None:
    policy = BreakerPolicy(open_duration=2, open_duration_multiplier=2, open_duration_max=10**9)
    assert [policy.open_period(n, lambda: 0.0) for n in (1, 2, 3)] == [2, 4, 8]
    assert [policy.open_period(n, lambda: 0.5) for n in (1, 2)] == pytest.approx([1.8, 3.6])
    assert policy.open_period(10_000, lambda: 0.0) == 10**9
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.jitter = 0  # type: ignore[misc]


def test_from_policy_builds_independent_breakers() -> None:
    policy = BreakerPolicy(failure_threshold=1, open_duration=7, jitter=0)
    first = CircuitBreaker.from_policy(policy, "first", clock=Clock())
    second = CircuitBreaker.from_policy(policy, "second", clock=Clock())
    attempt(first, fail())
    assert (first.state, second.state) == (CircuitState.OPEN, CircuitState.CLOSED)
    assert first.policy == second.policy == policy
    assert first.statistics().retry_after == 7
    with pytest.raises(TypeError, match=r"policy must be a resetguard\.BreakerPolicy, got"):
        CircuitBreaker.from_policy({"failure_threshold": 1}, "bad")  # type: ignore[arg-type]


def test_acall_and_async_decorator_under_trio() -> None:
    trio = pytest.importorskip("trio")
    clock = Clock()
    breaker = make(clock, failure_threshold=1)

    @breaker
    async def down() -> None:
        await trio.sleep(0)
        raise RESET

    async def scenario() -> list[str]:
        seen = [await breaker.acall(trio.sleep, 0) or "slept"]
        try:
            await down()
        except ConnectionResetError:
            seen.append("reset")
        try:
            await breaker.acall(trio.sleep, 0)
        except resetguard.CircuitOpen:
            seen.append("rejected")
        return seen

    assert trio.run(scenario) == ["slept", "reset", "rejected"]
