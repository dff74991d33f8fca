"""What the HTTP transports tell the retry engine, written once for all of them.

Each transport runs its request on the core engine (``resetguard._drivers``); an
:class:`Exchange` translates HTTP's facts into it: it plugs Go's rules (``_rules.decide``)
into the engine's decision, feeds the idle limits from each response, and offers a
retryable status (429, 503, …) to the engine. History, notes, events, the budget, the
breaker ticket and the waits are the engine's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from .. import _clock
from .._classify import Failure, Phase
from .._drivers import AttemptContext
from .._engine import Run, Verdict
from .._engine import outcome_unknown as outcome_unknown
from .._events import ConnectionEvent, emit, hooks_active
from .._exceptions import ResetGuardError
from .._policy import RetryPolicy
from .._retry import Retry
from ._guards import OriginGuards
from ._idle import IdleLimits, origin_of
from ._rules import _STALE_KINDS as STALE_KINDS
from ._rules import (
    HTTPPolicy,
    Progress,
    Sent,
    decide,
    is_idempotent,
    parse_keep_alive,
    parse_retry_after,
    retry_status,
)

__all__ = [
    "STALE_KINDS",
    "STALE_REPLAYS",
    "Client",
    "Exchange",
    "RetryableStatus",
    "always",
    "current",
    "outcome_unknown",
    "resolve_policy",
    "safe_url",
]

_log = logging.getLogger("resetguard.http")

#: Immediate replays on the stale keep-alive race allowed per request, on top of
#: ``attempts``: each one discards a dead pooled connection, so a pool with several stale
#: connections is drained without spending the attempts meant for a troubled server.
STALE_REPLAYS = 4

#: The attempt the current thread / task is making; written by the instrumented sockets.
current: ContextVar[Progress | None] = ContextVar("resetguard_http_progress", default=None)


class RetryableStatus(ResetGuardError):
    """Stands for a retryable HTTP status (429, 503, …) in retry events and history."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class Client(Protocol):
    """What an :class:`Exchange` reads from the transport that sends it (the same for
    every request of a client)."""

    _policy: HTTPPolicy
    idle_limits: IdleLimits
    guards: OriginGuards


def always() -> bool:
    """The ``replayable`` of a request whose body can always be sent again (none, or bytes)."""
    return True


def resolve_policy(policy: HTTPPolicy | None, retry: Retry | None) -> HTTPPolicy:
    """The policy from a transport's ``policy=`` / ``retry=`` arguments."""
    if policy is not None and retry is not None:
        raise TypeError(
            "pass either policy= or retry=, not both (HTTPPolicy(retry=...) holds both)"
        )
    if retry is not None:
        if not isinstance(retry, Retry):
            raise TypeError(f"retry must be a resetguard.Retry, got {retry!r}")
        return HTTPPolicy(retry=retry)
    if policy is None:
        return HTTPPolicy()
    if not isinstance(policy, HTTPPolicy):
        raise TypeError(f"policy must be a resetguard.http.HTTPPolicy, got {policy!r}")
    return policy


