"""The one engine: the point of no return, resolving, unknown outcomes, refusals never retried."""

from __future__ import annotations

import asyncio

import pytest

import resetguard
from resetguard import (
    Backoff,
    BudgetExhausted,
    CircuitBreaker,
    CircuitOpen,
    OutcomeUnknown,
    Resolution,
    Retry,
    RetryBudget,
    outcome_unknown,
)

from ._faketime import FakeTime

NO_WAIT = Backoff.none()


def _reset() -> ConnectionResetError:
    return ConnectionResetError(104, "Connection reset by peer")


# ------------------------------------------------------------------ never retried


@pytest.mark.parametrize("shape", ["decorator", "retrying", "call", "on_exception"])
def test_outcome_unknown_raised_from_a_reset_runs_once(shape: str) -> None:
    runs: list[int] = []

    def commit() -> None:
        runs.append(1)
        raise OutcomeUnknown("commit outcome unknown") from _reset()

    with pytest.raises(OutcomeUnknown):  # noqa: PT012 - one call per shape
        if shape == "decorator":
            resetguard.retry(backoff=NO_WAIT)(commit)()
        elif shape == "call":
            Retry(backoff=NO_WAIT).call(commit)
        elif shape == "on_exception":  # even a policy that retries every Exception
            Retry(backoff=NO_WAIT, on=Exception).call(commit)
        else:
            for attempt in resetguard.retrying(backoff=NO_WAIT):
                with attempt:
                    commit()
    assert runs == [1]


def test_outcome_unknown_runs_once_async() -> None:
    runs: list[int] = []

    @resetguard.retry(backoff=NO_WAIT)
    async def commit() -> None:
        runs.append(1)
        raise OutcomeUnknown("commit outcome unknown") from _reset()

    with pytest.raises(OutcomeUnknown):
        asyncio.run(commit())
    assert runs == [1]


def test_an_inner_circuit_open_is_not_retried_by_an_outer_layer() -> None:
    fake = FakeTime()
    breaker = CircuitBreaker("inner", failure_threshold=1, clock=fake.clock)
    breaker.isolate()
    inner = resetguard.retry(breaker=breaker, backoff=NO_WAIT)(lambda: "never")
    outer_calls: list[int] = []

    @resetguard.retry(backoff=NO_WAIT, on=Exception)
    def outer() -> str:
        outer_calls.append(1)
        return inner()

    with pytest.raises(CircuitOpen):
        outer()
    assert outer_calls == [1]


def test_an_inner_budget_exhausted_is_not_retried_by_an_outer_layer() -> None:
    fake = FakeTime()
    budget = RetryBudget(
        "inner", ratio=0.1, min_per_second=0, raise_on_exhausted=True, clock=fake.clock
    )
    inner_runs: list[int] = []

    @resetguard.retry(budget=budget, backoff=NO_WAIT, **fake.options())
    def inner() -> None:
        inner_runs.append(1)
        raise _reset()

    outer_runs: list[int] = []

    @resetguard.retry(backoff=NO_WAIT, on=Exception)
    def outer() -> None:
        outer_runs.append(1)
        inner()

    with pytest.raises(BudgetExhausted) as info:
        outer()
    assert outer_runs == [1]
    assert inner_runs == [1]  # the budget refused the inner retry
    assert info.value.retry_after is not None
    assert "only new calls can refill it" in str(info.value)  # no floor: only traffic refills
    assert isinstance(info.value.__cause__, ConnectionResetError)


def test_an_error_raised_from_an_unknown_outcome_is_not_retried() -> None:
    runs: list[int] = []

    def inner() -> None:
        for attempt in resetguard.retrying(backoff=NO_WAIT):
            with attempt:
                attempt.sent()
                raise _reset()

    def wrapped() -> None:
        runs.append(1)
        try:
            inner()
        except ConnectionResetError as exc:
            raise RuntimeError("payment failed") from exc

    with pytest.raises(RuntimeError) as info:
        Retry(backoff=NO_WAIT, on=RuntimeError).call(wrapped)
    assert runs == [1]
    assert outcome_unknown(info.value)


