"""The retry engine: one :class:`Run` per logical call, deciding, never doing I/O.

Whoever drives a call (the decorator, ``retrying()``, ``Retry.run``, an HTTP transport, a
database helper) hands the run the facts of each attempt: the exception, whether the
attempt had passed its point of no return, what the adapter knows about the connection
(``facts``), or a retryable result such as an HTTP 503. The run answers with a delay or a
refusal, and keeps everything a call accumulates: the breaker ticket, the budget, the
history, the notes, the log lines and the events. The drivers in ``_drivers`` do the
calling and the sleeping.

Safety is a pluggable :class:`Judge`: without one, the core rule applies (declared
idempotence, the point of no return, nothing sent); the HTTP layer plugs in Go's rules.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

from . import _clock
from ._classify import Failure, classify
from ._events import (
    AttemptFailed,
    GaveUp,
    OutcomeResolved,
    RetryScheduled,
    RetrySucceeded,
    _registry,
    emit,
)
from ._exceptions import FINAL_ATTR, OUTCOME_ATTR, BudgetExhausted, OutcomeUnknown, Rejected
from ._policy import BreakerLike, BudgetLike, RetryPolicy

if TYPE_CHECKING:
    from ._events import Event

__all__ = [
    "Attempt",
    "Facts",
    "Judge",
    "Resolution",
    "Run",
    "Verdict",
    "history",
    "outcome_unknown",
]

_log = logging.getLogger("resetguard.retry")
_INFO, _WARNING = logging.INFO, logging.WARNING

#: ``Run.value`` until a resolve hook settles the call with ``Resolution.done(value)``.
NO_VALUE: Any = object()
_HISTORY_ATTR: Final = "__resetguard_history__"
#: How far :func:`outcome_unknown` follows ``__cause__``: wrappers rarely nest deeper.
_CAUSE_DEPTH = 8
#: How often a patient call looks again while another call holds the half-open probe: a
#: probe answers in a round trip or fails at once on a refused connection.
_PROBE_POLL = 0.05


class Attempt(NamedTuple):
    """One failed attempt in a call's history (attached to the re-raised exception).

    ``delay`` is the wait before the next attempt, or ``None`` for the last one. A named
    tuple rather than a frozen dataclass: it is built on the failure path, where every
    microsecond counts, and is just as immutable.
    """

    number: int
    exception: BaseException
    failure: Failure | None
    elapsed: float
    delay: float | None


def history(exc: BaseException) -> tuple[Attempt, ...]:
    """The attempts behind an exception re-raised by resetguard (empty if none).

    Example::

        >>> import resetguard
        >>> resetguard.history(KeyError())
        ()
    """
    found: tuple[Attempt, ...] = getattr(exc, _HISTORY_ATTR, ())
    # The attempts that raised ``exc`` itself are stored without it (no reference cycle).
    return tuple(a._replace(exception=exc) if a.exception is None else a for a in found)


def outcome_unknown(exc: BaseException) -> bool:
    """True when the operation behind ``exc`` may have taken effect and was not rerun.

    That is: :class:`~resetguard.OutcomeUnknown`, or an error that resetguard (any layer:
    the core, HTTP, databases) surfaced after the operation's point of no return without
    retrying it, or an exception raised ``from`` one of those. Running the operation again
    could apply it twice; find out first (for instance with an idempotency key). An
    idempotent operation that ran out of attempts is *not* an unknown outcome: it may have
    run, but running it again is harmless.

    Example::

        >>> import resetguard
        >>> resetguard.outcome_unknown(ConnectionResetError(104, "reset"))
        False
        >>> resetguard.outcome_unknown(resetguard.OutcomeUnknown("COMMIT in flight"))
        True
    """
    current: BaseException | None = exc
    for _ in range(_CAUSE_DEPTH):
        if current is None:
            return False
        if getattr(current, OUTCOME_ATTR, False):  # OutcomeUnknown, or marked
            return True
        current = current.__cause__
    return False


def _mark_unknown(exc: BaseException) -> None:
    try:
        setattr(exc, OUTCOME_ATTR, True)
        setattr(exc, FINAL_ATTR, True)
    except AttributeError:  # an exception without __dict__ cannot carry the mark
        pass


class Resolution:
    """What a ``resolve`` hook found out about an attempt that failed past its point of no return.

    * ``Resolution.done(value)``: it took effect; the call returns ``value``.
    * ``Resolution.RERUN``: it did not take effect; run the operation again (this counts
      as an attempt: attempts, deadline and budget still apply).
    * ``Resolution.UNKNOWN``: cannot tell; the caller gets an unknown outcome.

    Example::

        >>> from resetguard import Resolution
        >>> Resolution.done(42).value
        42
        >>> Resolution.RERUN
        Resolution.RERUN
    """

    __slots__ = ("outcome", "value")

    RERUN: Resolution
    UNKNOWN: Resolution

    def __init__(self, outcome: str, value: Any = None) -> None:
        self.outcome = outcome
        self.value = value

    @classmethod
    def done(cls, value: Any = None) -> Resolution:
        """The operation took effect; ``value`` is what the call returns."""
        return cls("done", value)

    def __repr__(self) -> str:
        if self.outcome == "done":
            return f"Resolution.done({self.value!r})"
        return f"Resolution.{self.outcome.upper()}"


Resolution.RERUN = Resolution("rerun")
Resolution.UNKNOWN = Resolution("unknown")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's answer for one failed attempt.

    ``retry``: it may run again. ``immediate``: at once, without spending an attempt (the
    stale keep-alive race: a dead pooled connection, not a troubled server). ``reason``
    names why it may or may not; ``"unsafe"`` means the operation may have taken effect
    (the outcome is unknown unless a resolve hook settles it).
    """

    retry: bool
    immediate: bool
    reason: str

    @property
    def outcome_unknown(self) -> bool:
        """The operation may have taken effect and was not retried."""
        return self.reason == "unsafe"


