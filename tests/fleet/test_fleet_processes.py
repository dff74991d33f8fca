"""Several real OS processes share one breaker and one budget through the real Redis."""

from __future__ import annotations

import contextlib
import multiprocessing
import time

import pytest

from ._servers import ResetServer, SlowServer
from ._workers import breaker_worker, budget_worker, run_fleet

pytestmark = pytest.mark.redis

SPAWN = multiprocessing.get_context("spawn")
# Generous margins: the machine is shared and loaded; the behaviour, not the speed, is tested.
SLACK = 0.5


def test_one_process_trips_the_breaker_for_all_then_one_probe_closes_it(
    redis_url: str, namespace: str, unused_port: int
) -> None:
    sync_interval, open_duration, n = 0.2, 1.5, 4
    with SlowServer(hold=0.5) as target:
        results = run_fleet(
            SPAWN,
            breaker_worker,
            lambda i: (
                redis_url,
                namespace,
                i,
                unused_port,
                target.port,
                sync_interval,
                open_duration,
            ),
            n,
        )
        time.sleep(0.2)  # the last answers' threads record their time
        accepted, answered = list(target.accepted), sorted(target.answered)
    by_role = {r["role"]: r for r in results}
    tripper = by_role[0]
    assert tripper["state_after_trip"] == "open"
    # Failures seen by one process opened the breaker of every other within one sync.
    for role in range(1, n):
        assert by_role[role]["state_seen"] == "open", by_role[role]
        assert by_role[role]["open_at"] - tripper["tripped_at"] <= sync_interval + SLACK
    # Exactly one half-open probe fleet-wide: while it ran (0.5 s), every other call
    # attempt in every process was refused without reaching the server.
    probe_answered = answered[0]
    during_probe = [t for t in accepted if t < probe_answered]
    assert len(during_probe) == 1, (during_probe, probe_answered)
    assert sum(r["rejected"] for r in results) > 0
    # After the probe succeeded, the breaker closed for all: every process got its calls
    # through, within about one sync of the probe's answer.
    for r in results:
        assert r["successes"] == 3, r
        assert r["final_state"] == "closed"
        assert r["backend"] == "fleet"
        assert r["first_success"] - probe_answered <= sync_interval + SLACK, r
    assert len(accepted) == 3 * n
    # The events say who decided: the tripping process itself, the fleet for the others.
    assert tripper["moves"][0] == ("open", "local")
    for role in range(1, n):
        assert by_role[role]["moves"][0] == ("open", "fleet"), by_role[role]["moves"]
    # One process moved to half-open by claiming the probe; every process ends closed.
    claims = [m for r in results for m in r["moves"] if m == ("half_open", "fleet")]
    assert len(claims) == 1, [r["moves"] for r in results]
    assert all(r["moves"][-1][0] == "closed" for r in results)


@pytest.mark.parametrize("processes", [1, 4, 8])
def test_shared_budget_bounds_attempts_per_call_at_any_fleet_size(
    redis_url: str, namespace: str, processes: int
) -> None:
    calls, ratio, min_per_second, ttl = 40, 0.2, 0.5, 20.0
    reserve = min_per_second * ttl  # the floor: once for the whole fleet
    with ResetServer() as server:
        results = run_fleet(
            SPAWN,
            budget_worker,
            lambda i: (redis_url, namespace, server.port, calls, ratio, min_per_second, ttl),
            processes,
        )
        total_withdrawals = sum(r["withdrawals"] for r in results)
        total_calls = sum(r["calls"] for r in results)
        deadline = time.monotonic() + 5
        while len(server.accepted) < total_calls + total_withdrawals:
            assert time.monotonic() < deadline, "the server missed connections"
            time.sleep(0.02)
        attempts = len(server.accepted)
    for r in results:
        assert r["errors"] == {}, r
        assert r["backend"] == "fleet", r  # no local fallback happened
        assert r["reachable"], r
    assert attempts == total_calls + total_withdrawals
    # Every retry was paid from one balance: at most ratio of the calls plus one floor.
    assert total_withdrawals <= ratio * total_calls + reserve + 1e-9, (total_withdrawals, results)
    assert attempts / total_calls <= 1 + ratio + reserve / total_calls + 1e-9
    # And the budget did spend what it had: retries were made, then refused.
    assert total_withdrawals >= reserve
    assert sum(r["refusals"] for r in results) > 0


def _forked_child(breaker: object, out: object) -> None:
    import resetguard as rg

    assert isinstance(breaker, rg.CircuitBreaker)
    deadline = time.monotonic() + 10
    while breaker.state is rg.CircuitState.CLOSED and time.monotonic() < deadline:
        time.sleep(0.01)
    out.put(breaker.state.value)  # type: ignore[attr-defined]


def test_a_forked_worker_gets_its_own_syncer(redis_url: str, namespace: str) -> None:
    """gunicorn --preload: the breaker is made before the fork, the worker must still sync."""
    import resetguard
    from resetguard.fleet import RedisBackend

    fork = multiprocessing.get_context("fork")
    parent = RedisBackend.from_url(redis_url, namespace=namespace, sync_interval=0.1)
    tripper = RedisBackend.from_url(redis_url, namespace=namespace, sync_interval=0.1)
    try:
        options = {"failure_threshold": 1, "open_duration": 30.0}
        preloaded = resetguard.CircuitBreaker("svc", backend=parent, **options)  # type: ignore[arg-type]
        other = resetguard.CircuitBreaker("svc", backend=tripper, **options)  # type: ignore[arg-type]
        # The child's copy of the breaker changes only if a syncer runs in the child.
        out = fork.Queue()
        child = fork.Process(target=_forked_child, args=(preloaded, out), daemon=True)
        child.start()
        try:
            with contextlib.suppress(ConnectionResetError):
                other.call(_reset)
            assert out.get(timeout=15) == "open"
        finally:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)
    finally:
        parent.close()
        tripper.close()


def _reset() -> None:
    raise ConnectionResetError(104, "Connection reset by peer")
