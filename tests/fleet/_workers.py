"""Code run in the fleet tests' worker processes (started with the spawn method)."""

from __future__ import annotations

import collections
import contextlib
import time
from typing import Any

import resetguard
from resetguard.fleet import RedisBackend

from ._servers import request


def breaker_worker(
    url: str,
    namespace: str,
    role: int,
    refused_port: int,
    probe_port: int,
    sync_interval: float,
    open_duration: float,
    go: Any,
    out: Any,
) -> None:
    """Role 0 trips the shared breaker; the others watch it open. Then every role calls
    the probe target until it has 3 successes."""
    backend = RedisBackend.from_url(
        url, namespace=namespace, sync_interval=sync_interval, timeout=0.5
    )
    breaker = resetguard.CircuitBreaker(
        "dependency", failure_threshold=3, open_duration=open_duration, jitter=0, backend=backend
    )
    moves: list[tuple[str, str]] = []
    breaker.add_listener(lambda event: moves.append((event.new, event.decided_by)))
    out.put(("ready", role))
    go.wait(60)
    result: dict[str, Any] = {"role": role, "moves": moves}
    if role == 0:
        for _ in range(3):
            with contextlib.suppress(ConnectionRefusedError):
                breaker.call(request, refused_port)
        result["tripped_at"] = time.time()
        result["state_after_trip"] = breaker.state.value
    else:
        deadline = time.monotonic() + 10
        while breaker.state is resetguard.CircuitState.CLOSED and time.monotonic() < deadline:
            time.sleep(0.002)
        result["open_at"] = time.time()
        result["state_seen"] = breaker.state.value
    successes = rejected = 0
    first_success = None
    deadline = time.monotonic() + open_duration + 10
    while successes < 3 and time.monotonic() < deadline:
        try:
            breaker.call(request, probe_port)
        except resetguard.CircuitOpen:
            rejected += 1
            time.sleep(0.003)
            continue
        successes += 1
        if first_success is None:
            first_success = time.time()
    stats = breaker.statistics()
    result.update(
        successes=successes,
        rejected=rejected,
        first_success=first_success,
        final_state=stats.state.value,
        backend=stats.backend,
    )
    backend.close()
    out.put(("done", result))


def budget_worker(
    url: str | None,
    namespace: str,
    port: int,
    calls: int,
    ratio: float,
    min_per_second: float,
    ttl: float,
    go: Any,
    out: Any,
) -> None:
    """``calls`` logical calls, 4 attempts each, to a server that resets every connection,
    paid from the shared budget (``url=None``: a budget of this process only)."""
    backend = None
    if url is not None:
        backend = RedisBackend.from_url(url, namespace=namespace, sync_interval=0.2, timeout=0.5)
    budget = resetguard.RetryBudget(
        "amplification", ratio=ratio, min_per_second=min_per_second, ttl=ttl, backend=backend
    )

    @resetguard.retry(attempts=4, backoff=resetguard.Backoff.none(), budget=budget)
    def call() -> bytes:
        return request(port)

    out.put(("ready", None))
    go.wait(60)
    errors: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    for _ in range(calls):
        try:
            call()
        except ConnectionResetError:
            pass
        except Exception as exc:  # reported: any other error fails the test
            errors[type(exc).__name__] += 1
    stats = budget.statistics()
    out.put(
        (
            "done",
            {
                "calls": calls,
                "withdrawals": stats.withdrawals,
                "refusals": stats.refusals,
                "backend": stats.backend,
                "reachable": backend.reachable if backend is not None else True,
                "errors": dict(errors),
                "seconds": time.monotonic() - started,
            },
        )
    )
    if backend is not None:
        backend.close()


def run_fleet(ctx: Any, target: Any, args_for: Any, n: int, timeout: float = 60.0) -> list[Any]:
    """Start ``n`` processes of ``target(*args_for(i), go, out)``, release them together,
    collect their results and stop them (by pid, bounded in time)."""
    go = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(*args_for(i), go, out), daemon=True) for i in range(n)
    ]
    for proc in procs:
        proc.start()
    try:
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < n:
            kind, _ = out.get(timeout=max(0.1, deadline - time.monotonic()))
            ready += kind == "ready"
        go.set()
        results: list[Any] = []
        while len(results) < n:
            kind, value = out.get(timeout=max(0.1, deadline - time.monotonic()))
            if kind == "done":
                results.append(value)
        return results
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