# ------------------------------------------------------------------ the point of no return


def test_a_fault_before_the_point_of_no_return_is_rerun() -> None:
    steps: list[str] = []
    for attempt in resetguard.retrying(backoff=NO_WAIT):
        with attempt:
            steps.append(f"begin {attempt.number}")
            if attempt.number == 1:
                raise _reset()  # the transaction was rolled back: safe to run again
            attempt.sent()
            steps.append("commit")
    assert steps == ["begin 1", "begin 2", "commit"]


def test_a_fault_after_the_point_of_no_return_is_an_unknown_outcome() -> None:
    gave_up: list[resetguard.GaveUp] = []
    runs: list[int] = []
    error = _reset()
    with pytest.raises(ConnectionResetError) as info:  # noqa: PT012 - the block is the attempt
        for attempt in resetguard.retrying(backoff=NO_WAIT, on_giveup=gave_up.append):
            with attempt:
                runs.append(attempt.number)
                attempt.sent()
                raise error
    assert info.value is error  # the user's own exception, unwrapped
    assert runs == [1]
    assert outcome_unknown(error)
    assert [e.reason for e in gave_up] == ["unsafe"]
    assert len(resetguard.history(error)) == 1
    assert any("outcome unknown" in note for note in error.__notes__)


def test_declared_idempotent_retries_after_the_point_of_no_return() -> None:
    runs: list[int] = []
    for attempt in resetguard.retrying(backoff=NO_WAIT, idempotent=True):
        with attempt:
            runs.append(attempt.number)
            attempt.sent()
            if attempt.number < 3:
                raise _reset()
    assert runs == [1, 2, 3]


def test_not_idempotent_retries_only_what_was_never_sent() -> None:
    refused_runs: list[int] = []
    for attempt in resetguard.retrying(backoff=NO_WAIT, idempotent=False):
        with attempt:
            refused_runs.append(attempt.number)
            if attempt.number == 1:
                raise ConnectionRefusedError(111, "Connection refused")  # nothing was sent
    assert refused_runs == [1, 2]
    reset_runs: list[int] = []
    with pytest.raises(ConnectionResetError) as info:  # noqa: PT012 - the block is the attempt
        for attempt in resetguard.retrying(backoff=NO_WAIT, idempotent=False):
            with attempt:
                reset_runs.append(attempt.number)
                raise _reset()  # may have been applied
    assert reset_runs == [1]
    assert outcome_unknown(info.value)


def test_an_idempotent_call_that_ran_out_of_attempts_is_not_an_unknown_outcome() -> None:
    with pytest.raises(ConnectionResetError) as info:
        Retry(backoff=NO_WAIT, idempotent=True).call(_raise_reset)
    assert len(resetguard.history(info.value)) == 3
    assert not outcome_unknown(info.value)


def _raise_reset() -> None:
    raise _reset()


# ------------------------------------------------------------------ resolving


def _commit_fails_after_sent(runs: list[int], succeed_on: int | None = None):
    def unit(attempt: resetguard.AttemptContext) -> str:
        runs.append(attempt.number)
        attempt.sent()
        if succeed_on is not None and attempt.number >= succeed_on:
            return f"ran {attempt.number}"
        raise _reset()

    return unit


def test_a_resolve_hooks_result_is_returned() -> None:
    runs: list[int] = []
    seen: list[object] = []
    resetguard.add_hook(seen.append)
    try:
        value = Retry(backoff=NO_WAIT).run(
            _commit_fails_after_sent(runs), resolve=lambda exc: Resolution.done("committed")
        )
    finally:
        resetguard.remove_hook(seen.append)
    assert value == "committed"
    assert runs == [1]
    resolved = [e for e in seen if isinstance(e, resetguard.OutcomeResolved)]
    assert [(e.outcome, e.attempt) for e in resolved] == [("done", 1)]
    assert any(isinstance(e, resetguard.RetrySucceeded) for e in seen)


