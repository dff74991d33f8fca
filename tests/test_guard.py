"""The breaker bookkeeping of the engine (``Run.admit`` / ``Run.release``), on real breakers."""

from __future__ import annotations

import asyncio

import pytest

import resetguard
from resetguard import CircuitBreaker, CircuitOpen, CircuitState, Retry
from resetguard._engine import Run

from ._faketime import FakeTime


def acquire(breaker: CircuitBreaker, run: Run | None) -> Run:
    """A ticket for the next attempt, taken by ``run`` (a fresh call's run when None)."""
    if run is None:
        run = Run(Retry(breaker=breaker, clock=breaker._clock))
    assert run.admit() is None  # no patience: admitted, or the refusal is raised
    return run


def release(run: Run, error: BaseException | None) -> None:
    """Hand ``run``'s ticket back; the attempt's duration runs from ``run.t0``."""
    run.release(error)


def _breaker(fake: FakeTime, **options: object) -> CircuitBreaker:
    options = {"failure_threshold": 1, "jitter": 0, **options}
    return CircuitBreaker("guard", clock=fake.clock, **options)  # type: ignore[arg-type]


def _half_open(fake: FakeTime) -> CircuitBreaker:
    breaker = _breaker(fake, open_duration=1.0)
    ticket = acquire(breaker, None)
    release(ticket, ConnectionResetError(104, "reset"))
    assert breaker.state is CircuitState.OPEN
    fake.now += 2.0
    assert breaker.state is CircuitState.HALF_OPEN
    return breaker


def test_a_refused_first_attempt_raises_the_breakers_rejection() -> None:
    fake = FakeTime()
    breaker = _breaker(fake)
    breaker.isolate()
    with pytest.raises(CircuitOpen, match="isolated"):
        acquire(breaker, None)
    assert breaker.statistics().rejected == 1


def test_a_refused_retry_gives_up_with_the_last_attempts_exception() -> None:
    fake = FakeTime()
    breaker = _breaker(fake)
    gave_up: list[resetguard.GaveUp] = []
    run = Run(Retry(breaker=breaker, on_giveup=gave_up.append, **fake.options()), fake.now)  # type: ignore[arg-type]
    error = ConnectionResetError(104, "Connection reset by peer")
    assert run.failed(error) is not None  # a retry is scheduled…
    breaker.isolate()  # …and the breaker refuses it
    with pytest.raises(ConnectionResetError) as info:
        acquire(breaker, run)
    assert info.value is error
    assert info.value.__context__ is None  # raised outside the CircuitOpen handler
    assert [e.reason for e in gave_up] == ["breaker"]
    assert len(resetguard.history(error)) == 1
    assert any("circuit breaker" in note for note in error.__notes__)


@pytest.mark.parametrize(("took", "slow"), [(0.5, 0), (2.0, 1)])
def test_release_times_the_attempt_with_the_breakers_clock(took: float, slow: int) -> None:
    fake = FakeTime()
    breaker = _breaker(fake, slow_call_duration=1.0, slow_call_rate=1.0, failure_threshold=None)
    ticket = acquire(breaker, None)
    assert ticket.ticket[1] == breaker._clock()  # (number, when the attempt began)
    fake.now += took
    release(ticket, None)
    stats = breaker.statistics()
    assert (stats.successes, stats.slow_calls) == (1, slow)


@pytest.mark.parametrize(
    "ended_by", [asyncio.CancelledError(), KeyboardInterrupt()], ids=["cancelled", "interrupt"]
)
def test_a_probe_ended_by_a_base_exception_frees_its_slot(ended_by: BaseException) -> None:
    fake = FakeTime()
    breaker = _half_open(fake)
    ticket = acquire(breaker, None)
    assert breaker.statistics().half_open_in_flight == 1
    with pytest.raises(CircuitOpen, match="probe slot"):
        acquire(breaker, None)
    release(ticket, ended_by)
    stats = breaker.statistics()
    assert (stats.half_open_in_flight, stats.ignored, stats.failures) == (0, 1, 1)
    assert breaker.state is CircuitState.HALF_OPEN  # a cancellation says nothing about the peer
    release(acquire(breaker, None), None)
    assert breaker.state is CircuitState.CLOSED


def test_retrying_block_interrupted_during_a_probe_frees_its_slot() -> None:
    fake = FakeTime()
    breaker = _half_open(fake)
    policy = Retry(breaker=breaker, **fake.options())  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):  # noqa: PT012 - the block is the attempt
        for attempt in resetguard.retrying(policy):
            with attempt:
                raise KeyboardInterrupt
    assert breaker.statistics().half_open_in_flight == 0
    for attempt in resetguard.retrying(policy):
        with attempt:
            pass
    assert breaker.state is CircuitState.CLOSED


def test_retrying_block_refused_retry_surfaces_the_users_exception() -> None:
    fake = FakeTime()
    breaker = _breaker(fake)
    policy = Retry(breaker=breaker, attempts=3, **fake.options())  # type: ignore[arg-type]
    numbers: list[int] = []
    with pytest.raises(BrokenPipeError) as info:  # noqa: PT012 - the block is the attempt
        for attempt in resetguard.retrying(policy):
            with attempt:
                numbers.append(attempt.number)
                raise BrokenPipeError(32, "Broken pipe")
    assert numbers == [1]  # the first failure opened the breaker: the retry was refused
    assert len(resetguard.history(info.value)) == 1
    assert breaker.statistics().rejected == 1
