"""The Redis backend in one process: each backend object plays a process (its own
connections, syncer and local state) against the real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

import resetguard
from resetguard.fleet import RedisBackend

pytestmark = pytest.mark.redis

SYNC = 0.1


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _reset() -> None:
    raise ConnectionResetError(104, "Connection reset by peer")


def _fail(breaker: resetguard.CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionResetError):
            breaker.call(_reset)


@pytest.fixture
def backends(redis_url: str, namespace: str) -> Iterator[list[RedisBackend]]:
    made = [
        RedisBackend.from_url(redis_url, namespace=namespace, sync_interval=SYNC, timeout=0.5)
        for _ in range(3)
    ]
    yield made
    for backend in made:
        backend.close()


def _breakers(backends: list[RedisBackend], **options: object) -> list[resetguard.CircuitBreaker]:
    options = {"failure_threshold": 3, "open_duration": 0.5, "jitter": 0, **options}
    return [resetguard.CircuitBreaker("svc", backend=b, **options) for b in backends]  # type: ignore[arg-type]


def test_failures_spread_over_processes_add_up_to_a_trip(backends: list[RedisBackend]) -> None:
    a, b, c = _breakers(backends)
    _fail(a, 1)
    _fail(b, 1)
    _fail(c, 1)  # three failures in a row fleet-wide, none enough in its own process
    assert a.state is b.state is c.state is resetguard.CircuitState.CLOSED
    assert _wait(lambda: all(x.state is resetguard.CircuitState.OPEN for x in (a, b, c)), 2.0)


def test_a_success_in_between_breaks_the_fleet_streak(backends: list[RedisBackend]) -> None:
    a, b, _ = _breakers(backends)
    _fail(a, 2)
    for backend in backends:
        backend.sync()
    assert b.call(len, "ok") == 2
    backends[1].sync()
    _fail(b, 1)
    backends[1].sync()
    backends[0].sync()
    time.sleep(3 * SYNC)
    assert a.state is b.state is resetguard.CircuitState.CLOSED


def test_events_say_the_fleet_decided(backends: list[RedisBackend]) -> None:
    a, b, _ = _breakers(backends)
    seen: list[resetguard.BreakerStateChanged] = []
    b.add_listener(seen.append)
    _fail(a, 3)
    assert _wait(lambda: bool(seen), 2.0)
    assert (seen[0].old, seen[0].new, seen[0].decided_by) == ("closed", "open", "fleet")
    mine: list[resetguard.BreakerStateChanged] = []
    a.add_listener(mine.append)
    a.reset()
    assert mine[-1].decided_by == "local"


def test_state_lives_in_one_namespaced_key_with_a_ttl(
    backends: list[RedisBackend], redis_url: str, namespace: str
) -> None:
    import redis

    a, _, _ = _breakers(backends)
    budget = resetguard.RetryBudget("svc", backend=backends[0])
    _fail(a, 3)
    assert budget.withdraw()
    client = redis.Redis.from_url(redis_url)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{namespace}:*"))
        assert keys == [f"{namespace}:breaker:svc", f"{namespace}:budget:svc"]
        assert keys[0] == backends[0].key("breaker", "svc")
        for key in keys:
            assert 0 < client.pttl(key) <= backends[0].key_ttl * 1000
        assert client.hget(keys[0], "s") == b"1"
    finally:
        client.close()


def test_a_dead_probe_frees_its_slot_at_the_lease(redis_url: str, namespace: str) -> None:
    made = [
        RedisBackend.from_url(
            redis_url, namespace=namespace, sync_interval=SYNC, timeout=0.5, probe_lease=0.4
        )
        for _ in range(2)
    ]
    try:
        a, b = _breakers(made, open_duration=0.2)
        _fail(a, 3)
        assert _wait(lambda: b.state is resetguard.CircuitState.OPEN, 2.0)
        time.sleep(0.25)
        ticket = a._acquire()  # a probe that will never report back (its process "died")
        assert ticket & 1
        with pytest.raises(resetguard.CircuitOpen):
            b.call(len, "x")
        time.sleep(0.45)  # past the lease: the fleet gives the slot to another process
        assert _wait(lambda: _try(b), 2.0)
        assert _wait(lambda: b.state is resetguard.CircuitState.CLOSED, 2.0)
    finally:
        for backend in made:
            backend.close()


def _try(breaker: resetguard.CircuitBreaker) -> bool:
    try:
        breaker.call(len, "x")
    except resetguard.CircuitOpen:
        return False
    return True


def test_budget_floor_is_fleet_wide(backends: list[RedisBackend]) -> None:
    budgets = [
        resetguard.RetryBudget("floor", min_per_second=0.5, ttl=10, backend=b) for b in backends
    ]
    granted = sum(budget.withdraw() for _ in range(10) for budget in budgets)
    assert granted == 5  # 0.5/s x 10 s for the fleet, not per process
    stats = budgets[0].statistics()
    assert stats.backend == "fleet"
    refused: list[resetguard.BudgetExhaustedEvent] = []
    budgets[1].add_listener(refused.append)
    assert not budgets[1].withdraw()
    assert refused[0].decided_by == "fleet"


def test_budget_deposits_from_other_processes_pay_for_retries(
    backends: list[RedisBackend],
) -> None:
    payer, spender, _ = (
        resetguard.RetryBudget("pay", ratio=0.5, min_per_second=0, backend=b) for b in backends
    )
    assert not spender.withdraw()
    for _ in range(4):
        payer.deposit()
    assert backends[0].sync()  # the syncer flushes deposits; here, now
    assert [spender.withdraw() for _ in range(3)] == [True, True, False]


def test_asyncio_client_syncs_in_a_task(redis_url: str, namespace: str) -> None:
    async def main() -> None:
        sync_side = RedisBackend.from_url(redis_url, namespace=namespace, sync_interval=SYNC)
        async_side = RedisBackend.from_url(
            redis_url, namespace=namespace, sync_interval=SYNC, asyncio=True
        )
        try:
            assert async_side.asynchronous
            await async_side.start()
            a = resetguard.CircuitBreaker(
                "svc", failure_threshold=2, open_duration=0.3, jitter=0, backend=sync_side
            )
            b = resetguard.CircuitBreaker(
                "svc", failure_threshold=2, open_duration=0.3, jitter=0, backend=async_side
            )

            async def ok() -> str:
                return "ok"

            assert await b.acall(ok) == "ok"
            _fail(a, 2)
            for _ in range(200):  # the task pulls the fleet's state while the loop runs
                if b.state is resetguard.CircuitState.OPEN:
                    break
                await asyncio.sleep(0.01)
            assert b.state is resetguard.CircuitState.OPEN
            await asyncio.sleep(0.35)
            moves: list[resetguard.BreakerStateChanged] = []
            b.add_listener(moves.append)
            assert await b.acall(ok) == "ok"  # b's process claims the one probe: it closes
            assert [(m.new, m.decided_by) for m in moves] == [
                ("half_open", "fleet"),
                ("closed", "local"),
            ]
            for _ in range(200):  # ...and a follows
                if a.state is resetguard.CircuitState.CLOSED:
                    break
                await asyncio.sleep(0.01)
            assert a.state is resetguard.CircuitState.CLOSED
        finally:
            sync_side.close()
            await async_side.aclose()

    asyncio.run(main())


def test_bad_arguments_are_named(redis_url: str) -> None:
    import redis

    with pytest.raises(ValueError, match="sync_interval"):
        RedisBackend.from_url(redis_url, sync_interval=0)
    with pytest.raises(ValueError, match="namespace"):
        RedisBackend.from_url(redis_url, namespace="")
    with pytest.raises(ValueError, match="socket_timeout=None"):
        RedisBackend(redis.Redis.from_url(redis_url, socket_timeout=None))
    with pytest.raises(ValueError, match="retries"):
        # redis.Redis() retries 10 times with backoff by default (redis-py 8).
        RedisBackend(redis.Redis("127.0.0.1", socket_timeout=0.1, socket_connect_timeout=0.1))
    with pytest.raises(TypeError, match="redis-py client"):
        RedisBackend("redis://127.0.0.1")
    with pytest.raises(TypeError, match="backend"):
        resetguard.CircuitBreaker("x", backend="redis")  # type: ignore[arg-type]
    backend = RedisBackend.from_url(redis_url, key_ttl=5)
    try:
        with pytest.raises(ValueError, match="key_ttl=5"):
            resetguard.RetryBudget("x", ttl=10, backend=backend)
    finally:
        backend.close()


def test_one_probe_among_many_threads_of_many_processes(backends: list[RedisBackend]) -> None:
    import threading

    breakers = _breakers(backends, open_duration=0.3)
    _fail(breakers[0], 3)
    assert _wait(lambda: all(b.state is resetguard.CircuitState.OPEN for b in breakers), 2.0)
    time.sleep(0.35)  # the open period is over everywhere
    running = 0
    most = 0
    probes = 0
    guard = threading.Lock()
    start = threading.Barrier(12)

    def probe() -> None:
        nonlocal running, most, probes
        with guard:
            running += 1
            probes += 1
            most = max(most, running)
        time.sleep(0.3)
        with guard:
            running -= 1

    def hammer(breaker: resetguard.CircuitBreaker) -> None:
        start.wait(5)
        end = time.monotonic() + 0.25  # all within the probe's 0.3 s
        while time.monotonic() < end:
            try:
                breaker.call(probe)
            except resetguard.CircuitOpen:
                time.sleep(0.002)

    threads = [threading.Thread(target=hammer, args=(breakers[i % 3],)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert probes == 1
    assert most == 1
    assert _wait(lambda: all(b.state is resetguard.CircuitState.CLOSED for b in breakers), 2.0)


def test_budget_retry_after_comes_from_the_fleet(backends: list[RedisBackend]) -> None:
    import math

    floor = [
        resetguard.RetryBudget("wait", min_per_second=1, ttl=2, buckets=2, backend=b)
        for b in backends[:2]
    ]
    assert floor[0].withdraw()
    assert floor[0].withdraw()  # the fleet's floor (2 tokens) is spent...
    assert not floor[1].withdraw()  # ...for the other process too
    wait = floor[1].retry_after
    assert wait is not None
    assert 0 < wait <= 2.0  # when the spent tokens' bucket expires
    only_traffic = resetguard.RetryBudget(
        "traffic", ratio=0.5, min_per_second=0, backend=backends[2]
    )
    assert not only_traffic.withdraw()
    assert only_traffic.retry_after == math.inf


def test_budget_exhausted_error_carries_the_fleet_retry_after(
    backends: list[RedisBackend],
) -> None:
    budget = resetguard.RetryBudget(
        "strict", min_per_second=0, raise_on_exhausted=True, backend=backends[0]
    )

    @resetguard.retry(attempts=3, backoff=resetguard.Backoff.none(), budget=budget)
    def refused() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(resetguard.BudgetExhausted) as caught:
        refused()
    assert caught.value.retry_after == float("inf")
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
