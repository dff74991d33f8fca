"""The HTTP safe-retry rules: pure functions of what is known about one failed attempt.

Nothing here does I/O or reads a clock. The transports record what happened to an
attempt in a :class:`Progress`, then ask :func:`decide` whether it may be sent again and
whether the replay may be immediate (a :class:`~resetguard._engine.Verdict`, which the
engine acts on). The rules follow Go's ``net/http`` (the only client
that gets the stale keep-alive race right) and DESIGN 3.2.
"""

from __future__ import annotations

import email.utils
import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .._breaker import SERVER_BREAKER, SERVER_PATIENCE, BreakerPolicy
from .._classify import Failure, Kind, Phase
from .._engine import Verdict
from .._retry import Retry
from .._validate import check_non_negative, check_positive

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_PATIENCE",
    "DEFAULT_STATUS_CODES",
    "IDEMPOTENT_METHODS",
    "KEEPALIVE_MARGIN",
    "ORIGIN_BREAKER",
    "HTTPPolicy",
    "Progress",
    "Sent",
    "decide",
    "is_idempotent",
    "parse_keep_alive",
    "parse_retry_after",
    "retry_status",
]

#: RFC 9110 §9.2.2 idempotent methods: sending one twice has the effect of sending it once.
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: Statuses that say "not now" rather than "no": rate limited (429), and a proxy or load
#: balancer that could not get an answer from the server behind it (502/503/504).
DEFAULT_STATUS_CODES: frozenset[int] = frozenset({429, 502, 503, 504})
#: 4 s idle limit: below the 5 s keep-alive timeout of Node.js, uvicorn and many load
#: balancers, so the client retires a connection before the server closes it.
DEFAULT_IDLE_TIMEOUT = 4.0
#: A ``Keep-Alive: timeout=N`` hint expires connections at N - 1 s: one second covers
#: the request's flight time and the server's timer granularity (Node's agent uses 1 s too).
KEEPALIVE_MARGIN = 1.0
#: 5 s of patience for a dependency that takes no request (refused, connect timeout): a
#: restart of about 2 s is ridden out (the old 3 quick attempts surfaced 1 % of requests as
#: errors across 300 ms restarts); why 5 s with the per-origin breaker's open periods:
#: :data:`resetguard._breaker.SERVER_PATIENCE`. Past it the breaker's growing open period
#: fails requests at once.
DEFAULT_PATIENCE = SERVER_PATIENCE
#: Each origin's breaker: resetguard's server breaker (its numbers' reasons are there).
ORIGIN_BREAKER = SERVER_BREAKER

#: Kinds that mean "the connection died", the signature of the stale keep-alive race. A
#: timeout is not one of them: it says the server is slow, and an instant replay would
#: only add load.
_STALE_KINDS = frozenset({Kind.RESET, Kind.CLOSED, Kind.BROKEN_PIPE, Kind.ABORTED})


def _methods(value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"idempotent_methods must be a collection of method names, got {value!r}")
    out = set()
    for item in value:
        if not isinstance(item, str) or not item:
            raise TypeError(f"idempotent_methods must hold method names, got {item!r}")
        out.add(item.upper())
    return frozenset(out)


