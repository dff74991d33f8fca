"""Concurrency: threads and asyncio tasks hammer one breaker that keeps tripping and
recovering; the invariants must hold throughout.

* never more probes in flight than ``half_open_probes`` (checked by the callers themselves,
  from the tickets the breaker handed out, not from the breaker's own counters);
* every attempt is either rejected or completed, and the breaker's totals equal the
  callers' own counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time

from resetguard import CircuitOpen
from resetguard._breaker import CircuitBreaker, CircuitState

PROBES = 2
THREADS = 4
OPS_PER_THREAD = 3_000
TASKS = 50
OPS_PER_TASK = 40


class Tally:
    """The callers' own bookkeeping, under the test's lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.probes_in_flight = 0
        self.max_probes_in_flight = 0
        self.attempts = self.rejected = self.successes = self.failures = self.ignored = 0

    def admitted(self, ticket: int) -> None:
        with self.lock:
            self.attempts += 1
            if ticket & 1:
                self.probes_in_flight += 1
                self.max_probes_in_flight = max(self.max_probes_in_flight, self.probes_in_flight)

    def done(self, ticket: int, outcome: str) -> None:
        with self.lock:
            if ticket & 1:
                self.probes_in_flight -= 1
            setattr(self, outcome, getattr(self, outcome) + 1)

    def refused(self) -> None:
        with self.lock:
            self.attempts += 1
            self.rejected += 1


OUTCOMES = {
    "successes": None,
    "failures": ConnectionResetError(104, "Connection reset by peer"),
    "ignored": KeyError("not a connection fault"),
}


def pick(rng: random.Random) -> str:
    # Mostly failures, so the breaker trips, half-opens and closes many times.
    return rng.choices(list(OUTCOMES), weights=[5, 4, 1])[0]


def test_threads_and_tasks_keep_the_invariants() -> None:
    breaker = CircuitBreaker(
        "stress",
        failure_threshold=3,
        failure_rate=0.5,
        window=20,
        minimum_calls=10,
        half_open_probes=PROBES,
        success_threshold=2,
        open_duration=0.002,
        open_duration_max=0.004,
        jitter=0.5,
    )
    tally = Tally()
    moves: list[str] = []
    breaker.add_listener(lambda event: moves.append(event.new))
    deadline = time.monotonic() + 20  # bounds the whole test even on a loaded machine

    def thread_worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(OPS_PER_THREAD):
            if time.monotonic() > deadline:
                return
            try:
                ticket = breaker._acquire()
            except CircuitOpen:
                tally.refused()
                continue
            tally.admitted(ticket)
            outcome = pick(rng)
            if rng.random() < 0.05:
                time.sleep(0.0005)  # hold a probe slot while others try to get one
            # Tally before releasing (and after acquiring): the tally can only under-count
            # the probes really in flight, so a tally above the limit is a real violation.
            tally.done(ticket, outcome)
            breaker._release(ticket, OUTCOMES[outcome], 0.0)

    async def task_worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(OPS_PER_TASK):
            if time.monotonic() > deadline:
                return
            try:
                ticket = breaker._acquire()
            except CircuitOpen:
                tally.refused()
                await asyncio.sleep(0.0005)
                continue
            tally.admitted(ticket)
            outcome = pick(rng)
            await asyncio.sleep(rng.choice([0, 0, 0.0005]))
            # Tally before releasing (and after acquiring): the tally can only under-count
            # the probes really in flight, so a tally above the limit is a real violation.
            tally.done(ticket, outcome)
            breaker._release(ticket, OUTCOMES[outcome], 0.0)

    async def all_tasks() -> None:
        await asyncio.gather(*(task_worker(1000 + i) for i in range(TASKS)))

    threads = [threading.Thread(target=thread_worker, args=(i,)) for i in range(THREADS)]
    loop_thread = threading.Thread(target=asyncio.run, args=(all_tasks(),))
    for thread in (*threads, loop_thread):
        thread.start()
    for thread in (*threads, loop_thread):
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in (*threads, loop_thread))

    stats = breaker.statistics()
    assert tally.max_probes_in_flight <= PROBES
    assert tally.probes_in_flight == 0
    assert tally.attempts == stats.calls + stats.rejected
    assert (stats.successes, stats.failures, stats.ignored, stats.rejected) == (
        tally.successes,
        tally.failures,
        tally.ignored,
        tally.rejected,
    )
    assert stats.half_open_in_flight == 0
    # It really cycled: tripped, probed and closed again, many times.
    assert stats.trips >= 10
    assert moves.count("closed") >= 3
    assert moves.count("half_open") >= stats.trips - 1
    assert tally.max_probes_in_flight >= 1
    # Every move is a legal edge of the state machine.
    legal = {
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("half_open", "closed"),
    }
    assert all(edge in legal for edge in zip(["closed", *moves], moves, strict=False))


def test_decorated_sync_and_async_calls_add_up_under_contention() -> None:
    breaker = CircuitBreaker("counts", failure_threshold=10**6)  # never trips: pure counting
    counted = {"ok": 0, "reset": 0}
    lock = threading.Lock()

    @breaker
    def sync_call(fail: bool) -> None:
        with lock:
            counted["reset" if fail else "ok"] += 1
        if fail:
            raise ConnectionResetError(104, "Connection reset by peer")

    @breaker
    async def async_call(fail: bool) -> None:
        await asyncio.sleep(0)
        with lock:
            counted["reset" if fail else "ok"] += 1
        if fail:
            raise ConnectionResetError(104, "Connection reset by peer")

    def thread_worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(5_000):
            with contextlib.suppress(ConnectionResetError):
                sync_call(rng.random() < 0.1)

    async def tasks() -> None:
        async def one(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(50):
                with contextlib.suppress(ConnectionResetError):
                    await async_call(rng.random() < 0.1)

        await asyncio.gather(*(one(i) for i in range(40)))

    threads = [threading.Thread(target=thread_worker, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=asyncio.run, args=(tasks(),)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    stats = breaker.statistics()
    assert stats.state is CircuitState.CLOSED
    assert stats.calls == 3 * 5_000 + 40 * 50
    assert (stats.successes, stats.failures) == (counted["ok"], counted["reset"])
