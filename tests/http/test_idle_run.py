"""Per-origin idle limits and HTTP's rules in the retry engine (pure; fake time only)."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

import resetguard
from resetguard import Backoff, Kind, Retry, RetryBudget
from resetguard.http import HTTPPolicy, outcome_unknown
from resetguard.http._guards import OriginGuards
from resetguard.http._idle import LEARN_AFTER, LEARN_FACTOR, MAX_ORIGINS, IdleLimits
from resetguard.http._rules import Progress, parse_retry_after
from resetguard.http._run import STALE_REPLAYS, Exchange, RetryableStatus, safe_url
from tests._faketime import FakeTime

# ------------------------------------------------------------------ idle limits


def test_configured_limit_and_keep_alive_hint():
    limits = IdleLimits(4.0)
    assert limits.limit("a:80") == 4.0
    limits.hint("a:80", 10.0)  # 9 s is above the configured 4 s: 4 s wins
    assert limits.limit("a:80") == 4.0
    limits.hint("a:80", 3.0)
    assert limits.limit("a:80") == 2.0
    limits.hint("a:80", 0.5)  # N - 1 below zero: never reuse
    assert limits.limit("a:80") == 0.0
    assert limits.limit("b:80") == 4.0
    assert IdleLimits(None).limit("a:80") is None
    none = IdleLimits(None)
    none.hint("a:80", 5.0)
    assert none.limit("a:80") == 4.0


def test_floor_is_the_lowest_limit_in_force():
    limits = IdleLimits(4.0)
    assert limits.floor == 4.0
    limits.hint("a:80", 3.0)
    assert limits.floor == 2.0
    limits.hint("b:80", 2.5)
    assert limits.floor == 1.5
    limits.forget("b:80")
    assert limits.floor == 2.0
    limits.forget()
    assert limits.floor == 4.0
    none = IdleLimits(None)
    assert none.floor is None
    none.hint("a:80", 5.0)
    assert none.floor == 4.0


def test_learning_needs_consistent_observations():
    limits = IdleLimits(4.0)
    limits.alive("a:80", 0.5)
    assert not limits.closed("a:80", 0.3)  # below a proven-alive age: a restart, ignored
    assert limits.limit("a:80") == 4.0
    for _ in range(LEARN_AFTER - 1):
        assert not limits.closed("a:80", 1.2)
    assert limits.limit("a:80") == 4.0
    assert limits.closed("a:80", 1.0)
    assert limits.limit("a:80") == pytest.approx(1.0 * LEARN_FACTOR)
    assert not limits.closed("a:80", 1.1)  # would not lower it
    (snap,) = limits.snapshot()
    assert snap.origin == "a:80"
    assert snap.observations == LEARN_AFTER + 1
    assert snap.closed_min == 1.0
    assert snap.alive_max == 0.5
    limits.forget("a:80")
    assert limits.limit("a:80") == 4.0
    assert limits.snapshot() == []


def test_learning_can_be_off_and_origins_are_bounded():
    off = IdleLimits(4.0, learn=False)
    for _ in range(5):
        assert not off.closed("a:80", 1.0)
    assert off.limit("a:80") == 4.0
    limits = IdleLimits(4.0)
    for i in range(MAX_ORIGINS + 10):
        limits.hint(f"h{i}:80", 2.0)
    assert len(limits.snapshot()) == MAX_ORIGINS
    assert limits.limit("h0:80") == 4.0  # forgotten first
    assert limits.limit(f"h{MAX_ORIGINS + 9}:80") == 1.0
    limits.forget()
    assert limits.snapshot() == []


# ------------------------------------------------------------------ the run


def _policy(fake: FakeTime, **kw) -> HTTPPolicy:
    retry_kw = {"attempts": 3, "deadline": 10.0, **fake.options()}
    retry_kw.update(kw.pop("retry", {}))
    return HTTPPolicy(retry=Retry(**retry_kw), **kw)


def _stale_progress() -> Progress:
    p = Progress()
    p.connected, p.reused, p.received, p.bytes_sent, p.write_done = True, True, False, 50, True
    p.idle_age = 3.9
    return p


def _fresh_progress(received: bool = False) -> Progress:
    p = _stale_progress()
    p.reused, p.idle_age, p.received = False, None, received
    return p


class HttpRun:
    """One request's engine run with HTTP's judge, driven by hand like a transport does."""

    def __init__(self, policy: HTTPPolicy, method: str, url: str, *, idempotent: bool) -> None:
        self.replayable = True
        self.markers: list[RetryableStatus] = []  # the statuses offered, in order
        headers = None if idempotent or method != "POST" else {}
        client = SimpleNamespace(
            _policy=policy, idle_limits=IdleLimits(policy.idle_timeout), guards=OriginGuards(policy)
        )
        exchange = Exchange(client, method, url, headers, True, lambda: self.replayable)
        assert exchange.idempotent is idempotent
        self.run = exchange.run()  # the request's engine run

    def failed(self, exc: BaseException, progress: Progress, *, replayable: bool, buffered: bool):
        assert buffered
        self.replayable = replayable
        return self.run.failed(exc, SimpleNamespace(passed=False, facts=progress))

    def status(self, status: int, retry_after: str | None):
        asked = parse_retry_after(retry_after, 0.0)
        marker = RetryableStatus(status, asked)
        self.markers.append(marker)
        return self.run.retry_result(marker, asked)

    def succeeded(self) -> None:
        self.run.succeeded()


def _closed() -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError("Server disconnected without sending a response.")


def test_stale_replays_are_immediate_and_do_not_spend_attempts():
    fake = FakeTime()
    run = HttpRun(_policy(fake), "GET", "http://h/x", idempotent=True)
    for _ in range(STALE_REPLAYS):
        assert run.failed(_closed(), _stale_progress(), replayable=True, buffered=True) == 0.0
    # beyond the stale allowance the replays back off and spend attempts
    d1 = run.failed(_closed(), _stale_progress(), replayable=True, buffered=True)
    assert d1 == pytest.approx(0.05)  # 0.1 s * full jitter at 0.5
    d2 = run.failed(_closed(), _stale_progress(), replayable=True, buffered=True)
    assert d2 == pytest.approx(0.1)
    exc = _closed()
    assert run.failed(exc, _stale_progress(), replayable=True, buffered=True) is None
    attempts = resetguard.history(exc)
    assert len(attempts) == STALE_REPLAYS + 3
    assert attempts[0].failure.reused is True
    assert attempts[0].failure.kind is Kind.CLOSED
    assert "attempts exhausted" in "\n".join(exc.__notes__)


def test_post_on_stale_connection_gives_up_with_outcome_unknown():
    fake = FakeTime()
    run = HttpRun(_policy(fake), "POST", "http://u:pw@h/x?key=1", idempotent=False)
    exc = _closed()
    assert run.failed(exc, _stale_progress(), replayable=True, buffered=True) is None
    assert outcome_unknown(exc)
    note = "\n".join(exc.__notes__)
    assert "outcome unknown" in note
    assert "reused connection" in note
    assert "pw" not in note
    assert "key=1" not in note
    assert not outcome_unknown(ValueError())
    opt_in = HttpRun(
        _policy(fake, retry_stale_non_idempotent=True), "POST", "http://h/x", idempotent=False
    )
    assert opt_in.failed(_closed(), _stale_progress(), replayable=True, buffered=True) == 0.0


def test_fresh_connection_failures_back_off_and_respect_the_deadline():
    fake = FakeTime()
    run = HttpRun(
        _policy(fake, retry={"attempts": 5, "deadline": 1.0, "backoff": Backoff.constant(0.7)}),
        "GET",
        "http://h/",
        idempotent=True,
    )
    assert run.failed(_closed(), _fresh_progress(), replayable=True, buffered=True) == 0.7
    fake.now += 0.7
    assert run.failed(
        _closed(), _fresh_progress(), replayable=True, buffered=True
    ) == pytest.approx(0.3)
    fake.now += 0.3
    exc = _closed()
    assert run.failed(exc, _fresh_progress(), replayable=True, buffered=True) is None
    assert "deadline reached" in "\n".join(exc.__notes__)


def test_status_retry_after_is_honoured_and_clamped():
    fake = FakeTime()
    run = HttpRun(_policy(fake, retry={"deadline": 5.0}), "GET", "http://h/", idempotent=True)
    assert run.status(503, "2") == 2.0
    fake.now += 2.0
    assert run.status(429, "100") == pytest.approx(3.0)  # clamped to what the deadline leaves
    fake.now += 3.0
    assert run.status(503, "1") is None  # deadline reached: the response goes to the caller
    assert len(run.markers) == 3
    assert run.markers[0].status == 503
    assert run.markers[1].retry_after == 100
    assert run.run.done  # given up: the response goes to the caller
    assert not run.run.history  # and nothing of the run is kept


def test_status_without_retry_after_uses_backoff_and_attempts():
    fake = FakeTime()
    run = HttpRun(_policy(fake), "GET", "http://h/", idempotent=True)
    assert run.status(502, None) == pytest.approx(0.05)
    assert run.status(502, "garbage") == pytest.approx(0.1)
    assert run.status(502, None) is None


def test_budget_refuses_and_can_raise():
    fake = FakeTime()
    budget = RetryBudget("b", ratio=0.1, min_per_second=0, clock=fake.clock)
    run = HttpRun(_policy(fake, retry={"budget": budget}), "GET", "http://h/", idempotent=True)
    exc = _closed()
    assert run.failed(exc, _fresh_progress(), replayable=True, buffered=True) is None
    assert "retry budget exhausted" in "\n".join(exc.__notes__)
    loud = RetryBudget(
        "loud", ratio=0.1, min_per_second=0, raise_on_exhausted=True, clock=fake.clock
    )
    run = HttpRun(_policy(fake, retry={"budget": loud}), "GET", "http://h/", idempotent=True)
    with pytest.raises(resetguard.BudgetExhausted):
        run.failed(_closed(), _fresh_progress(), replayable=True, buffered=True)


def test_events_are_emitted():
    fake = FakeTime()
    seen: list[object] = []
    resetguard.add_hook(seen.append)
    try:
        run = HttpRun(_policy(fake), "GET", "http://h/", idempotent=True)
        run.failed(_closed(), _stale_progress(), replayable=True, buffered=True)
        run.succeeded()
    finally:
        resetguard.remove_hook(seen.append)
    names = [type(e).__name__ for e in seen]
    assert names == ["AttemptFailed", "ConnectionEvent", "RetryScheduled", "RetrySucceeded"]
    conn = seen[1]
    assert conn.action == "failed"
    assert conn.idle_age == 3.9
    assert conn.failure.reused is True


def test_safe_url():
    assert safe_url("http://h:81/p?q=1#f") == "http://h:81/p"
    assert safe_url("https://user:pw@h/p") == "https://***@h/p"