def test_a_resolve_hook_can_ask_for_a_rerun() -> None:
    runs: list[int] = []
    asked: list[BaseException] = []

    def resolve(exc: BaseException) -> Resolution:
        asked.append(exc)
        return Resolution.RERUN

    unit = _commit_fails_after_sent(runs, succeed_on=2)
    value = Retry(backoff=NO_WAIT).run(unit, resolve=resolve)
    assert value == "ran 2"
    assert runs == [1, 2]
    assert len(asked) == 1
    assert isinstance(asked[0], ConnectionResetError)


def test_a_rerun_still_respects_attempts_and_is_not_unknown() -> None:
    runs: list[int] = []
    with pytest.raises(ConnectionResetError) as info:
        Retry(backoff=NO_WAIT, attempts=2).run(
            _commit_fails_after_sent(runs), resolve=lambda exc: Resolution.RERUN
        )
    assert runs == [1, 2]
    assert not outcome_unknown(info.value)  # the hook said it did not take effect
    assert "attempts exhausted" in "\n".join(info.value.__notes__)


def test_an_undecided_resolve_hook_surfaces_the_unknown_outcome() -> None:
    runs: list[int] = []
    with pytest.raises(ConnectionResetError) as info:
        Retry(backoff=NO_WAIT).run(
            _commit_fails_after_sent(runs), resolve=lambda exc: Resolution.UNKNOWN
        )
    assert runs == [1]
    assert outcome_unknown(info.value)


def test_a_failing_resolve_hook_leaves_the_outcome_unknown_and_says_why() -> None:
    def resolve(exc: BaseException) -> Resolution:
        raise ConnectionRefusedError(111, "the database is down too")

    with pytest.raises(ConnectionResetError) as info:
        Retry(backoff=NO_WAIT).run(_commit_fails_after_sent([]), resolve=resolve)
    assert outcome_unknown(info.value)
    assert any("resolve hook failed" in note for note in info.value.__notes__)


def test_raise_unknown_raises_outcome_unknown_from_the_drivers_error() -> None:
    runs: list[int] = []
    with pytest.raises(OutcomeUnknown) as info:
        Retry(backoff=NO_WAIT, name="transfer").run(
            _commit_fails_after_sent(runs), raise_unknown=True
        )
    assert runs == [1]
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert "transfer" in str(info.value)
    assert [a.number for a in resetguard.history(info.value)] == [1]
    assert outcome_unknown(info.value)


def test_arun_awaits_the_resolve_hook() -> None:
    runs: list[int] = []

    async def unit(attempt: resetguard.AttemptContext) -> str:
        runs.append(attempt.number)
        attempt.sent()
        await asyncio.sleep(0)
        raise _reset()

    async def resolve(exc: BaseException) -> Resolution:
        await asyncio.sleep(0)
        return Resolution.done("found the key")

    assert asyncio.run(Retry(backoff=NO_WAIT).arun(unit, resolve=resolve)) == "found the key"
    assert runs == [1]


def test_arun_surfaces_outcome_unknown_without_a_hook() -> None:
    async def unit(attempt: resetguard.AttemptContext) -> str:
        attempt.sent()
        raise _reset()

    with pytest.raises(OutcomeUnknown):
        asyncio.run(Retry(backoff=NO_WAIT).arun(unit, raise_unknown=True))


def test_resolution_values() -> None:
    assert repr(Resolution.done(1)) == "Resolution.done(1)"
    assert repr(Resolution.UNKNOWN) == "Resolution.UNKNOWN"
    assert Resolution.done().value is None


def test_idempotent_must_be_a_bool_or_none() -> None:
    with pytest.raises(TypeError, match="'yes'"):
        Retry(idempotent="yes")  # type: ignore[arg-type]


