"""RetryBudget: floor, ratio, expiry, refusal events, sharing, threads, bad input.

Time is a fake clock; the engine tests retry real refused loopback connections.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resetguard
from resetguard._budget import RetryBudget


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def grants(budget: RetryBudget, tries: int) -> int:
    return sum(budget.withdraw() for _ in range(tries))


def test_the_floor_allows_min_per_second_times_ttl_retries_without_traffic() -> None:
    budget = RetryBudget("floor", min_per_second=3, ttl=5, clock=Clock())
    assert grants(budget, 100) == 15
    stats = budget.statistics()
    assert (stats.withdrawals, stats.refusals, stats.balance) == (15, 85, 0.0)


def test_each_call_pays_for_ratio_of_a_retry() -> None:
    budget = RetryBudget("ratio", ratio=0.25, min_per_second=0, clock=Clock())
    for _ in range(40):
        budget.deposit()
    assert budget.balance == 10.0
    assert grants(budget, 50) == 10
    assert budget.statistics().window_deposits == 40


def test_defaults_are_finagles() -> None:
    budget = RetryBudget(clock=Clock())
    assert (budget.ratio, budget.min_per_second, budget.ttl) == (0.2, 10.0, 10.0)
    assert budget.balance == 100.0
    assert budget.raise_on_exhausted is False


def test_withdrawals_and_deposits_expire_after_ttl() -> None:
    clock = Clock()
    budget = RetryBudget("ttl", ratio=0.5, min_per_second=1, ttl=10, buckets=10, clock=clock)
    for _ in range(10):
        budget.deposit()  # +5 tokens at t=0, on top of the floor of 10
    assert grants(budget, 100) == 15
    clock.now = 9.99  # still inside the window
    assert budget.withdraw() is False
    assert budget.retry_after == pytest.approx(0.01)
    clock.now = 10.0  # the t=0 bucket expired: its deposits and its withdrawals
    stats = budget.statistics()
    assert (stats.window_deposits, stats.window_withdrawals, stats.balance) == (0, 0, 10.0)
    assert stats.retry_after is None
    assert stats.deposits == 10  # totals are kept


def test_sliding_window_expires_bucket_by_bucket() -> None:
    clock = Clock()
    budget = RetryBudget("slide", ratio=1.0, min_per_second=0, ttl=4, buckets=4, clock=clock)
    for second in range(4):
        clock.now = second + 0.5
        budget.deposit()
        budget.deposit()
    assert budget.balance == 8
    clock.now = 4.5  # the bucket of second 0 is gone
    assert budget.balance == 6
    clock.now = 100.0  # long idle: everything gone, at most one sweep of the buckets
    assert budget.balance == 0
    budget.deposit()
    assert budget.balance == 1


def test_retry_after_is_when_the_oldest_withdrawals_expire() -> None:
    clock = Clock()
    budget = RetryBudget("ra", min_per_second=0.2, ttl=10, clock=clock)  # 2 tokens
    budget.withdraw()  # t=0
    clock.now = 3.2
    budget.withdraw()
    assert budget.withdraw() is False
    assert budget.retry_after == pytest.approx(10 - 3.2)
    assert RetryBudget("idle", clock=clock).retry_after is None


def test_retry_after_is_infinite_when_only_traffic_can_refill() -> None:
    budget = RetryBudget("zero", min_per_second=0, clock=Clock())
    assert budget.withdraw() is False
    assert budget.retry_after == math.inf


def test_a_clock_that_steps_back_stays_in_the_current_bucket() -> None:
    clock = Clock(50.0)
    budget = RetryBudget("back", ratio=1.0, min_per_second=0, clock=clock)
    budget.deposit()
    clock.now = 20.0
    budget.deposit()
    assert budget.balance == 2


def test_refusals_are_counted_emitted_and_logged_once_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    budget = RetryBudget("obs", min_per_second=0.1, ttl=10, clock=clock)  # 1 token
    mine: list[resetguard.BudgetExhaustedEvent] = []
    everyone: list[resetguard.Event] = []
    budget.add_listener(mine.append)
    resetguard.add_hook(everyone.append)
    error = ConnectionResetError(104, "Connection reset by peer")
    try:
        with caplog.at_level(logging.INFO, logger="resetguard.budget"):
            assert budget.withdraw() is True
            assert budget.withdraw(error) is False
            assert budget.withdraw() is False
            clock.now = 10.0
            assert budget.withdraw() is True
    finally:
        resetguard.remove_hook(everyone.append)
    assert [(e.name, e.balance) for e in mine] == [("obs", 0.0), ("obs", 0.0)]
    assert mine[0].exception is error
    assert [e for e in everyone if isinstance(e, resetguard.BudgetExhaustedEvent)] == mine
    assert budget.statistics().refusals == 2
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [lvl for lvl, _ in records] == ["WARNING", "INFO"]
    assert "retry budget 'obs' exhausted" in records[0][1]
    assert "2 refused" in records[1][1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        mine[0].balance = 3.0  # type: ignore[misc]


def test_a_raising_listener_does_not_change_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    budget = RetryBudget("l", min_per_second=0, clock=Clock())

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    budget.add_listener(broken)
    with caplog.at_level(logging.ERROR, logger="resetguard.budget"):
        assert budget.withdraw() is False
    assert "listener bug" in caplog.text
    budget.remove_listener(broken)
    with pytest.raises(ValueError, match="not registered"):
        budget.remove_listener(broken)


def test_statistics_is_a_frozen_snapshot() -> None:
    budget = RetryBudget("s", clock=Clock())
    before = budget.statistics()
    budget.deposit()
    assert (before.deposits, budget.statistics().deposits) == (0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.deposits = 9  # type: ignore[misc]


def test_concurrent_withdrawals_never_overdraw_and_deposits_add_up() -> None:
    budget = RetryBudget("threads", ratio=0.5, min_per_second=10, ttl=10, clock=Clock())
    granted = [0] * 4

    def worker(index: int) -> None:
        for _ in range(2_000):
            budget.deposit()
            if budget.withdraw():
                granted[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    stats = budget.statistics()
    assert stats.deposits == 8_000
    # 100 floor tokens + half a token per call: exactly the budget, never more.
    assert sum(granted) == stats.withdrawals == 100 + 4_000
    assert stats.refusals == 8_000 - sum(granted)


# --------------------------------------------------------------------------- with the engine


def test_one_budget_shared_by_two_retrying_functions_caps_their_retries(
    unused_port: int,
) -> None:
    budget = RetryBudget("shared", ratio=0.2, min_per_second=0.2, ttl=10, clock=Clock())
    attempts = {"a": 0, "b": 0}
    no_wait = resetguard.Backoff.none()

    def connect(who: str) -> None:
        attempts[who] += 1
        socket.create_connection(("127.0.0.1", unused_port), timeout=2).close()

    @resetguard.retry(attempts=3, backoff=no_wait, budget=budget)
    def a() -> None:
        connect("a")

    @resetguard.retry(attempts=3, backoff=no_wait, budget=budget)
    def b() -> None:
        connect("b")

    for fn in (a, b) * 10:
        with pytest.raises(ConnectionRefusedError):
            fn()
    stats = budget.statistics()
    total = attempts["a"] + attempts["b"]
    assert stats.deposits == 20
    # 2 floor tokens + 0.2 x 20 calls = 6 retries in all, whichever function asked.
    assert stats.withdrawals == 6
    assert total == 20 + 6
    assert stats.refusals >= 1


def test_raise_on_exhausted_raises_budget_exhausted_from_the_original_error(
    unused_port: int,
) -> None:
    budget = RetryBudget("strict", min_per_second=0, raise_on_exhausted=True, clock=Clock())

    @resetguard.retry(attempts=3, backoff=resetguard.Backoff.none(), budget=budget)
    def connect() -> None:
        socket.create_connection(("127.0.0.1", unused_port), timeout=2).close()

    with pytest.raises(resetguard.BudgetExhausted) as info:
        connect()
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert info.value.budget == "strict"
    assert budget.statistics().refusals == 1


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"ratio": 0}, ValueError, r"ratio must be in \(0, 1\], got 0"),
        ({"ratio": 1.2}, ValueError, "got 1.2"),
        ({"ratio": "0.2"}, TypeError, "ratio must be a number, got '0.2'"),
        ({"min_per_second": -1}, ValueError, "min_per_second must be a finite number >= 0, got -1"),
        ({"min_per_second": float("inf")}, ValueError, "got inf"),
        ({"ttl": 0}, ValueError, "ttl must be a finite number > 0, got 0"),
        ({"ttl": float("nan")}, ValueError, "nan"),
        ({"buckets": 0}, ValueError, "buckets must be >= 1, got 0"),
        ({"buckets": 2.0}, TypeError, "buckets must be an int, got 2.0"),
        ({"raise_on_exhausted": 1}, TypeError, "raise_on_exhausted must be a bool, got 1"),
        ({"clock": 0}, TypeError, "clock must be callable, got 0"),
    ],
)
def test_bad_input_names_the_value(options: dict[str, object], error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        RetryBudget("bad", **options)  # type: ignore[arg-type]


def test_bad_name_and_listener() -> None:
    with pytest.raises(TypeError, match="name must be a str, got None"):
        RetryBudget(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="listener must be callable, got 3"):
        RetryBudget().add_listener(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- against a model


@settings(max_examples=150, deadline=None)
@given(
    ratio=st.sampled_from([0.25, 0.5, 1.0]),
    floor=st.sampled_from([0.0, 0.25, 0.5]),
    buckets=st.sampled_from([1, 2, 4]),
    ops=st.lists(
        st.one_of(
            st.just("deposit"),
            st.just("withdraw"),
            st.sampled_from([0.5, 1.0, 1.5, 3.0, 9.0]),  # advance the clock
        ),
        max_size=80,
    ),
)
def test_balance_matches_a_plain_model(
    ratio: float, floor: float, buckets: int, ops: list[object]
) -> None:
    """The model keeps every event with its time and forgets those whose bucket left."""
    ttl = 4.0
    width = ttl / buckets
    clock = Clock(0.0)
    budget = RetryBudget(
        "model", ratio=ratio, min_per_second=floor, ttl=ttl, buckets=buckets, clock=clock
    )
    events: list[tuple[int, str]] = []  # (bucket epoch, kind)

    def model_balance() -> float:
        current = int(clock.now // width)
        live = [kind for epoch, kind in events if epoch > current - buckets]
        return floor * ttl + ratio * live.count("deposit") - live.count("withdraw")

    granted = refused = 0
    for op in ops:
        if op == "deposit":
            budget.deposit()
            events.append((int(clock.now // width), "deposit"))
        elif op == "withdraw":
            allowed = model_balance() >= 1 - 1e-9
            assert budget.withdraw() is allowed
            if allowed:
                granted += 1
                events.append((int(clock.now // width), "withdraw"))
            else:
                refused += 1
        else:
            assert isinstance(op, float)
            clock.now += op
        assert budget.balance == pytest.approx(model_balance())
    stats = budget.statistics()
    assert (stats.withdrawals, stats.refusals) == (granted, refused)
    assert stats.deposits == ops.count("deposit")
