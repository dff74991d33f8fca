"""A hypothesis state machine drives a CircuitBreaker with a fake clock and compares it,
step by step, with a plain reference model written from the documented rules.

The model keeps its window as a list of outcomes (count-based: the last ``window``;
time-based: those whose bucket is still inside the window), where the breaker uses a ring
buffer and bucket counters; and it tracks tickets as (generation, probe) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

import resetguard
from resetguard._breaker import CircuitBreaker

RESET = ConnectionResetError(104, "Connection reset by peer")
IGNORED = KeyError("not a connection fault")
JITTER, RANDOM = 0.5, 0.25  # open periods are shortened by 12.5 %: exact in binary


@dataclass(frozen=True)
class Config:
    failure_threshold: int | None
    failure_rate: float | None
    slow_call_rate: float | None
    slow_call_duration: float | None
    window: int
    window_duration: float | None
    window_buckets: int
    minimum_calls: int
    probes: int
    success_threshold: int
    open_duration: float
    multiplier: int


@dataclass
class Ticket:
    sut: int
    generation: int
    probe: bool


class Model:
    def __init__(self, config: Config, now: float) -> None:
        self.c = config
        self.now = now
        self.state = "closed"
        self.isolated = False
        self.generation = 0
        self.open_until = 0.0
        self.streak = 0
        self.consecutive = 0
        self.outcomes: list[tuple[int, bool, bool]] = []  # (bucket epoch or call no, failed, slow)
        self.calls_seen = 0
        self.probes = 0
        self.half_successes = 0
        self.successes = self.failures = self.ignored = self.slow = self.rejected = 0
        self.trips = 0
        self.moves: list[tuple[str, str]] = []

    # -- window
    def width(self) -> float:
        assert self.c.window_duration is not None
        return self.c.window_duration / self.c.window_buckets

    def window(self) -> list[tuple[int, bool, bool]]:
        if self.c.window_duration is None:
            return self.outcomes[-self.c.window :]
        current = int(self.now // self.width())
        oldest = current - self.c.window_buckets + 1
        return [o for o in self.outcomes if o[0] >= oldest]

    @property
    def windowed(self) -> bool:
        return self.c.failure_rate is not None or self.c.slow_call_rate is not None

    # -- moves
    def move(self, new: str) -> None:
        old = self.state
        if new != "closed" or old != "closed":
            self.generation += 1
            self.half_successes = 0
        self.state = new
        if old != new:
            self.moves.append((old, new))
            if new == "closed":
                self.clear()

    def clear(self) -> None:
        self.consecutive = 0
        self.half_successes = 0
        self.outcomes = []

    def trip(self) -> None:
        self.trips += 1
        self.streak += 1
        base = self.c.open_duration
        period = min(base * self.c.multiplier ** (self.streak - 1), base * 4)
        self.open_until = self.now + period * (1 - JITTER * RANDOM)
        self.move("open")

    def due_half_open(self) -> None:
        if self.state == "open" and not self.isolated and self.now >= self.open_until:
            self.move("half_open")

    # -- engine interface
    def acquire(self) -> tuple[bool, float | None, bool]:
        """(admitted, retry_after if rejected, probe)."""
        if self.state == "open":
            if self.isolated:
                self.rejected += 1
                return False, None, False
            if self.now < self.open_until:
                self.rejected += 1
                return False, self.open_until - self.now, False
            self.move("half_open")
        if self.state == "half_open":
            if self.probes >= self.c.probes:
                self.rejected += 1
                return False, None, False
            self.probes += 1
            return True, None, True
        return True, None, False

    def release(self, ticket: Ticket, outcome: str, duration: float) -> None:
        if outcome == "ignored":
            self.ignored += 1
            if ticket.probe:
                self.probes -= 1
            return
        failed = outcome == "failure"
        limit = self.c.slow_call_duration
        slow = limit is not None and duration >= limit
        if failed:
            self.failures += 1
        else:
            self.successes += 1
        if slow:
            self.slow += 1
        if ticket.probe:
            self.probes -= 1
        if ticket.generation != self.generation:
            return
        if self.state == "closed":
            self.consecutive = self.consecutive + 1 if failed else 0
            if self.windowed:
                if self.c.window_duration is None:
                    key = self.calls_seen
                    self.calls_seen += 1
                else:
                    key = int(self.now // self.width())
                self.outcomes.append((key, failed, slow))
            threshold = self.c.failure_threshold
            streak_trips = failed and threshold is not None and self.consecutive >= threshold
            if streak_trips or (self.windowed and self.rates_exceeded()):
                self.trip()
        elif self.state == "half_open":
            if failed or slow:
                self.trip()
            else:
                self.half_successes += 1
                if self.half_successes >= self.c.success_threshold:
                    self.streak = 0
                    self.move("closed")

    def rates_exceeded(self) -> bool:
        window = self.window()
        n = len(window)
        if n < self.c.minimum_calls:
            return False
        fail_rate, slow_rate = self.c.failure_rate, self.c.slow_call_rate
        if fail_rate is not None and sum(o[1] for o in window) >= fail_rate * n:
            return True
        return slow_rate is not None and sum(o[2] for o in window) >= slow_rate * n


@st.composite
def configs(draw: st.DrawFn) -> Config:
    window = draw(st.integers(1, 6))
    failure_rate = draw(st.sampled_from([None, 0.5, 1.0]))
    slow_rate = draw(st.sampled_from([None, 0.5, 1.0]))
    threshold = draw(st.sampled_from([None, 1, 2, 3]))
    if threshold is None and failure_rate is None and slow_rate is None:
        threshold = 2
    return Config(
        failure_threshold=threshold,
        failure_rate=failure_rate,
        slow_call_rate=slow_rate,
        slow_call_duration=5.0 if slow_rate is not None else None,
        window=window,
        window_duration=draw(st.sampled_from([None, 4.0])),
        window_buckets=draw(st.sampled_from([1, 2, 4])),
        minimum_calls=draw(st.integers(1, window)),
        probes=draw(st.integers(1, 3)),
        success_threshold=draw(st.integers(1, 3)),
        open_duration=draw(st.sampled_from([1.0, 2.0, 5.0])),
        multiplier=draw(st.sampled_from([1, 2])),
    )


class BreakerMachine(RuleBasedStateMachine):
    tickets = Bundle("tickets")

    def __init__(self) -> None:
        super().__init__()
        self.now = 100.0
        self.events: list[resetguard.BreakerStateChanged] = []

    @initialize(config=configs())
    def build(self, config: Config) -> None:
        self.model = Model(config, self.now)
        self.breaker = CircuitBreaker(
            "machine",
            failure_threshold=config.failure_threshold,
            failure_rate=config.failure_rate,
            slow_call_rate=config.slow_call_rate,
            slow_call_duration=config.slow_call_duration,
            window=config.window,
            window_duration=config.window_duration,
            window_buckets=config.window_buckets,
            minimum_calls=config.minimum_calls,
            half_open_probes=config.probes,
            success_threshold=config.success_threshold,
            open_duration=config.open_duration,
            open_duration_multiplier=config.multiplier,
            open_duration_max=4 * config.open_duration,
            jitter=JITTER,
            clock=lambda: self.now,
            random=lambda: RANDOM,
        )
        self.breaker.add_listener(self.events.append)

    @rule(target=tickets)
    def acquire(self) -> object:
        admitted, retry_after, probe = self.model.acquire()
        rejection: resetguard.CircuitOpen | None = None
        try:
            sut = self.breaker._acquire()
        except resetguard.CircuitOpen as exc:
            rejection = exc
        if rejection is not None:
            assert not admitted, "the breaker rejected a call the model admits"
            if retry_after is None:
                assert rejection.retry_after is None
            else:
                assert rejection.retry_after == pytest.approx(retry_after)
            return multiple()  # nothing to add to the bundle
        assert admitted, "the breaker admitted a call the model rejects"
        assert bool(sut & 1) == probe
        return Ticket(sut, self.model.generation, probe)

    @rule(
        ticket=consumes(tickets),
        outcome=st.sampled_from(["success", "failure", "ignored"]),
        duration=st.sampled_from([0.0, 10.0]),
    )
    def release(self, ticket: object, outcome: str, duration: float) -> None:
        if not isinstance(ticket, Ticket):
            return
        error = {"success": None, "failure": RESET, "ignored": IGNORED}[outcome]
        self.model.release(ticket, outcome, duration)
        self.breaker._release(ticket.sut, error, duration)

    @rule(
        outcome=st.sampled_from(["success", "failure", "ignored"]),
        duration=st.sampled_from([0.0, 0.0, 10.0]),
    )
    def call(self, outcome: str, duration: float) -> None:
        """A whole call at once: acquire, then release if admitted."""
        ticket = self.acquire()
        if isinstance(ticket, Ticket):
            self.release(ticket, outcome, duration)

    @rule(dt=st.sampled_from([0.5, 1.0, 2.0, 3.0, 7.5, 100.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.model.now = self.now

    # Manual moves are drawn rarely, or an isolated breaker would dominate every run.
    @rule(roll=st.integers(0, 9))
    def isolate(self, roll: int) -> None:
        if roll:
            return
        self.model.isolated = True
        self.model.move("open")
        self.breaker.isolate()

    @rule(roll=st.integers(0, 4))
    def reset(self, roll: int) -> None:
        if roll:
            return
        self.model.isolated = False
        self.model.streak = 0
        self.model.move("closed")
        self.model.clear()
        self.breaker.reset()

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "model"):
            return
        m = self.model
        m.due_half_open()  # statistics() applies a due move the same way
        s = self.breaker.statistics()
        assert s.state.value == m.state
        assert (s.successes, s.failures, s.ignored, s.slow_calls, s.rejected, s.trips) == (
            m.successes,
            m.failures,
            m.ignored,
            m.slow,
            m.rejected,
            m.trips,
        )
        assert s.calls == s.successes + s.failures + s.ignored
        assert s.half_open_in_flight == m.probes <= m.c.probes
        assert s.half_open_successes == m.half_successes
        if m.state == "closed":
            assert s.consecutive_failures == m.consecutive
            if m.windowed:
                window = m.window()
                assert s.window_calls == len(window)
                assert s.window_failures == sum(o[1] for o in window)
                assert s.window_slow_calls == sum(o[2] for o in window)
        if m.state == "open" and not m.isolated:
            assert s.retry_after == pytest.approx(m.open_until - m.now)
        assert [(e.old, e.new) for e in self.events] == m.moves


BreakerMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# About 5 s on the 2-core machine.
test_breaker_state_machine = pytest.mark.slow(BreakerMachine.TestCase)
