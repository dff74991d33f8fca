from __future__ import annotations

import asyncio
import socket

import pytest

import resetguard
from resetguard import Backoff, CircuitBreaker, CircuitOpen, Pipeline, RetryBudget

from ._faketime import FakeTime


def reset() -> ConnectionResetError:
    return ConnectionResetError(104, "Connection reset by peer")


def always_reset(counter: list[int]) -> None:
    counter.append(1)
    raise reset()


def test_breaker_opening_mid_call_surfaces_the_users_error() -> None:
    t = FakeTime()
    breaker = CircuitBreaker("dep", failure_threshold=2, clock=t.clock, jitter=0)
    gave_up: list[resetguard.GaveUp] = []
    pipe = (
        Pipeline()
        .with_breaker(breaker)
        .with_retry(attempts=5, on_giveup=gave_up.append, **t.options())
    )
    calls: list[int] = []
    with pytest.raises(ConnectionResetError) as info:
        pipe.call(always_reset, calls)
    assert len(calls) == 2  # the breaker opened after 2 failures: attempts 3-5 never ran
    assert gave_up[0].reason == "breaker"
    assert "circuit breaker open" in info.value.__notes__[0]
    assert breaker.state is resetguard.CircuitState.OPEN
    # the next logical call is refused before calling anything
    with pytest.raises(CircuitOpen) as refused:
        pipe.call(always_reset, calls)
    assert len(calls) == 2
    assert refused.value.retry_after is not None
    assert refused.value.retry_after > 0


def test_budget_refusal_surfaces_the_original_error() -> None:
    t = FakeTime()
    budget = RetryBudget("b", ratio=0.1, min_per_second=0.1, ttl=10, clock=t.clock)  # 1 token
    pipe = Pipeline().with_budget(budget).with_retry(attempts=3, **t.options())
    calls: list[int] = []
    with pytest.raises(ConnectionResetError) as info:
        pipe.call(always_reset, calls)
    first = len(calls)
    with pytest.raises(ConnectionResetError):
        pipe.call(always_reset, calls)
    second = len(calls) - first
    assert first == 2  # the 1-token reserve allowed one retry, then the budget refused
    assert second == 1  # and the next call got no retry at all
    assert "retry budget exhausted" in info.value.__notes__[0]
    assert budget.statistics().refusals == 2


def test_budget_can_raise_budget_exhausted() -> None:
    t = FakeTime()
    budget = RetryBudget(
        "b", ratio=0.1, min_per_second=0, ttl=10, clock=t.clock, raise_on_exhausted=True
    )
    pipe = Pipeline().with_budget(budget).with_retry(**t.options())
    with pytest.raises(resetguard.BudgetExhausted) as info:
        pipe.call(always_reset, [])
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert info.value.budget == "b"


def test_pipeline_is_immutable_and_describes_itself() -> None:
    base = Pipeline()
    with_deadline = base.with_deadline(5)
    assert base.policy.deadline == 30.0
    assert with_deadline.policy.deadline == 5
    breaker = CircuitBreaker("api")
    full = with_deadline.with_breaker(breaker).with_retry(resetguard.Retry(attempts=7))
    assert full.policy.breaker is breaker
    assert full.policy.deadline == 5  # kept across with_retry(policy)
    assert full.describe() == "deadline 5 s → breaker 'api' → retry (7 attempts)"
    with pytest.raises(AttributeError):
        full.policy = resetguard.Retry()  # type: ignore[misc]


def test_pipeline_as_decorator_sync_and_async() -> None:
    t = FakeTime()
    breaker = CircuitBreaker("api", clock=t.clock)
    pipe = Pipeline().with_breaker(breaker).with_retry(**t.options())
    state = {"n": 0}

    @pipe
    def sync_fn() -> str:
        state["n"] += 1
        if state["n"] == 1:
            raise reset()
        return "ok"

    @pipe
    async def async_fn() -> str:
        state["n"] += 1
        if state["n"] == 3:
            raise reset()
        return "aok"

    assert sync_fn() == "ok"
    assert asyncio.run(async_fn()) == "aok"
    assert state["n"] == 4
    stats = breaker.statistics()
    assert stats.failures == 2
    assert stats.successes == 2