def _codes(value: object) -> frozenset[int]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"status_codes must be a collection of ints, got {value!r}")
    out = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 100 <= item <= 599:
            raise ValueError(f"status_codes must hold HTTP status codes (100-599), got {item!r}")
        out.add(item)
    return frozenset(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPPolicy:
    """How resetguard's HTTP clients retry and keep connections. A frozen value.

    Args:
        retry: attempts, deadline, backoff, breaker, budget, hooks and injectable time
            (a :class:`resetguard.Retry`). ``retry.idempotent=False`` treats every request
            as non-idempotent.
        status_codes: statuses retried for idempotent requests (``Retry-After`` honoured).
        idempotent_methods: methods that are safe to send twice.
        retry_stale_non_idempotent: also replay a non-idempotent request that failed on a
            *reused* connection before any response byte arrived (Go's rule for requests
            with nothing written; opt-in because the server may have read the request).
        retry_mid_body: retry an idempotent request whose response broke mid-body, when
            the client reads the body in full (never for streamed responses).
        idle_timeout: seconds a pooled connection may stay idle before it is retired
            (``None``: no limit of our own). A server ``Keep-Alive: timeout=N`` lowers it
            to N - 1 s, and the limit learned per origin may lower it further.
        max_age: seconds after which a connection is retired whatever its use (``None``).
        learn_idle: learn a per-origin idle limit from connections the server closes.
        patience: seconds a request keeps waiting for an origin that takes no request
            (refused, connect timeout): such failures spend no attempt, and an open
            breaker's next probe is awaited if it comes within this and the deadline.
        breakers: the policy of the breaker each origin gets (``None``: no breakers). A
            ``retry.breaker`` replaces them with that one breaker.
        budget: give the client a retry budget of its own (20 % of requests + 10/s). A
            ``retry.budget`` replaces it.

    Example::

        >>> from resetguard import Retry
        >>> from resetguard.http import HTTPPolicy
        >>> HTTPPolicy(retry=Retry(attempts=5), idle_timeout=2.0).retry.attempts
        5
    """

    retry: Retry = field(default_factory=Retry)
    status_codes: frozenset[int] = DEFAULT_STATUS_CODES
    idempotent_methods: frozenset[str] = IDEMPOTENT_METHODS
    retry_stale_non_idempotent: bool = False
    retry_mid_body: bool = True
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    max_age: float | None = None
    learn_idle: bool = True
    patience: float = DEFAULT_PATIENCE
    breakers: BreakerPolicy | None = ORIGIN_BREAKER
    budget: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.retry, Retry):
            raise TypeError(f"retry must be a resetguard.Retry, got {self.retry!r}")
        object.__setattr__(self, "status_codes", _codes(self.status_codes))
        object.__setattr__(self, "idempotent_methods", _methods(self.idempotent_methods))
        check_non_negative("patience", self.patience)
        if self.breakers is not None and not isinstance(self.breakers, BreakerPolicy):
            raise TypeError(
                f"breakers must be a resetguard.BreakerPolicy or None, got {self.breakers!r}"
            )
        for name in ("retry_stale_non_idempotent", "retry_mid_body", "learn_idle", "budget"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.idle_timeout is not None:
            check_positive("idle_timeout", self.idle_timeout)
        if self.max_age is not None:
            check_positive("max_age", self.max_age)


class Sent(str, enum.Enum):
    """How much of the request went out before the failure."""

    NOTHING = "nothing"  #: proven: no byte of this request was written
    PARTIAL = "partial"  #: some bytes, or a write that failed part-way
    ALL = "all"  #: the whole request was written
    UNKNOWN = "unknown"  #: the transport could not tell


class Progress:
    """What the transport learned about one attempt (mutable, one per attempt).

    ``reused``: the connection had served an earlier request (``None``: unknown).
    ``received``: any byte of the response arrived (``None``: unknown).
    ``buffered``: the client reads the whole body before returning (not streamed).
    """

    # No __slots__ and no __init__: one is made per attempt, and class-level defaults
    # cost nothing until an attempt records something.
    connected = False
    reused: bool | None = None
    idle_age: float | None = None
    bytes_sent = 0
    bytes_received = 0
    send_failed = False
    write_done = False
    received: bool | None = None
    peer = ""

    def sent(self) -> Sent:
        """How much was written, as far as the transport saw."""
        if self.send_failed:
            return Sent.PARTIAL
        if not self.connected:
            return Sent.UNKNOWN
        if self.bytes_sent == 0:
            return Sent.NOTHING
        return Sent.ALL if self.write_done else Sent.PARTIAL

    def __repr__(self) -> str:
        return (
            f"<Progress reused={self.reused} sent={self.sent().value} "
            f"bytes_sent={self.bytes_sent} received={self.received} idle_age={self.idle_age}>"
        )


_GIVE_UP = {
    r: Verdict(False, False, r) for r in ("not_retryable", "body_consumed", "streamed", "unsafe")
}
_STALE = Verdict(True, True, "stale")
_NOT_SENT = Verdict(True, False, "not_sent")
_IDEMPOTENT = Verdict(True, False, "idempotent")
_MID_BODY = Verdict(True, False, "mid_body")


def decide(
    failure: Failure | None,
    *,
    retryable: bool,
    idempotent: bool,
    replayable: bool,
    reused: bool | None,
    sent: Sent,
    received: bool | None,
    buffered: bool,
    stale_opt_in: bool = False,
    mid_body: bool = True,
) -> Verdict:
    """May a request whose attempt failed with ``failure`` be sent again, and how soon?

    Args:
        failure: the classified exception (``None``: not a connection fault).
        retryable: the policy retries this failure at all (its ``kinds`` / ``on``).
        idempotent: the method is idempotent or the request has an ``Idempotency-Key``.
        replayable: the body can be sent again (bytes, or a stream not yet started).
        reused, sent, received, buffered: see :class:`Progress`.
        stale_opt_in: replay non-idempotent requests on the stale keep-alive race.
        mid_body: retry idempotent requests whose buffered response broke mid-body.

    Example::

        >>> from resetguard import Failure, Kind
        >>> from resetguard.http._rules import Sent, decide
        >>> decide(Failure(kind=Kind.CLOSED), retryable=True, idempotent=True,
        ...        replayable=True, reused=True, sent=Sent.ALL, received=False,
        ...        buffered=True)
        Verdict(retry=True, immediate=True, reason='stale')
    """
    if failure is None or not retryable:
        return _GIVE_UP["not_retryable"]
    # A response byte proves the request went out, whatever the write counters say.
    nothing_sent = received is not True and (
        sent is Sent.NOTHING or (sent is Sent.UNKNOWN and failure.phase is Phase.CONNECT)
    )
    if nothing_sent:
        # A dead pooled connection found on the first write: the server is fine.
        if reused is True and failure.kind in _STALE_KINDS:
            return _STALE
        return _NOT_SENT
    if not replayable:
        return _GIVE_UP["body_consumed"]
    if reused is True and received is False and failure.kind in _STALE_KINDS:
        if idempotent or stale_opt_in:
            return _STALE
        return _GIVE_UP["unsafe"]
    if not idempotent:
        return _GIVE_UP["unsafe"]
    if received is True or failure.phase is Phase.RECEIVE:
        if not buffered:
            return _GIVE_UP["streamed"]
        return _MID_BODY if mid_body else _GIVE_UP["streamed"]
    return _IDEMPOTENT


def is_idempotent(method: str, headers: Mapping[str, str] | None, policy: HTTPPolicy) -> bool:
    """An idempotent method, or a request carrying an ``Idempotency-Key`` header."""
    if policy.retry.idempotent is False:
        return False
    if method.upper() in policy.idempotent_methods:
        return True
    if headers is None:
        return False
    return bool(headers.get("Idempotency-Key") or headers.get("idempotency-key"))


def retry_status(status: int, *, idempotent: Callable[[], bool], policy: HTTPPolicy) -> bool:
    """Retry this response's status? Only listed statuses, only idempotent requests.

    ``idempotent`` is asked only for a listed status (working it out reads the headers).
    """
    return status in policy.status_codes and idempotent()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    ``now`` is the wall-clock time (``time.time()``) the date is measured against. A date
    in the past gives 0; anything unparsable gives ``None`` (fall back to the backoff).

    Example::

        >>> from resetguard.http._rules import parse_retry_after
        >>> parse_retry_after("3", 0.0)
        3.0
        >>> parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 4.0)
        6.0
        >>> parse_retry_after("soon", 0.0) is None
        True
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such
        import datetime

        when = when.replace(tzinfo=datetime.timezone.utc)
    delay = when.timestamp() - now
    if not math.isfinite(delay):
        return None
    return max(0.0, delay)


def parse_keep_alive(value: str | None) -> float | None:
    """The ``timeout=N`` parameter of a ``Keep-Alive`` response header, in seconds.

    Example::

        >>> from resetguard.http._rules import parse_keep_alive
        >>> parse_keep_alive("timeout=5, max=1000")
        5.0
        >>> parse_keep_alive("max=3") is None
        True
    """
    if not value:
        return None
    for part in value.split(","):
        key, _, raw = part.partition("=")
        if key.strip().lower() == "timeout":
            raw = raw.strip().strip('"')
            try:
                seconds = float(raw)
            except ValueError:
                return None
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
            return None
    return None
