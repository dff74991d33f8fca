"""One logical HTTP request's retry state: sans-I/O, shared by every HTTP transport.

The transports do the sending and the sleeping; :class:`HttpRun` turns each failed attempt
(an exception plus the attempt's :class:`~resetguard.http._rules.Progress`) or each
retryable status into a delay or a refusal, keeps the history, and emits the events.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from urllib.parse import urlsplit, urlunsplit

from .. import _clock
from .._classify import Failure, Phase, classify
from .._events import (
    AttemptFailed,
    ConnectionEvent,
    GaveUp,
    RetryScheduled,
    RetrySucceeded,
    emit,
    hooks_active,
)
from .._exceptions import BudgetExhausted, ResetGuardError
from .._retry import _HISTORY_ATTR, Attempt, Retry, _add_note
from ._rules import _STALE_KINDS as STALE_KINDS
from ._rules import HTTPPolicy, Progress, Sent, decide, parse_retry_after

__all__ = [
    "STALE_KINDS",
    "STALE_REPLAYS",
    "current",
    "HttpRun",
    "RetryableStatus",
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

_OUTCOME_ATTR = "__resetguard_outcome_unknown__"

_REASONS = {
    "not_retryable": "not a retryable failure",
    "unsafe": "the request may have reached the server: outcome unknown, not retried",
    "body_consumed": "the request body was a stream already consumed: it cannot be replayed",
    "streamed": "part of the response was already handed to the caller",
    "attempts": "attempts exhausted",
    "deadline": "deadline reached",
    "budget": "retry budget exhausted",
    "breaker": "circuit breaker open",
}


class RetryableStatus(ResetGuardError):
    """Stands for a retryable HTTP status (429, 503, …) in retry events and history."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def outcome_unknown(exc: BaseException) -> bool:
    """True when ``exc`` failed a request that may have reached the server and was not retried.

    Example::

        >>> from resetguard.http import outcome_unknown
        >>> outcome_unknown(ConnectionResetError())
        False
    """
    return bool(getattr(exc, _OUTCOME_ATTR, False))


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


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