RETRY: Final = Verdict(True, False, "retryable")
NOT_RETRYABLE: Final = Verdict(False, False, "not_retryable")
UNSAFE: Final = Verdict(False, False, "unsafe")


class Facts(Protocol):
    """What the engine reads from an attempt: whether it passed its point of no return."""

    passed: bool


class Judge(Protocol):
    """Pluggable safety rules. The engine asks :meth:`failure` to complete the classified
    failure with what the adapter saw (how far the request got, a reused connection), then
    :meth:`verdict` whether the attempt may run again."""

    def failure(self, exc: BaseException, failure: Failure | None, facts: Any) -> Failure | None:
        """``failure`` completed with the adapter's facts (or returned as it is)."""
        ...

    def verdict(
        self, policy: RetryPolicy, exc: BaseException, failure: Failure | None, facts: Any
    ) -> Verdict:
        """May the attempt run again, and how soon?"""
        ...


def core_verdict(
    policy: RetryPolicy, exc: BaseException, failure: Failure | None, passed: bool
) -> Verdict:
    """The core rule (DESIGN 3.2): retryable, and idempotent or proven safe to redo."""
    if not policy._matches(exc, failure):
        return NOT_RETRYABLE
    idempotent = policy.idempotent
    if passed:
        return RETRY if idempotent is True else UNSAFE
    if idempotent is False and not (failure is not None and failure.nothing_sent):
        return UNSAFE
    return RETRY


_REASONS = {
    "not_retryable": "not a retryable failure",
    "unsafe": "the operation may have taken effect: outcome unknown, not retried",
    "attempts": "attempts exhausted",
    "deadline": "deadline reached",
    "budget": "retry budget exhausted",
    "breaker": "circuit breaker open",
    "body_consumed": "the request body was a stream already consumed: it cannot be replayed",
    "streamed": "part of the response was already handed to the caller",
}