def test_short_form_on_retry_decorator() -> None:
    t = FakeTime()
    breaker = CircuitBreaker("api", failure_threshold=1, clock=t.clock)
    budget = RetryBudget("api", clock=t.clock)
    calls: list[int] = []

    @resetguard.retry(breaker=breaker, budget=budget, **t.options())
    def call() -> None:
        always_reset(calls)

    with pytest.raises(ConnectionResetError):
        call()
    assert len(calls) == 1  # threshold 1: the breaker opened after the first failure
    with pytest.raises(CircuitOpen):
        call()


def test_async_pipeline_breaker_and_budget() -> None:
    t = FakeTime()
    breaker = CircuitBreaker("a", failure_threshold=3, clock=t.clock)
    budget = RetryBudget("a", clock=t.clock)
    pipe = (
        Pipeline().with_budget(budget).with_breaker(breaker).with_retry(attempts=5, **t.options())
    )
    calls: list[int] = []

    async def down() -> None:
        always_reset(calls)

    async def main() -> None:
        with pytest.raises(ConnectionResetError):
            await pipe.acall(down)
        with pytest.raises(CircuitOpen):
            await pipe.acall(down)

    asyncio.run(main())
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("build", "error", "text"),
    [
        (lambda: Pipeline().with_deadline(-1), ValueError, "deadline"),
        (lambda: Pipeline().with_budget(5), TypeError, "5"),  # type: ignore[arg-type]
        (lambda: Pipeline().with_breaker("x"), TypeError, "'x'"),  # type: ignore[arg-type]
        (lambda: Pipeline().with_retry(attempts=0), ValueError, "attempts"),
        (lambda: resetguard.retry(breaker=object()), TypeError, "breaker"),
    ],
)
def test_bad_pipeline_input(build: object, error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        build()  # type: ignore[operator]


def test_total_outage_fails_fast_with_a_breaker(unused_port: int) -> None:
    """A real refused port: after the breaker opens, calls stop touching the network."""
    breaker = CircuitBreaker("down", failure_threshold=3, open_duration=60)
    pipe = Pipeline().with_breaker(breaker).with_retry(attempts=3, backoff=Backoff.none())
    attempts: list[int] = []

    def connect() -> None:
        attempts.append(1)
        socket.create_connection(("127.0.0.1", unused_port), timeout=1).close()

    outcomes = []
    for _ in range(10):
        try:
            pipe.call(connect)
        except ConnectionRefusedError:
            outcomes.append("refused")
        except CircuitOpen:
            outcomes.append("open")
    assert len(attempts) == 3  # one logical call's 3 attempts opened the breaker
    assert outcomes == ["refused"] + ["open"] * 9


def test_cancelled_probe_gives_its_half_open_slot_back() -> None:
    t = FakeTime()
    breaker = CircuitBreaker("p", failure_threshold=1, open_duration=1.0, jitter=0, clock=t.clock)
    pipe = Pipeline().with_breaker(breaker).with_retry(attempts=1, **t.options())
    with pytest.raises(ConnectionResetError):
        pipe.call(always_reset, [])
    t.now += 2.0  # the open period is over: the next call is a half-open probe

    async def hangs() -> str:
        await asyncio.sleep(10)
        return "never"

    async def ok() -> str:
        return "ok"

    async def main() -> str:
        task = asyncio.create_task(pipe.acall(hangs))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await pipe.acall(ok)  # the cancelled probe's slot is free again

    assert asyncio.run(main()) == "ok"
    assert breaker.state is resetguard.CircuitState.CLOSED


def test_leaving_retrying_before_with_gives_the_probe_slot_back() -> None:
    t = FakeTime()
    breaker = CircuitBreaker("r", failure_threshold=1, open_duration=1.0, jitter=0, clock=t.clock)
    with pytest.raises(ConnectionResetError):
        breaker.call(always_reset, [])
    t.now += 2.0  # half-open: one probe slot
    loop = resetguard.retrying(breaker=breaker, **t.options())
    for _attempt in loop:
        break  # abandoned before `with attempt:` ran
    del loop, _attempt  # the generator is closed: its ticket must come back
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state is resetguard.CircuitState.CLOSED