# ------------------------------------------------------------------ patience


def _refused() -> ConnectionRefusedError:
    return ConnectionRefusedError(111, "Connection refused")


def test_patience_retries_a_refusing_dependency_without_spending_attempts() -> None:
    fake = FakeTime()
    runs: list[float] = []

    def call() -> str:
        runs.append(fake.now)
        if fake.now - runs[0] < 2.0:  # a restart: refused for 2 s
            raise _refused()
        return "up"

    assert Retry(attempts=3, patience=3.0, **fake.options()).call(call) == "up"
    assert len(runs) > 3  # more tries than attempts: the refusals were free
    assert runs[-1] - runs[0] >= 2.0


def test_patience_is_bounded_then_attempts_apply() -> None:
    fake = FakeTime()
    runs: list[float] = []

    def call() -> None:
        runs.append(fake.now)
        raise _refused()

    with pytest.raises(ConnectionRefusedError) as info:
        Retry(attempts=3, patience=1.0, deadline=30, **fake.options()).call(call)
    free = [t for t in runs if t - runs[0] < 1.0]  # failed within the patience
    assert len(free) > 1
    assert len(runs) == len(free) + 3  # past the patience, the 3 attempts apply
    assert len(resetguard.history(info.value)) == len(runs)


def test_without_patience_refusals_spend_attempts() -> None:
    fake = FakeTime()
    with pytest.raises(ConnectionRefusedError) as info:
        Retry(attempts=3, **fake.options()).call(_raise_refused)
    assert len(resetguard.history(info.value)) == 3


def _raise_refused() -> None:
    raise _refused()


def test_patience_waits_for_an_open_breakers_next_probe() -> None:
    fake = FakeTime()
    breaker = CircuitBreaker(
        "dep", failure_threshold=2, open_duration=0.5, jitter=0, clock=fake.clock
    )
    policy = Retry(breaker=breaker, patience=3.0, backoff=NO_WAIT, **fake.options())
    runs: list[float] = []

    def call() -> str:
        runs.append(fake.now)
        if fake.now - runs[0] < 1.0:
            raise _refused()
        return "up"

    assert policy.call(call) == "up"
    assert 0.5 in fake.sleeps  # waited for the probe instead of failing
    assert breaker.state is resetguard.CircuitState.CLOSED


@pytest.mark.parametrize("shape", ["sync", "async"])
def test_an_open_breakers_probe_paces_the_retries_not_the_backoff(shape: str) -> None:
    # A backoff of 3 s against a breaker that probes after 0.5 s: sleeping the backoff
    # would sleep through the server's return (found as a flaky restart test).
    fake = FakeTime()
    breaker = CircuitBreaker(
        "dep", failure_threshold=1, open_duration=0.5, jitter=0, clock=fake.clock
    )
    slow = resetguard.Backoff.constant(3.0)
    policy = Retry(breaker=breaker, patience=5.0, backoff=slow, **fake.options())
    runs: list[float] = []

    def call() -> str:
        runs.append(fake.now)
        if len(runs) < 3:
            raise _refused()
        return "up"

    async def acall() -> str:
        return call()

    result = policy.call(call) if shape == "sync" else asyncio.run(policy.acall(acall))
    assert result == "up"
    assert fake.sleeps == [0.5, 1.0]  # each wait is the breaker's open period, doubling
    assert [t - runs[0] for t in runs] == [0.0, 0.5, 1.5]


def test_a_probe_beyond_patience_gives_up_without_sleeping() -> None:
    fake = FakeTime()
    breaker = CircuitBreaker(
        "dep", failure_threshold=2, open_duration=10, jitter=0, clock=fake.clock
    )
    policy = Retry(breaker=breaker, attempts=5, patience=3.0, **fake.options())
    with pytest.raises(ConnectionRefusedError) as info:
        policy.call(_raise_refused)  # the 2nd failure opens it for 10 s: beyond patience
    assert len(resetguard.history(info.value)) == 2
    assert len(fake.sleeps) == 1  # only the backoff before the 2nd attempt
    assert "circuit breaker open" in "\n".join(getattr(info.value, "__notes__", []))


