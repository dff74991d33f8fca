"""The pure safe-retry rules, checked exhaustively against the invariants of DESIGN 3.2."""

from __future__ import annotations

import itertools

import pytest

from resetguard import Backoff, Failure, Kind, Phase, Retry
from resetguard.http._rules import (
    DEFAULT_STATUS_CODES,
    HTTPPolicy,
    Progress,
    Sent,
    decide,
    is_idempotent,
    parse_keep_alive,
    parse_retry_after,
    retry_status,
)

STALE = {Kind.RESET, Kind.CLOSED, Kind.BROKEN_PIPE, Kind.ABORTED}
TRI = (True, False, None)
BOOL = (True, False)


def _cases():
    failures = [None] + [Failure(kind=k, phase=p) for k in Kind for p in Phase]
    for (
        failure,
        retryable,
        idem,
        replay,
        reused,
        sent,
        received,
        buffered,
        opt_in,
        mid,
    ) in itertools.product(failures, BOOL, BOOL, BOOL, TRI, Sent, TRI, BOOL, BOOL, BOOL):
        yield (
            failure,
            dict(
                retryable=retryable,
                idempotent=idem,
                replayable=replay,
                reused=reused,
                sent=sent,
                received=received,
                buffered=buffered,
                stale_opt_in=opt_in,
                mid_body=mid,
            ),
        )


ALL = [(f, kw, decide(f, **kw)) for f, kw in _cases()]


def _nothing_sent(failure, kw):
    return kw["received"] is not True and (
        kw["sent"] is Sent.NOTHING
        or (kw["sent"] is Sent.UNKNOWN and failure.phase is Phase.CONNECT)
    )


def test_the_case_space_is_large():
    assert len(ALL) > 100_000


def test_never_retries_what_the_policy_does_not_retry():
    for failure, kw, d in ALL:
        if failure is None or not kw["retryable"]:
            assert not d.retry, (failure, kw)
            assert d.reason == "not_retryable", (failure, kw)


def test_a_non_idempotent_request_is_replayed_only_when_it_cannot_have_executed_or_opted_in():
    for failure, kw, d in ALL:
        if d.retry and not kw["idempotent"]:
            stale_race = (
                kw["reused"] is True
                and kw["received"] is False
                and failure.kind in STALE
                and kw["stale_opt_in"]
                and kw["replayable"]
            )
            assert _nothing_sent(failure, kw) or stale_race, (failure, kw, d)


def test_a_consumed_body_is_never_replayed():
    for failure, kw, d in ALL:
        if d.retry and not kw["replayable"]:
            assert _nothing_sent(failure, kw), (failure, kw, d)


def test_a_response_already_handed_to_the_caller_is_never_retried():
    for failure, kw, d in ALL:
        if kw["received"] is True and not kw["buffered"] and not _nothing_sent(failure, kw):
            assert not d.retry, (failure, kw, d)


def test_immediate_replays_only_on_a_dead_reused_connection():
    for failure, kw, d in ALL:
        if d.immediate:
            assert d.retry, (failure, kw)
            assert kw["reused"] is True, (failure, kw)
            assert failure.kind in STALE, (failure, kw)
            assert kw["received"] is not True, (failure, kw)


def test_the_stale_race_is_always_replayed_for_idempotent_requests():
    hits = 0
    for failure, kw, d in ALL:
        if (
            failure is not None
            and kw["retryable"]
            and kw["idempotent"]
            and kw["replayable"]
            and kw["reused"] is True
            and kw["received"] is False
            and failure.kind in STALE
        ):
            hits += 1
            assert d.reason == "stale", (failure, kw)
            assert d.retry, (failure, kw)
            assert d.immediate, (failure, kw)
    assert hits > 0


def test_nothing_sent_is_always_retried():
    for failure, kw, d in ALL:
        if failure is not None and kw["retryable"] and _nothing_sent(failure, kw):
            assert d.retry, (failure, kw)


def test_outcome_unknown_is_reported_exactly_for_unsafe_give_ups():
    for failure, kw, d in ALL:
        if d.outcome_unknown:
            assert not d.retry
            assert not kw["idempotent"]
            assert not _nothing_sent(failure, kw)