def safe_url(url: str) -> str:
    """``url`` for logs and errors: no credentials, no query string (it often holds keys).

    Example::

        >>> from resetguard.http._run import safe_url
        >>> safe_url("https://bob:secret@api.example/v1/x?token=abc")
        'https://***@api.example/v1/x'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _phase(progress: Progress, failure: Failure) -> Phase:
    sent = progress.sent()
    if sent is Sent.NOTHING:
        return Phase.CONNECT
    if progress.received is True:
        return Phase.RECEIVE
    if sent is Sent.PARTIAL:
        return Phase.SEND
    if sent is Sent.ALL and progress.received is False:
        return Phase.AWAIT
    return failure.phase


class Exchange:
    """One request, translated for the engine: what every HTTP transport shares.

    It is the request's :class:`~resetguard._drivers.RunPlan` (its breaker, the budget,
    and the run built only if an attempt fails or offers a retryable status) and that
    run's :class:`~resetguard._engine.Judge` (Go's rules, from each attempt's
    :class:`Progress`). A transport's attempt calls :meth:`begin` before sending,
    :meth:`end` after, and :meth:`answered` with the response;
    ``drive_first(exchange, attempt)`` runs it. ``client`` is the transport (its policy,
    idle limits and guards); ``buffered``: the body is read inside the attempt;
    ``replayable()``: the body can be sent again now.
    """

    _known_idempotent: bool | None = None  # worked out on first use

    # Built for every request, so its arguments are positional: a class called with
    # keyword arguments packs them into a dict first (about twice the cost of the call).
    def __init__(
        self,
        client: Client,
        method: str,
        url: object,
        headers: Mapping[str, str] | None,
        buffered: bool,
        replayable: Callable[[], bool],
        origin: str | None = None,
    ) -> None:
        #: the transport sending the request (its policy, idle limits and guards)
        self.client = client
        self.http = policy = client._policy
        #: ``host:port`` of the request's URL: the key of its breaker and of the limits it
        #: teaches when the attempt did not record the dialled peer
        self.origin = origin = origin or origin_of(str(url))
        # What only a failure or a retryable status needs (the label, whether the request
        # is idempotent) is worked out from these when asked: most requests never ask.
        self.method = method
        self.url = url
        self.headers = headers
        self.buffered = buffered
        self.replayable = replayable
        self.limits = client.idle_limits
        retry = policy.retry
        #: the breaker and budget guarding the request (the policy's own win)
        self.breaker = retry.breaker or client.guards.breaker(origin)
        self.budget = retry.budget or client.guards.budget
        #: when the request began, by the retry policy's clock (the run's)
        self.start = (retry.clock or _clock.monotonic)()

    def run(self) -> Run:
        """The request's engine run, judged by this exchange (built when first needed)."""
        http = self.http
        run = Run(http.retry, self.start, self.breaker, self.budget)
        run.judge = self
        run.label = self._default_label
        run.free_replays = STALE_REPLAYS
        run.patience = http.patience
        run._log = _log
        return run

    def _default_label(self) -> str:
        """``METHOD url`` (no credentials or query), unless the retry policy has a name."""
        return self.http.retry.name or f"{self.method} {safe_url(str(self.url))}"

    @property
    def idempotent(self) -> bool:
        """The method is idempotent, or the request carries an ``Idempotency-Key``."""
        return self._idempotent()

    def _idempotent(self) -> bool:
        known = self._known_idempotent
        if known is None:
            self._known_idempotent = known = is_idempotent(self.method, self.headers, self.http)
        return known

    # ------------------------------------------------------------------ the attempt

    @staticmethod
    def begin(attempt: AttemptContext) -> tuple[Progress, Token[Progress | None]]:
        """Before sending: a fresh :class:`Progress`, made current for the sockets."""
        attempt.facts = progress = Progress()
        return progress, current.set(progress)

    @staticmethod
    def end(token: Token[Progress | None]) -> None:
        """After sending (whatever happened)."""
        current.reset(token)

    def answered(
        self,
        attempt: AttemptContext,
        progress: Progress,
        status: int,
        headers: Mapping[str, str],
        keep_alive: str | None,
    ) -> bool:
        """A response arrived. Learns from its ``Keep-Alive`` hint (``keep_alive``: the
        header's value, which the transport reads the cheapest way its library allows)
        and from a reuse that worked, then offers its status to the engine: True when the
        engine schedules another attempt (the transport then discards the response).

        Only idempotent requests whose body can be sent again are retried on a status, only for
        the policy's ``status_codes``; ``Retry-After`` is honoured, clamped to the deadline.
        """
        limits = self.limits
        if keep_alive is not None:
            seconds = parse_keep_alive(keep_alive)
            if seconds is not None:
                limits.hint(progress.peer or self.origin, seconds)
        if progress.reused and progress.idle_age is not None and progress.peer:
            limits.alive(progress.peer, progress.idle_age)
        if not retry_status(status, idempotent=self._idempotent, policy=self.http):
            return False
        if not self.replayable():
            return False
        asked = parse_retry_after(headers.get("retry-after"), time.time())
        return attempt.retry_result(RetryableStatus(status, asked), asked)

    # ------------------------------------------------------------------ the judge

    def failure(self, exc: BaseException, failure: Failure | None, facts: Any) -> Failure | None:
        progress: Progress | None = getattr(facts, "facts", None)
        if failure is None or progress is None:
            return failure
        changes: dict[str, object] = {"phase": _phase(progress, failure)}
        if progress.reused is not None:
            changes["reused"] = progress.reused
        return failure.with_(**changes)

    def verdict(
        self, policy: RetryPolicy, exc: BaseException, failure: Failure | None, facts: Any
    ) -> Verdict:
        progress: Progress = getattr(facts, "facts", None) or Progress()
        if hooks_active() and (progress.connected or progress.reused is not None):
            emit(
                ConnectionEvent(
                    name="http",
                    action="failed",
                    peer=progress.peer,
                    idle_age=progress.idle_age,
                    bytes_sent=progress.bytes_sent,
                    bytes_received=progress.bytes_received,
                    failure=failure,
                )
            )
        stale_close = (
            failure is not None
            and failure.kind in STALE_KINDS
            and progress.reused is True
            and progress.received is False
        )
        if stale_close and progress.idle_age is not None and progress.peer:
            # a pooled connection the server had closed while idle: learn its idle timeout
            self.limits.closed(progress.peer, progress.idle_age)
        http = self.http
        return decide(
            failure,
            retryable=policy._matches(exc, failure),
            idempotent=self.idempotent,
            replayable=self.replayable(),
            reused=progress.reused,
            sent=progress.sent(),
            received=progress.received,
            buffered=self.buffered,
            stale_opt_in=http.retry_stale_non_idempotent,
            mid_body=http.retry_mid_body,
        )
