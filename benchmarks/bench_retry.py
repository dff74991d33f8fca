"""Per-call cost of retry decorators: resetguard vs tenacity, stamina, backoff, a hand loop.

Run: python benchmarks/bench_retry.py [--quick]

Scenarios (all in one process, one run, so ratios are comparable):
  * success path, sync and async: the decorated function returns at once;
  * one failure then success, zero sleep: ConnectionResetError once, then a value.
Reported: ns per call and overhead over the bare call (µs), best of several repeats.
Also reports memory blocks still allocated per call after many successful calls
(``sys.getallocatedblocks`` delta), i.e. garbage that outlives a call.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import backoff
import stamina
import tenacity

import resetguard
from _timing import best_ns as time_sync

logging.getLogger("backoff").disabled = True
logging.getLogger("stamina").disabled = True
stamina.instrumentation.set_on_retry_hooks([])  # no structlog line per retry: time the retry


def target() -> int:
    return 1


async def atarget() -> int:
    return 1


def hand_loop(fn: Callable[[], int]) -> Callable[[], int]:
    def wrapper() -> int:
        for i in range(3):
            try:
                return fn()
            except ConnectionError:
                if i == 2:
                    raise
        raise AssertionError

    return wrapper


def ahand_loop(fn: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[int]]:
    async def wrapper() -> int:
        for i in range(3):
            try:
                return await fn()
            except ConnectionError:
                if i == 2:
                    raise
        raise AssertionError

    return wrapper


def decorators(zero_wait: bool) -> dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]]:
    none = resetguard.Backoff.none()
    return {
        "hand-written loop": lambda f: (
            ahand_loop(f) if asyncio.iscoroutinefunction(f) else hand_loop(f)
        ),
        "resetguard": resetguard.retry(backoff=none) if zero_wait else resetguard.retry(),
        "backoff": backoff.on_exception(backoff.constant, ConnectionError, max_tries=3, interval=0),
        "stamina": stamina.retry(
            on=ConnectionError, attempts=3, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0
        ),
        "tenacity": tenacity.retry(
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_none(),
            retry=tenacity.retry_if_exception_type(ConnectionError),
            reraise=True,
        ),
    }


def time_async(fn: Callable[[], Awaitable[Any]], n: int, repeats: int) -> float:
    async def loop() -> float:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                await fn()
            best = min(best, (time.perf_counter() - t0) / n)
        return best

    return asyncio.run(loop()) * 1e9


def flaky_factory() -> Callable[[], int]:
    state = [0]

    def flaky() -> int:
        state[0] += 1
        if state[0] % 2:
            raise ConnectionResetError(104, "Connection reset by peer")
        return 1

    return flaky


def blocks_per_call(fn: Callable[[], Any], n: int = 20000) -> float:
    for _ in range(1000):
        fn()
    gc.collect()
    before = sys.getallocatedblocks()
    for _ in range(n):
        fn()
    after = sys.getallocatedblocks()
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    n, repeats = (20_000, 3) if args.quick else (200_000, 5)
    nf = n // 10
    rows: list[tuple[str, float, float, float, float, float]] = []
    bare_sync = time_sync(target, n, repeats)
    bare_async = time_async(atarget, n, repeats)
    print(f"python {sys.version.split()[0]}; bare call {bare_sync:.0f} ns sync, ", end="")
    print(f"{bare_async:.0f} ns async")
    print(f"{'library':<20}{'sync +µs':>10}{'async +µs':>11}{'1 fail +µs':>12}{'blocks/call':>13}")
    for name, deco in decorators(zero_wait=True).items():
        sync_ns = time_sync(deco(target), n, repeats) - bare_sync
        async_ns = time_async(deco(atarget), n, repeats) - bare_async
        # one failure then success: each logical call is two attempts
        flaky_wrapped = deco(flaky_factory())
        fail_ns = time_sync(flaky_wrapped, nf, repeats) - 2 * bare_sync
        garbage = blocks_per_call(deco(target))
        rows.append((name, sync_ns / 1e3, async_ns / 1e3, fail_ns / 1e3, garbage, 0.0))
        print(
            f"{name:<20}{sync_ns / 1e3:>10.3f}{async_ns / 1e3:>11.3f}"
            f"{fail_ns / 1e3:>12.3f}{garbage:>13.3f}"
        )
    print()
    print(
        "| library | success sync (+µs/call) | success async (+µs/call) "
        "| 1 failure + success, zero sleep (+µs/call) | blocks kept per call |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, s, a, f, g, _ in rows:
        print(f"| {name} | {s:.3f} | {a:.3f} | {f:.3f} | {g:.3f} |")
    med = statistics.median(r[1] for r in rows)
    print(f"\n(median sync overhead across libraries: {med:.3f} µs)")


if __name__ == "__main__":
    main()