class HttpRun:
    """Retry state of one logical request. Created by the transport per request."""

    __slots__ = (
        "_clock",
        "_random",
        "attempt",
        "history",
        "idempotent",
        "label",
        "policy",
        "previous_delay",
        "stale",
        "stale_close",
        "start",
    )

    def __init__(self, policy: HTTPPolicy, method: str, url: str, *, idempotent: bool) -> None:
        retry = policy.retry
        self.policy = policy
        self._clock: Callable[[], float] = retry.clock or _clock.monotonic
        self._random: Callable[[], float] = retry.random or _clock.uniform
        self.start = self._clock()
        self.attempt = 1
        self.stale = 0
        #: the last failure showed a pooled connection the server had closed while idle
        self.stale_close = False
        self.history: list[Attempt] = []
        self.previous_delay = 0.0
        self.idempotent = idempotent
        self.label = retry.name or f"{method} {safe_url(url)}"

    # ------------------------------------------------------------------ failures

    def failed(
        self, exc: BaseException, progress: Progress, *, replayable: bool, buffered: bool
    ) -> float | None:
        """Attempt ``self.attempt`` raised ``exc``: seconds to wait, or None to give up."""
        policy = self.policy
        retry = policy.retry
        elapsed = self._clock() - self.start
        failure = classify(exc)
        if failure is not None:
            changes: dict[str, object] = {"phase": _phase(progress, failure)}
            if progress.reused is not None:
                changes["reused"] = progress.reused
            failure = failure.with_(**changes)
        if hooks_active():
            emit(
                AttemptFailed(
                    name=self.label,
                    attempt=self.attempt,
                    exception=exc,
                    failure=failure,
                    elapsed=elapsed,
                )
            )
            if progress.connected or progress.reused is not None:
                emit(
                    ConnectionEvent(
                        name="http",
                        action="failed",
                        peer=progress.peer,
                        idle_age=progress.idle_age,
                        bytes_sent=progress.bytes_sent,
                        bytes_received=progress.bytes_received,
                        failure=failure,
                        elapsed=elapsed,
                    )
                )
        self.stale_close = bool(
            failure is not None
            and failure.kind in STALE_KINDS
            and progress.reused is True
            and progress.received is False
        )
        decision = decide(
            failure,
            retryable=retry._matches(exc, failure),
            idempotent=self.idempotent,
            replayable=replayable,
            reused=progress.reused,
            sent=progress.sent(),
            received=progress.received,
            buffered=buffered,
            stale_opt_in=policy.retry_stale_non_idempotent,
            mid_body=policy.retry_mid_body,
        )
        if not decision.retry:
            if decision.outcome_unknown:
                with contextlib.suppress(AttributeError):
                    setattr(exc, _OUTCOME_ATTR, True)
            self._give_up(exc, failure, elapsed, decision.reason)
            return None
        if decision.immediate and self.stale < STALE_REPLAYS:
            self.stale += 1
            delay: float | None = 0.0
            reason = self._check_deadline(elapsed, 0.0)
            if reason is not None:
                delay = None
        else:
            delay, reason = self._next_delay(elapsed, None)
        if delay is None:
            self._give_up(exc, failure, elapsed, reason or "attempts")
            if reason == "budget":
                self._maybe_raise_budget(exc)
            return None
        return self._schedule(exc, failure, elapsed, delay, consumes=not decision.immediate)

    # ------------------------------------------------------------------ statuses

    def status(self, status: int, retry_after: str | None) -> float | None:
        """A retryable status arrived: seconds to wait, or None to hand the response over."""
        elapsed = self._clock() - self.start
        asked = parse_retry_after(retry_after, time.time())
        marker = RetryableStatus(status, asked)
        delay, reason = self._next_delay(elapsed, asked)
        if delay is None:
            self._give_up(marker, None, elapsed, reason or "attempts", annotate=False)
            return None
        return self._schedule(marker, None, elapsed, delay, consumes=True)

    # ------------------------------------------------------------------ shared

    def _check_deadline(self, elapsed: float, delay: float) -> str | None:
        deadline = self.policy.retry.deadline
        if deadline is not None and deadline - elapsed <= 0:
            return "deadline"
        return None

    def _next_delay(self, elapsed: float, asked: float | None) -> tuple[float | None, str | None]:
        retry = self.policy.retry
        if self.attempt - self.stale >= retry.attempts:
            return None, "attempts"
        delay = retry.backoff.delay(self.attempt - self.stale, self.previous_delay, self._random)
        if asked is not None and math.isfinite(asked) and asked >= 0:
            delay = asked
        if retry.deadline is not None:
            remaining = retry.deadline - elapsed
            if remaining <= 0:
                return None, "deadline"
            delay = min(delay, remaining)  # a server's Retry-After is clamped here too
        if retry.budget is not None and not retry.budget._withdraw():
            return None, "budget"
        return delay, None

    def _schedule(
        self,
        exc: BaseException,
        failure: Failure | None,
        elapsed: float,
        delay: float,
        *,
        consumes: bool,
    ) -> float:
        retry = self.policy.retry
        self.history.append(Attempt(self.attempt, exc, failure, elapsed, delay))
        self.attempt += 1
        if consumes:
            self.previous_delay = delay
        what = failure.describe() if failure is not None else str(exc)
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "%s, retrying %s in %s (attempt %d)", what, self.label, _fmt(delay), self.attempt
            )
        if retry.on_retry is not None or hooks_active():
            event = RetryScheduled(
                name=self.label,
                attempt=self.attempt - 1,
                max_attempts=retry.attempts + self.stale,
                delay=delay,
                exception=exc,
                failure=failure,
            )
            emit(event, retry.on_retry)  # type: ignore[arg-type]
        return delay if _clock.waits_enabled() else 0.0

    def rejected(self, reason: str) -> BaseException:
        """The breaker refused the next attempt: give up with the last exception."""
        last = self.history[-1]
        self._give_up(
            last.exception, last.failure, self._clock() - self.start, reason, record=False
        )
        return last.exception

    def succeeded(self) -> None:
        if hooks_active():
            emit(
                RetrySucceeded(
                    name=self.label, attempts=self.attempt, elapsed=self._clock() - self.start
                )
            )

    def _maybe_raise_budget(self, exc: BaseException) -> None:
        budget = self.policy.retry.budget
        if budget is not None and budget.raise_on_exhausted:
            raise BudgetExhausted(
                f"retry budget {budget.name!r} refused a retry of {self.label}",
                budget=budget.name,
            ) from exc

    def _give_up(
        self,
        exc: BaseException,
        failure: Failure | None,
        elapsed: float,
        reason: str,
        *,
        record: bool = True,
        annotate: bool = True,
    ) -> None:
        retry = self.policy.retry
        if record:
            self.history.append(Attempt(self.attempt, exc, failure, elapsed, None))
        attempts = tuple(self.history)
        if annotate:
            with contextlib.suppress(AttributeError):
                setattr(exc, _HISTORY_ATTR, attempts)
            if len(attempts) > 1 or reason not in ("not_retryable", "attempts"):
                _add_note(exc, self._note(attempts, reason))
        if reason != "not_retryable" and _log.isEnabledFor(logging.WARNING):
            _log.warning(
                "%s: giving up after %d attempt(s) (%s)",
                self.label,
                len(attempts),
                _REASONS[reason],
            )
        if retry.on_giveup is not None or hooks_active():
            emit(
                GaveUp(
                    name=self.label,
                    attempts=len(attempts),
                    reason=reason,
                    exception=exc,
                    failure=failure,
                    elapsed=elapsed,
                ),
                retry.on_giveup,  # type: ignore[arg-type]
            )

    def _note(self, attempts: tuple[Attempt, ...], reason: str) -> str:
        lines = [
            f"resetguard: {self.label}: gave up after {len(attempts)} attempt(s): "
            + _REASONS[reason]
        ]
        for a in attempts:
            what = a.failure.describe() if a.failure is not None else str(a.exception)
            if a.failure is not None and a.failure.reused is not None:
                what += ", reused connection" if a.failure.reused else ", new connection"
            wait = f", waited {_fmt(a.delay)}" if a.delay is not None else ""
            lines.append(f"  attempt {a.number} at +{a.elapsed:.3f}s: {what}{wait}")
        return "\n".join(lines)