def _fmt_delay(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _what(exc: BaseException, failure: Failure | None) -> str:
    if failure is not None:
        return failure.kind.describe()
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _add_note(exc: BaseException, note: str) -> None:
    try:
        notes = exc.__dict__.setdefault("__notes__", [])
    except AttributeError:  # exception without a __dict__: keep the error, drop the note
        return
    if isinstance(notes, list):
        notes.append(note)


#: A breaker's admission of one attempt: its ticket number and when the attempt began
#: (by the breaker's clock; 0.0 when the breaker does not time calls).
Ticket = tuple[int, float]


def settle(breaker: BreakerLike | None, ticket: Ticket, error: BaseException | None) -> None:
    """Hand a breaker ``ticket`` back: ``error`` ended the attempt (None: success). Used by
    :meth:`Run.release`, and by the inlined first attempts, which build no run unless that
    attempt fails."""
    if breaker is not None:
        number, t0 = ticket
        breaker._release(number, error, breaker._clock() - t0 if breaker._timed else 0.0)


def first_ticket(breaker: BreakerLike | None, budget: BudgetLike | None) -> Ticket | Rejected:
    """Before a call's inlined first attempt: the budget counts the call and the breaker
    gives its ticket, as ``(ticket, t0)``; or the breaker's refusal, which the call's run
    then answers (:func:`first_refused`)."""
    if budget is not None:
        budget._deposit()
    if breaker is None:
        return 0, 0.0
    try:
        return breaker._acquire(), breaker._clock() if breaker._timed else 0.0
    except Rejected as refusal:
        return refusal


def first_refused(run: Run, refusal: Rejected) -> Run:
    """The breaker refused the inlined first attempt: ``run`` is told to wait for the next
    probe (its ``delay``), or the refusal raises."""
    run.delay = run.refused(refusal)
    return run


def first_failed(
    run: Run, ticket: Ticket, exc: BaseException, facts: Facts | None = None
) -> Run | None:
    """The inlined first attempt raised ``exc``: the ticket goes back, and ``run`` (the
    call's run, built now), told of the failure, continues the call; None when ``exc``
    must propagate as it is."""
    settle(run.breaker, ticket, exc)
    if not isinstance(exc, Exception):
        return None  # cancellation or an interrupt: never retried
    return run if run.failed(exc, facts) is not None else None


class Run:
    """One logical call's retry state and decisions.

    Args:
        policy: the :class:`~resetguard.Retry` in force.
        start: when the call began (the policy's clock); now when omitted, and then the
            budget counts the call.
        breaker, budget: used when the policy names none (an HTTP client's per-origin
            breaker and its own budget); the policy's own win.

    What a driver or adapter changes is set on the run after it is built (class-level
    defaults below): ``judge`` (safety rules other than the core's), ``label`` (names the
    call in notes, logs and events; a callable is called on first use), ``raise_unknown``
    (surface an unknown outcome as :class:`~resetguard.OutcomeUnknown` raised from the
    error), ``free_replays`` (immediate replays on top of ``attempts``: HTTP's stale race),
    ``patience`` and the logger.
    """

    # No __slots__: a run is built on the failure path, and class-level defaults let the
    # constructor set only what every run needs (each attribute set costs ~15 ns).
    judge: Judge | None = None
    resolvable = False
    raise_unknown = False
    free_replays = 0
    patience = 0.0
    _log = _log
    _label: str | Callable[[], str] = ""
    attempt = 1
    stale = 0
    patient = 0
    previous_delay = 0.0
    delay = 0.0
    done = False
    value: Any = NO_VALUE
    resolving: tuple[BaseException, Failure | None, float] | None = None
    #: the breaker's ticket for the attempt under way, and when it began (breaker's clock)
    ticket: Ticket = (0, 0.0)
    #: the resolve hook, set by the driver (sync, or a coroutine function for async runs)
    resolve: Callable[[BaseException], Any] | None = None

    def __init__(
        self,
        policy: RetryPolicy,
        start: float | None = None,
        breaker: BreakerLike | None = None,
        budget: BudgetLike | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock = policy.clock or _clock.monotonic
        self.start = clock() if start is None else start
        self.breaker = policy.breaker or breaker
        self.budget = budget = policy.budget or budget
        if policy.patience:
            self.patience = policy.patience
        self.history: list[tuple[int, BaseException, Failure | None, float, float | None]] = []
        if start is None and budget is not None:
            budget._deposit()  # the budget counts each logical call once

    @property
    def label(self) -> str:
        """The call's name in notes, logs and events (default: the policy's name)."""
        label = self._label
        if not label:
            self._label = label = self._default_label()
        elif not isinstance(label, str):
            self._label = label = label()
        return label

    @label.setter
    def label(self, label: str | Callable[[], str]) -> None:
        self._label = label

    def _default_label(self) -> str:
        """The label when none was set (worked out on first use)."""
        return self.policy.name

    # ------------------------------------------------------------------ breaker

    def admit(self) -> float | None:
        """Before an attempt: the breaker's ticket (None), or seconds to wait for it.

        A refusal is waited out when the breaker says when it will probe again (or a
        half-open probe is under way) and that falls within the call's ``patience`` and
        its deadline: the driver sleeps, then asks again. Otherwise a refused first
        attempt raises the breaker's :class:`~resetguard.Rejected` (there is nothing else
        to report), and a refused retry gives up with the last attempt's own exception,
        raised outside any handler so it keeps its own ``__context__``.
        """
        breaker = self.breaker
        if breaker is None:
            return None
        try:
            number = breaker._acquire()
        except Rejected as refusal:
            error = refusal  # answered outside the handler: a raised error keeps its context
        else:
            self.ticket = (number, breaker._clock() if breaker._timed else 0.0)
            return None
        return self.refused(error)

    def refused(self, refusal: Rejected) -> float:
        """The breaker refused the next attempt: seconds to wait for its probe, or raise
        (the refusal itself before any attempt, else the last attempt's own exception)."""
        wait = self._patient_wait(refusal)
        if wait is not None:
            return wait
        if not self.history:
            raise refusal
        _, last, failure, _, _ = self.history[-1]
        self._give_up(last, failure, self._clock() - self.start, "breaker", record=False)
        raise last

    def _patient_wait(self, refusal: Rejected) -> float | None:
        if not self.patience:
            return None
        wait = refusal.retry_after
        if wait is None:
            # no reopening time: isolated (wait forever) or a half-open probe under way
            state = getattr(self.breaker, "state", None)
            if getattr(state, "value", None) != "half_open":
                return None
            wait = _PROBE_POLL
        return self._patient_wait_for(wait, self._clock() - self.start)

    def _patient_wait_for(self, wait: float, elapsed: float) -> float | None:
        """``wait`` if it ends within the call's patience and deadline, else None."""
        if not _clock._switch.enabled:
            return None  # with waits switched off (tests), nothing would pass the time
        deadline = self.policy.deadline
        if elapsed + wait > self.patience or (deadline is not None and elapsed + wait > deadline):
            return None
        return wait

    def release(self, error: BaseException | None) -> None:
        """After an attempt: hand the ticket back with whatever ended it (None: success).

        Cancellation and interrupts included: a ticket never handed back keeps a half-open
        probe slot for good, and the breaker then refuses every later call.
        """
        settle(self.breaker, self.ticket, error)

    # ------------------------------------------------------------------ outcomes

    def succeeded(self, recovered: bool = False) -> None:
        """The attempt succeeded (or a resolve hook found it did): the call is over."""
        self.done = True
        if self.history or recovered:
            # The history holds the failed attempts' exceptions, whose tracebacks hold the
            # driver's frame, which holds this run: drop it so no reference cycle is left.
            self.history.clear()
            if _registry.hooks:
                emit(
                    RetrySucceeded(
                        name=self.label, attempts=self.attempt, elapsed=self._clock() - self.start
                    )
                )

    def failed(self, exc: BaseException, facts: Facts | None = None) -> float | None:
        """The attempt raised ``exc``: seconds to wait before the next one, or None.

        None means no retry now: either the call gave up (re-raise ``exc``), or
        :attr:`resolving` is set and the driver must ask the resolve hook, then call
        :meth:`resolved`. May itself raise :class:`~resetguard.BudgetExhausted` or
        :class:`~resetguard.OutcomeUnknown` from ``exc`` when the policy asks for them.
        """
        p = self.policy
        elapsed = self._clock() - self.start
        failure = classify(exc)
        judge = self.judge
        if judge is not None:
            failure = judge.failure(exc, failure, facts)
        if _registry.hooks:
            emit(
                AttemptFailed(
                    name=self.label,
                    attempt=self.attempt,
                    exception=exc,
                    failure=failure,
                    elapsed=elapsed,
                )
            )
        if getattr(exc, FINAL_ATTR, False) or (exc.__cause__ is not None and outcome_unknown(exc)):
            # resetguard's own refusals and unknown outcomes are final: retrying a
            # refusal defeats the breaker or budget, retrying an unknown outcome may
            # apply it twice.
            verdict = NOT_RETRYABLE
        elif judge is None:
            verdict = core_verdict(p, exc, failure, facts is not None and facts.passed)
        else:
            verdict = judge.verdict(p, exc, failure, facts)
        if not verdict.retry:
            if verdict.reason == "unsafe" and self.resolvable:
                self.resolving = (exc, failure, elapsed)
                return None
            self._give_up(exc, failure, elapsed, verdict.reason)
            return None
        asked = None
        if p.retry_after is not None:
            asked = p.retry_after(exc)
        return self._schedule(exc, failure, elapsed, verdict.immediate, asked)

    def retry_result(self, marker: BaseException, retry_after: float | None) -> float | None:
        """The attempt returned a retryable result (``marker`` stands for it in the history,
        e.g. an HTTP 503): seconds to wait, or None to hand the result to the caller."""
        elapsed = self._clock() - self.start
        return self._schedule(marker, None, elapsed, False, retry_after, annotate=False)

    def resolved(self, outcome: object) -> float | None:
        """The resolve hook's answer (or the exception it raised) for :attr:`resolving`.

        Returns the delay before a rerun, or None: the call is :attr:`done` with
        :attr:`value`, or it gave up (re-raise the error).
        """
        assert self.resolving is not None
        exc, failure, elapsed = self.resolving
        self.resolving = None
        found = outcome.outcome if isinstance(outcome, Resolution) else "unknown"
        if _registry.hooks:
            event = OutcomeResolved(
                name=self.label, attempt=self.attempt, outcome=found, exception=exc
            )
            emit(event)
        if found == "done":
            assert isinstance(outcome, Resolution)
            self.value = outcome.value
            self.succeeded(recovered=True)
            return None
        if found == "rerun":
            return self._schedule(exc, failure, elapsed, False, None)
        if isinstance(outcome, BaseException):
            _add_note(exc, f"resetguard: the resolve hook failed: {outcome!r}")
        elif not isinstance(outcome, Resolution):
            _add_note(exc, f"resetguard: the resolve hook returned {outcome!r}, not a Resolution")
        self._give_up(exc, failure, elapsed, "unsafe")
        return None

    # ------------------------------------------------------------------ scheduling

    def _schedule(
        self,
        exc: BaseException,
        failure: Failure | None,
        elapsed: float,
        immediate: bool,
        asked: float | None,
        *,
        annotate: bool = True,
    ) -> float | None:
        p = self.policy
        deadline = p.deadline
        if immediate and self.stale < self.free_replays:
            if deadline is not None and deadline - elapsed <= 0:
                self._give_up(exc, failure, elapsed, "deadline", annotate=annotate)
                return None
            self.stale += 1
            delay = 0.0
        else:
            tries = self.attempt - self.stale  # the backoff grows with every real retry
            if (
                self.patience
                and failure is not None
                and failure.nothing_sent
                and elapsed < self.patience
            ):
                # the dependency took nothing (refused, not reachable): a restart, or an
                # outage the breaker will cut short; waiting for it spends no attempt
                self.patient += 1
            if tries - self.patient >= p.attempts:
                self._give_up(exc, failure, elapsed, "attempts", annotate=annotate)
                return None
            backoff = p.backoff
            # Backoff.none() (cap 0) waits for nothing: no call to be told so
            delay = (
                backoff.delay(tries, self.previous_delay, p.random or _clock.uniform)
                if backoff.cap
                else 0.0
            )
            if asked is not None and math.isfinite(asked) and asked >= 0:
                delay = asked
            breaker = self.breaker
            if breaker is not None and self.patience:
                probe = breaker._probe_in()
                if probe is not None:
                    # Open: the breaker refuses every attempt before its probe, and a
                    # backoff that sleeps past the probe sleeps through a server's return
                    # (a restart ridden out late can run into the next one).
                    if self._patient_wait_for(probe, elapsed) is None:
                        self._give_up(exc, failure, elapsed, "breaker", annotate=annotate)
                        return None
                    delay = probe if asked is None else max(delay, probe)
            if deadline is not None:
                remaining = deadline - elapsed
                if remaining <= 0:
                    self._give_up(exc, failure, elapsed, "deadline", annotate=annotate)
                    return None
                if delay > remaining:
                    delay = remaining  # a server's Retry-After is clamped here too
            budget = self.budget
            if budget is not None and not budget._withdraw(exc):
                self._give_up(exc, failure, elapsed, "budget", annotate=annotate)
                if budget.raise_on_exhausted:
                    after = budget.retry_after
                    if after is None:
                        when = ""
                    elif math.isinf(after):
                        when = "; only new calls can refill it"
                    else:
                        when = f"; a retry is possible again in {_fmt_delay(after)}"
                    raise BudgetExhausted(
                        f"retry budget {budget.name!r} refused a retry of "
                        f"{self.label or 'the call'}{when}",
                        budget=budget.name,
                        retry_after=after,
                    ) from exc
                return None
            self.previous_delay = delay
        # Plain tuples: Attempt objects are only built if the call gives up.
        self.history.append((self.attempt, exc, failure, elapsed, delay))
        self.attempt += 1
        log = self._log
        if log.isEnabledFor(_INFO):
            log.info(
                "%s, retrying in %s (attempt %d/%d)%s",
                _what(exc, failure),
                _fmt_delay(delay),
                self.attempt,
                p.attempts + self.stale + self.patient,
                f" [{self.label}]" if self.label else "",
            )
        if p.on_retry is not None or _registry.hooks:
            event = RetryScheduled(
                name=self.label,
                attempt=self.attempt - 1,
                max_attempts=p.attempts + self.stale + self.patient,
                delay=delay,
                exception=exc,
                failure=failure,
            )
            emit(event, p.on_retry)  # type: ignore[arg-type]
        self.delay = delay = delay if _clock._switch.enabled else 0.0
        return delay

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
        p = self.policy
        self.done = True
        if record:
            self.history.append((self.attempt, exc, failure, elapsed, None))
        attempts = tuple(Attempt(*entry) for entry in self.history)
        # Neither the exception nor this run may keep a path back to the exception: its
        # traceback holds the driver's frame, so either would leave a cycle for the GC.
        self.history.clear()
        unknown = reason == "unsafe"
        # Worth telling only when a retry happened or was refused for a reason the caller
        # should know; a single attempt of a one-attempt policy is just the error itself.
        noteworthy = len(attempts) > 1 or reason not in ("not_retryable", "attempts")
        if annotate:
            stored = tuple(
                a._replace(exception=None) if a.exception is exc else a  # type: ignore[arg-type]
                for a in attempts
            )
            try:  # noqa: SIM105 - a try costs nothing here; contextlib.suppress builds an object
                setattr(exc, _HISTORY_ATTR, stored)
            except AttributeError:  # an exception without __dict__ keeps no history
                pass
            if unknown:
                _mark_unknown(exc)
            if noteworthy:
                _add_note(exc, self._note(attempts, reason))
        if noteworthy and self._log.isEnabledFor(_WARNING):
            self._log.warning(
                "%s, giving up after %d attempt%s (%s)%s",
                _what(exc, failure),
                len(attempts),
                "" if len(attempts) == 1 else "s",
                _REASONS.get(reason, reason),
                f" [{self.label}]" if self.label else "",
            )
        if p.on_giveup is not None or _registry.hooks:
            event = GaveUp(
                name=self.label,
                attempts=len(attempts),
                reason=reason,
                exception=exc,
                failure=failure,
                elapsed=elapsed,
            )
            local: Callable[[Event], None] | None = p.on_giveup  # type: ignore[assignment]
            emit(event, local)
        if unknown and self.raise_unknown and annotate:
            error = OutcomeUnknown(
                f"{self.label or 'the operation'}: the connection failed after the point of "
                f"no return ({_what(exc, failure)}); it may have taken effect, so it was not "
                "run again"
            )
            setattr(error, _HISTORY_ATTR, attempts)
            raise error from exc

    def _note(self, attempts: tuple[Attempt, ...], reason: str) -> str:
        label = f"{self.label}: " if self.label else ""
        lines = [
            f"resetguard: {label}gave up after {len(attempts)} attempt(s): "
            + _REASONS.get(reason, reason)
        ]
        total = self.policy.attempts + self.stale + self.patient
        for a in attempts:
            what = a.failure.describe() if a.failure is not None else _what(a.exception, None)
            if a.failure is not None and a.failure.reused is not None:
                what += ", reused connection" if a.failure.reused else ", new connection"
            wait = f", waited {_fmt_delay(a.delay)}" if a.delay is not None else ""
            lines.append(f"  attempt {a.number}/{total} at +{a.elapsed:.3f}s: {what}{wait}")
        return "\n".join(lines)