def test_an_open_period_beyond_patience_fails_at_once() -> None:
    fake = FakeTime()
    breaker = CircuitBreaker(
        "dep", failure_threshold=1, open_duration=10, jitter=0, clock=fake.clock
    )
    policy = Retry(breaker=breaker, patience=3.0, backoff=NO_WAIT, **fake.options())
    with pytest.raises(ConnectionRefusedError):
        policy.call(_raise_refused)  # opens the breaker; its 10 s exceed the patience
    with pytest.raises(CircuitOpen):
        policy.call(_raise_refused)
    assert fake.sleeps == []


def _opened_breaker(fake: FakeTime) -> CircuitBreaker:
    """A breaker opened for 0.5 s by one refused call."""
    breaker = CircuitBreaker(
        "dep", failure_threshold=1, open_duration=0.5, jitter=0, clock=fake.clock
    )
    with pytest.raises(ConnectionRefusedError):
        Retry(breaker=breaker, attempts=1, **fake.options()).call(_raise_refused)
    return breaker


@pytest.mark.parametrize("shape", ["sync", "async"])
def test_the_decorators_first_attempt_waits_for_an_open_breakers_probe(shape: str) -> None:
    fake = FakeTime()
    breaker = _opened_breaker(fake)
    assert breaker.state is resetguard.CircuitState.OPEN  # the next call is refused at once…
    patient = resetguard.retry(breaker=breaker, patience=3.0, **fake.options())
    if shape == "sync":
        assert patient(lambda: "up")() == "up"
    else:

        async def up() -> str:
            return "up"

        assert asyncio.run(patient(up)()) == "up"
    assert fake.sleeps == [0.5]  # …unless it waits for the probe
    assert breaker.statistics().rejected == 1  # the refusal was counted once
    impatient = resetguard.retry(breaker=breaker, **fake.options())
    breaker.isolate()
    with pytest.raises(CircuitOpen):
        impatient(lambda: "never")()


# ------------------------------------------------------------------ drive_first


class _Plan:
    """A RunPlan as an adapter writes one: the run is built only when asked for."""

    def __init__(self, policy: Retry, fake: FakeTime, breaker: CircuitBreaker | None = None):
        from resetguard._engine import Run

        self.policy, self.breaker, self.budget = policy, breaker, policy.budget
        self.start = fake.now
        self.built = 0
        self._run = Run

    def run(self):  # type: ignore[no-untyped-def]
        self.built += 1
        return self._run(self.policy, self.start, self.breaker, self.budget)


def _drive_first(shape: str, plan: _Plan, fn):  # type: ignore[no-untyped-def]
    from resetguard._drivers import adrive_first, drive_first

    if shape == "sync":
        return drive_first(plan, fn)

    async def afn(attempt):  # type: ignore[no-untyped-def]
        return fn(attempt)

    return asyncio.run(adrive_first(plan, afn))


@pytest.mark.parametrize("shape", ["sync", "async"])
def test_drive_first_builds_no_run_for_a_first_success(shape: str) -> None:
    fake = FakeTime()
    breaker = CircuitBreaker("dep", failure_threshold=2, clock=fake.clock)
    budget = RetryBudget("b", clock=fake.clock)
    plan = _Plan(Retry(budget=budget, **fake.options()), fake, breaker)
    numbers: list[int] = []

    def once(attempt):  # type: ignore[no-untyped-def]
        numbers.append(attempt.number)
        return "ok"

    assert _drive_first(shape, plan, once) == "ok"
    assert numbers == [1]
    assert plan.built == 0
    assert breaker.statistics().successes == 1  # the ticket went back
    assert budget.statistics().deposits == 1  # the budget counted the call once