@pytest.mark.parametrize(
    ("kind", "phase", "kw", "expected"),
    [
        # Go's rule: a request on a reused connection, nothing back: replay now.
        (
            Kind.CLOSED,
            Phase.AWAIT,
            dict(idempotent=True, reused=True, sent=Sent.ALL, received=False),
            "stale",
        ),
        # same on a fresh connection: the server may be in trouble: back off.
        (
            Kind.CLOSED,
            Phase.AWAIT,
            dict(idempotent=True, reused=False, sent=Sent.ALL, received=False),
            "idempotent",
        ),
        (
            Kind.RESET,
            Phase.AWAIT,
            dict(idempotent=False, reused=True, sent=Sent.ALL, received=False),
            "unsafe",
        ),
        (
            Kind.RESET,
            Phase.AWAIT,
            dict(idempotent=False, reused=True, sent=Sent.ALL, received=False, stale_opt_in=True),
            "stale",
        ),
        (
            Kind.RESET,
            Phase.AWAIT,
            dict(idempotent=False, reused=False, sent=Sent.ALL, received=False, stale_opt_in=True),
            "unsafe",
        ),
        (
            Kind.REFUSED,
            Phase.CONNECT,
            dict(idempotent=False, reused=None, sent=Sent.UNKNOWN, received=None),
            "not_sent",
        ),
        (
            Kind.RESET,
            Phase.RECEIVE,
            dict(idempotent=True, reused=False, sent=Sent.ALL, received=True, buffered=True),
            "mid_body",
        ),
        (
            Kind.RESET,
            Phase.RECEIVE,
            dict(idempotent=True, reused=False, sent=Sent.ALL, received=True, buffered=False),
            "streamed",
        ),
        (
            Kind.RESET,
            Phase.RECEIVE,
            dict(idempotent=False, reused=False, sent=Sent.ALL, received=True, buffered=True),
            "unsafe",
        ),
        # a timeout on a reused connection is a slow server, not a stale connection
        (
            Kind.TIMEOUT,
            Phase.AWAIT,
            dict(idempotent=True, reused=True, sent=Sent.ALL, received=False),
            "idempotent",
        ),
        (
            Kind.TIMEOUT,
            Phase.AWAIT,
            dict(idempotent=False, reused=True, sent=Sent.ALL, received=False, stale_opt_in=True),
            "unsafe",
        ),
        (
            Kind.RESET,
            Phase.SEND,
            dict(idempotent=True, replayable=False, reused=True, sent=Sent.PARTIAL, received=False),
            "body_consumed",
        ),
        (
            Kind.BROKEN_PIPE,
            Phase.SEND,
            dict(idempotent=False, reused=True, sent=Sent.NOTHING, received=False),
            "stale",
        ),
    ],
)
def test_table(kind, phase, kw, expected):
    args = dict(retryable=True, replayable=True, buffered=True)
    args.update(kw)
    assert decide(Failure(kind=kind, phase=phase), **args).reason == expected


def test_progress_sent():
    p = Progress()
    assert p.sent() is Sent.UNKNOWN
    p.connected = True
    assert p.sent() is Sent.NOTHING
    p.bytes_sent = 10
    assert p.sent() is Sent.PARTIAL
    p.write_done = True
    assert p.sent() is Sent.ALL
    p.send_failed = True
    assert p.sent() is Sent.PARTIAL
    assert "sent=partial" in repr(p)


def test_idempotency():
    policy = HTTPPolicy()
    assert is_idempotent("get", {}, policy)
    assert is_idempotent("DELETE", None, policy)
    assert not is_idempotent("POST", {}, policy)
    assert not is_idempotent("PATCH", None, policy)
    assert is_idempotent("POST", {"Idempotency-Key": "k1"}, policy)
    assert not is_idempotent("GET", {}, HTTPPolicy(retry=Retry(idempotent=False)))
    custom = HTTPPolicy(idempotent_methods={"get", "QUERY"})
    assert is_idempotent("QUERY", {}, custom)
    assert not is_idempotent("PUT", {}, custom)


def test_status_rules():
    policy = HTTPPolicy()
    assert {429, 502, 503, 504} == DEFAULT_STATUS_CODES
    assert retry_status(503, idempotent=lambda: True, policy=policy)
    assert not retry_status(503, idempotent=lambda: False, policy=policy)
    assert not retry_status(500, idempotent=lambda: True, policy=policy)


def test_retry_after_parsing():
    assert parse_retry_after("120", 0.0) == 120.0
    assert parse_retry_after(" 0 ", 0.0) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 - 30) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 + 5) == 0.0
    for bad in (None, "", "-1", "1.5", "soon", "Wed, 99 Foo 2015"):
        assert parse_retry_after(bad, 0.0) is None, bad


def test_keep_alive_parsing():
    assert parse_keep_alive("timeout=5") == 5.0
    assert parse_keep_alive("max=100, timeout=2") == 2.0
    assert parse_keep_alive('Timeout="3.5"') == 3.5
    for bad in (None, "", "max=5", "timeout=abc", "timeout=-1", "timeout=inf"):
        assert parse_keep_alive(bad) is None, bad


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        (dict(retry=3), TypeError, "retry must be a resetguard.Retry"),
        (dict(status_codes=[503, 700]), ValueError, "700"),
        (dict(status_codes="503"), TypeError, "'503'"),
        (dict(idempotent_methods="GET"), TypeError, "'GET'"),
        (dict(idempotent_methods=["GET", 1]), TypeError, "1"),
        (dict(retry_mid_body="yes"), TypeError, "retry_mid_body"),
        (dict(idle_timeout=0), ValueError, "idle_timeout"),
        (dict(idle_timeout=-1.0), ValueError, "-1.0"),
        (dict(max_age=float("nan")), ValueError, "max_age"),
        (dict(learn_idle=1), TypeError, "learn_idle"),
    ],
)
def test_policy_rejects_bad_values(kwargs, error, text):
    with pytest.raises(error, match=text):
        HTTPPolicy(**kwargs)


def test_policy_is_frozen_and_normalises():
    policy = HTTPPolicy(
        retry=Retry(attempts=4, backoff=Backoff.none()),
        idempotent_methods=["get"],
        idle_timeout=None,
    )
    assert policy.idempotent_methods == frozenset({"GET"})
    assert policy.idle_timeout is None
    with pytest.raises(AttributeError):
        policy.idle_timeout = 3  # type: ignore[misc]
