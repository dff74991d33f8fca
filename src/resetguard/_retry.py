"""The retry policy (a frozen value) and the sans-I/O decision flow behind every driver.

:class:`Retry` says *what* may be retried and *how long* to wait. :class:`_Run` holds one
logical call's attempt history and decides, for each failure, whether and when to retry.
It does no I/O: the sync and async drivers in ``_api.py`` do the sleeping and calling.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, ParamSpec, Protocol, TypeAlias, TypeVar

from . import _clock, _events
from ._backoff import Backoff
from ._classify import Failure, Kind, classify
from ._events import AttemptFailed, GaveUp, RetryScheduled, RetrySucceeded, emit, hooks_active
from ._exceptions import BudgetExhausted
from ._validate import check_positive, check_positive_int

if TYPE_CHECKING:
    from ._events import Event

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_DEADLINE",
    "DEFAULT_KINDS",
    "Attempt",
    "BreakerLike",
    "BudgetLike",
    "On",
    "Retry",
    "history",
]

_log = logging.getLogger("resetguard.retry")
P = ParamSpec("P")
R = TypeVar("R")

#: The playbook's 3 tries: enough to ride out a stale connection and a restart, few
#: enough that a real outage surfaces within seconds.
DEFAULT_ATTEMPTS = 3
#: 30 s: the playbook's request timeout; no new attempt starts after it.
DEFAULT_DEADLINE = 30.0
#: Connection faults retried by default. DNS, TLS and protocol errors are excluded: they
#: are mostly permanent (bad name, bad certificate, wrong server), so retrying only delays
#: the real error. Pass ``kinds=`` to include them.
DEFAULT_KINDS: frozenset[Kind] = frozenset(
    {
        Kind.RESET,
        Kind.BROKEN_PIPE,
        Kind.ABORTED,
        Kind.REFUSED,
        Kind.TIMEOUT,
        Kind.CLOSED,
        Kind.UNREACHABLE,
    }
)

On: TypeAlias = (
    "type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool] | None"
)


class BreakerLike(Protocol):
    """What the engine needs from a circuit breaker (see :class:`resetguard.CircuitBreaker`)."""

    name: str
    _clock: Callable[[], float]

    def _acquire(self) -> int: ...

    def _release(self, ticket: int, error: BaseException | None, duration: float) -> None: ...


class BudgetLike(Protocol):
    """What the engine needs from a retry budget (see :class:`resetguard.RetryBudget`)."""

    name: str
    raise_on_exhausted: bool

    def _deposit(self) -> None: ...

    def _withdraw(self, exception: BaseException | None = None) -> bool: ...

    @property
    def retry_after(self) -> float | None: ...


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


def _check_on(on: object) -> None:
    if on is None:
        return
    if isinstance(on, type):
        if not issubclass(on, BaseException):
            raise TypeError(
                f"on= must be an exception type, a tuple of them or a predicate; got {on!r}"
            )
        return
    if isinstance(on, tuple):
        for item in on:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise TypeError(f"on= tuple must hold exception types only; got {item!r} in {on!r}")
        return
    if not callable(on):
        raise TypeError(
            f"on= must be an exception type, a tuple of them or a predicate; got {on!r}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """When and how to retry a call. A frozen value: share it freely.

    Args:
        attempts: total attempts including the first (≥ 1).
        deadline: seconds after the first attempt started when no new attempt may start
            (``None``: no deadline). Waits are clamped to what remains.
        backoff: the wait schedule (:class:`Backoff`).
        on: what to retry. ``None`` (default): connection faults of ``kinds`` as decided by
            :func:`resetguard.classify`. Otherwise an exception type, a tuple of types or a
            predicate ``(exc) -> bool``.
        kinds: connection-fault kinds retried when ``on`` is ``None``.
        idempotent: ``False`` limits retries to failures proven to happen before anything
            was sent (``Phase.CONNECT``): a write is never duplicated.
        retry_after: hook returning a server-requested delay for an exception (e.g. from a
            ``Retry-After`` header) or ``None``; it overrides the backoff, clamped to the deadline.
        breaker, budget: a :class:`~resetguard.CircuitBreaker` / :class:`~resetguard.RetryBudget`.
        name: names the operation in logs and events (defaults to the function's name).
        on_retry, on_giveup: hooks receiving :class:`~resetguard.RetryScheduled` /
            :class:`~resetguard.GaveUp`.
        clock, sleep, async_sleep, random: injectable time and randomness (tests).

    Example::

        >>> from resetguard import Retry
        >>> Retry(attempts=5, deadline=10).attempts
        5
    """

    attempts: int = DEFAULT_ATTEMPTS
    deadline: float | None = DEFAULT_DEADLINE
    backoff: Backoff = field(default_factory=Backoff)
    on: On = None
    kinds: frozenset[Kind] = DEFAULT_KINDS
    idempotent: bool = True
    retry_after: Callable[[BaseException], float | None] | None = None
    breaker: BreakerLike | None = None
    budget: BudgetLike | None = None
    name: str = ""
    on_retry: Callable[[RetryScheduled], None] | None = None
    on_giveup: Callable[[GaveUp], None] | None = None
    clock: Callable[[], float] | None = None
    sleep: Callable[[float], None] | None = None
    async_sleep: Callable[[float], Awaitable[None]] | None = None
    random: Callable[[], float] | None = None

    def __post_init__(self) -> None:
        check_positive_int("attempts", self.attempts)
        if self.deadline is not None:
            check_positive("deadline", self.deadline, allow_inf=True)
        if not isinstance(self.backoff, Backoff):
            raise TypeError(f"backoff must be a resetguard.Backoff, got {self.backoff!r}")
        _check_on(self.on)
        kinds: object = self.kinds
        if isinstance(kinds, str | Kind) or not isinstance(kinds, Iterable):
            raise TypeError(f"kinds must be a collection of Kind values, got {kinds!r}")
        converted = set()
        for kind in kinds:
            try:
                converted.add(Kind(kind))
            except ValueError:
                names = ", ".join(k.value for k in Kind)
                raise ValueError(f"unknown kind {kind!r} in kinds=; known: {names}") from None
        object.__setattr__(self, "kinds", frozenset(converted))
        if not isinstance(self.idempotent, bool):
            raise TypeError(f"idempotent must be a bool, got {self.idempotent!r}")
        if self.breaker is not None and not callable(getattr(self.breaker, "_acquire", None)):
            raise TypeError(f"breaker must be a resetguard.CircuitBreaker, got {self.breaker!r}")
        if self.budget is not None and not callable(getattr(self.budget, "_withdraw", None)):
            raise TypeError(f"budget must be a resetguard.RetryBudget, got {self.budget!r}")
        for hook in (
            "retry_after",
            "on_retry",
            "on_giveup",
            "clock",
            "sleep",
            "async_sleep",
            "random",
        ):
            value = getattr(self, hook)
            if value is not None and not callable(value):
                raise TypeError(f"{hook} must be callable, got {value!r}")

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` under this policy.

        Example::

            >>> from resetguard import Retry
            >>> Retry(attempts=2).call(divmod, 7, 2)
            (3, 1)
        """
        from ._api import _drive

        return _drive(self, fn, args, kwargs)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` under this policy (asyncio or trio)."""
        from ._api import _adrive

        return await _adrive(self, fn, args, kwargs)

    def _matches(self, exc: BaseException, failure: Failure | None) -> bool:
        on = self.on
        if on is None:
            return failure is not None and failure.kind in self.kinds
        if isinstance(on, type | tuple):
            return isinstance(exc, on)
        return bool(on(exc))


_HISTORY_ATTR = "__resetguard_history__"


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


def _fmt_delay(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _what(exc: BaseException, failure: Failure | None) -> str:
    return failure.kind.describe() if failure is not None else type(exc).__name__


def _add_note(exc: BaseException, note: str) -> None:
    try:
        notes = exc.__dict__.setdefault("__notes__", [])
    except AttributeError:  # exception without a __dict__: keep the error, drop the note
        return
    if isinstance(notes, list):
        notes.append(note)


class _Run:
    """One logical call's retry state. Created lazily, on the first failure."""

    __slots__ = ("_clock", "_random", "attempt", "history", "policy", "previous_delay", "start")

    def __init__(self, policy: Retry, start: float) -> None:
        self.policy = policy
        self._clock = policy.clock or _clock.monotonic
        self._random = policy.random or _clock.uniform
        self.start = start
        self.attempt = 1
        self.history: list[tuple[int, BaseException, Failure | None, float, float | None]] = []
        self.previous_delay = 0.0

    def failed(self, exc: BaseException) -> float | None:
        """After attempt ``self.attempt`` raised ``exc``: seconds to wait, or None to give up."""
        p = self.policy
        elapsed = self._clock() - self.start
        failure = classify(exc)
        name = p.name
        if _events._registry.hooks:
            emit(
                AttemptFailed(
                    name=name, attempt=self.attempt, exception=exc, failure=failure, elapsed=elapsed
                )
            )
        reason = None
        delay = 0.0
        on = p.on
        if on is None:
            matches = failure is not None and failure.kind in p.kinds
        else:
            matches = p._matches(exc, failure)
        if not matches:
            reason = "not_retryable"
        elif not p.idempotent and not (failure is not None and failure.nothing_sent):
            reason = "unsafe"
        elif self.attempt >= p.attempts:
            reason = "attempts"
        else:
            delay = p.backoff.delay(self.attempt, self.previous_delay, self._random)
            if p.retry_after is not None:
                asked = p.retry_after(exc)
                if asked is not None and math.isfinite(asked) and asked >= 0:
                    delay = asked
            if p.deadline is not None:
                remaining = p.deadline - elapsed
                if remaining <= 0:
                    reason = "deadline"
                elif delay > remaining:
                    delay = remaining
            if reason is None and p.budget is not None and not p.budget._withdraw(exc):
                reason = "budget"
        if reason is not None:
            self._give_up(exc, failure, elapsed, reason)
            if reason == "budget" and p.budget is not None and p.budget.raise_on_exhausted:
                raise BudgetExhausted(
                    f"retry budget {p.budget.name!r} refused a retry of {name or 'the call'}",
                    budget=p.budget.name,
                    retry_after=p.budget.retry_after,
                ) from exc
            return None
        # Plain tuples: Attempt objects are only built if the call gives up.
        self.history.append((self.attempt, exc, failure, elapsed, delay))
        self.attempt += 1
        self.previous_delay = delay
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "%s, retrying in %s (attempt %d/%d)%s",
                _what(exc, failure),
                _fmt_delay(delay),
                self.attempt,
                p.attempts,
                f" [{name}]" if name else "",
            )
        if p.on_retry is not None or _events._registry.hooks:
            event = RetryScheduled(
                name=name,
                attempt=self.attempt - 1,
                max_attempts=p.attempts,
                delay=delay,
                exception=exc,
                failure=failure,
            )
            emit(event, p.on_retry)  # type: ignore[arg-type]
        return delay if _clock._switch.enabled else 0.0

    def rejected(self, reason: str) -> BaseException:
        """A breaker refused the next attempt: give up with the last user exception."""
        _, exception, failure, _, _ = self.history[-1]
        self._give_up(exception, failure, self._clock() - self.start, reason, record=False)
        return exception

    def succeeded(self) -> None:
        # The history holds the failed attempts' exceptions, whose tracebacks hold the
        # driver's frame, which holds this run: drop it so no reference cycle is left
        # for the garbage collector after a call that recovered.
        self.history.clear()
        if hooks_active():
            emit(
                RetrySucceeded(
                    name=self.policy.name, attempts=self.attempt, elapsed=self._clock() - self.start
                )
            )

    def _give_up(
        self,
        exc: BaseException,
        failure: Failure | None,
        elapsed: float,
        reason: str,
        *,
        record: bool = True,
    ) -> None:
        p = self.policy
        if record:
            self.history.append((self.attempt, exc, failure, elapsed, None))
        attempts = tuple(Attempt(*entry) for entry in self.history)
        # Neither the exception nor this run may keep a path back to the exception: its
        # traceback holds the driver's frame, so either would leave a cycle for the GC.
        self.history.clear()
        stored = tuple(
            a._replace(exception=None) if a.exception is exc else a  # type: ignore[arg-type]
            for a in attempts
        )
        try:  # noqa: SIM105 - a try costs nothing here; contextlib.suppress builds an object
            setattr(exc, _HISTORY_ATTR, stored)
        except AttributeError:  # an exception without __dict__ keeps no history
            pass
        # Worth telling only when a retry happened or was refused for a reason the caller
        # should know; a single attempt of a one-attempt policy is just the error itself.
        noteworthy = len(attempts) > 1 or reason in ("unsafe", "budget", "breaker", "deadline")
        if noteworthy:
            _add_note(exc, _note(attempts, reason, p))
        if noteworthy and _log.isEnabledFor(logging.WARNING):
            _log.warning(
                "%s, giving up after %d attempt%s (%s)%s",
                _what(exc, failure),
                len(attempts),
                "" if len(attempts) == 1 else "s",
                _REASONS[reason],
                f" [{p.name}]" if p.name else "",
            )
        if p.on_giveup is not None or hooks_active():
            event = GaveUp(
                name=p.name,
                attempts=len(attempts),
                reason=reason,
                exception=exc,
                failure=failure,
                elapsed=elapsed,
            )
            local: Callable[[Event], None] | None = p.on_giveup  # type: ignore[assignment]
            emit(event, local)


_REASONS = {
    "not_retryable": "not a retryable failure",
    "unsafe": "the operation may have reached the server: outcome unknown, not retried",
    "attempts": "attempts exhausted",
    "deadline": "deadline reached",
    "budget": "retry budget exhausted",
    "breaker": "circuit breaker open",
}


def _note(attempts: tuple[Attempt, ...], reason: str, policy: Retry) -> str:
    lines = [f"resetguard: gave up after {len(attempts)} attempt(s): {_REASONS[reason]}"]
    for a in attempts:
        what = a.failure.describe() if a.failure is not None else type(a.exception).__name__
        wait = f", waited {_fmt_delay(a.delay)}" if a.delay is not None else ""
        lines.append(f"  attempt {a.number}/{policy.attempts} at +{a.elapsed:.3f}s: {what}{wait}")
    return "\n".join(lines)