@pytest.mark.parametrize("shape", ["sync", "async"])
def test_drive_first_builds_the_run_when_the_first_attempt_fails(shape: str) -> None:
    fake = FakeTime()
    breaker = CircuitBreaker("dep", failure_threshold=5, clock=fake.clock)
    budget = RetryBudget("b", clock=fake.clock)
    plan = _Plan(
        Retry(budget=budget, backoff=Backoff.constant(0.2), **fake.options()), fake, breaker
    )
    numbers: list[int] = []

    def flaky(attempt):  # type: ignore[no-untyped-def]
        numbers.append(attempt.number)
        if len(numbers) < 3:
            raise _reset()
        return "ok"

    assert _drive_first(shape, plan, flaky) == "ok"
    assert numbers == [1, 2, 3]
    assert plan.built == 1
    assert fake.sleeps == [0.2, 0.2]
    stats = breaker.statistics()
    assert (stats.failures, stats.successes) == (2, 1)
    assert budget.statistics().deposits == 1  # the rerun did not count the call again


@pytest.mark.parametrize("shape", ["sync", "async"])
def test_drive_first_a_retryable_result_on_the_first_attempt_is_retried(shape: str) -> None:
    fake = FakeTime()
    plan = _Plan(Retry(backoff=Backoff.constant(0.1), **fake.options()), fake)
    answers = ["503", "200"]

    def status(attempt):  # type: ignore[no-untyped-def]
        answer = answers.pop(0)
        if answer == "503" and attempt.retry_result(RuntimeError("HTTP 503"), 0.5):
            return "discarded"
        return answer

    assert _drive_first(shape, plan, status) == "200"
    assert plan.built == 1
    assert fake.sleeps == [0.5]  # the result's own retry-after


@pytest.mark.parametrize("shape", ["sync", "async"])
def test_drive_first_an_unsafe_first_failure_is_not_rerun(shape: str) -> None:
    fake = FakeTime()
    plan = _Plan(Retry(**fake.options()), fake)
    runs: list[int] = []

    def commit(attempt):  # type: ignore[no-untyped-def]
        runs.append(attempt.number)
        attempt.sent()
        raise _reset()

    with pytest.raises(ConnectionResetError) as caught:
        _drive_first(shape, plan, commit)
    assert runs == [1]
    assert outcome_unknown(caught.value)


@pytest.mark.parametrize("shape", ["sync", "async"])
def test_drive_first_a_refused_first_attempt_waits_for_the_probe_or_raises(shape: str) -> None:
    fake = FakeTime()
    breaker = _opened_breaker(fake)
    impatient = _Plan(Retry(**fake.options()), fake, breaker)
    with pytest.raises(CircuitOpen):
        _drive_first(shape, impatient, lambda attempt: "never")
    assert fake.sleeps == []
    patient = _Plan(Retry(patience=3.0, **fake.options()), fake, breaker)
    assert _drive_first(shape, patient, lambda attempt: "up") == "up"
    assert fake.sleeps == [0.5]
    assert breaker.state is resetguard.CircuitState.CLOSED


def test_drive_first_hands_the_ticket_back_when_interrupted() -> None:
    fake = FakeTime()
    breaker = CircuitBreaker(
        "dep",
        failure_threshold=1,
        open_duration=0.5,
        jitter=0,
        half_open_probes=1,
        clock=fake.clock,
    )
    with pytest.raises(ConnectionRefusedError):
        Retry(breaker=breaker, attempts=1, **fake.options()).call(_raise_refused)
    fake.now += 1.0  # the next attempt is the half-open probe

    def interrupted(attempt):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    plan = _Plan(Retry(**fake.options()), fake, breaker)
    with pytest.raises(KeyboardInterrupt):
        _drive_first("sync", plan, interrupted)
    # the probe slot is free again: a later call is admitted as the probe
    assert (
        _drive_first("sync", _Plan(Retry(**fake.options()), fake, breaker), lambda a: "up") == "up"
    )
