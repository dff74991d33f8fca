"""Retry policy values: what may be retried, how long to wait, the seams to breakers and budgets.

The bottom layer of the retry core: frozen values and protocols, no decisions and no I/O.
The engine (``_engine``) reads a :class:`RetryPolicy`; the public :class:`resetguard.Retry`
is the same value with the calling methods added one layer up (``_retry``), so the value
never imports the code that drives it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from ._backoff import Backoff
from ._classify import Failure, Kind
from ._events import GaveUp, RetryScheduled
from ._validate import check_non_negative, check_positive, check_positive_int

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_DEADLINE",
    "DEFAULT_KINDS",
    "BreakerLike",
    "BudgetLike",
    "On",
    "RetryPolicy",
]

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
    #: whether ``_release`` reads the attempt's duration; if not, the engine passes 0.0
    _timed: bool

    def _acquire(self) -> int: ...

    def _release(self, ticket: int, error: BaseException | None, duration: float) -> None: ...

    def _probe_in(self) -> float | None: ...


class BudgetLike(Protocol):
    """What the engine needs from a retry budget (see :class:`resetguard.RetryBudget`)."""

    name: str
    raise_on_exhausted: bool

    def _deposit(self) -> None: ...

    def _withdraw(self, exception: BaseException | None = None) -> bool: ...

    @property
    def retry_after(self) -> float | None: ...


#: What the engine calls on a breaker and a budget (:class:`BreakerLike`, :class:`BudgetLike`).
_BREAKER_CALLS = ("_acquire", "_release", "_probe_in")
_BUDGET_CALLS = ("_deposit", "_withdraw")


def _check_guard(
    value: object, what: str, calls: tuple[str, ...], attrs: tuple[str, ...], kind: str
) -> None:
    """A policy's breaker or budget has all the engine uses (else it fails mid-call)."""
    if not all(callable(getattr(value, name, None)) for name in calls) or not all(
        hasattr(value, name) for name in attrs
    ):
        raise TypeError(f"{what} must be a resetguard.{kind}, got {value!r}")


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
class RetryPolicy:
    """The fields and checks of :class:`resetguard.Retry` (which see), without its methods."""

    attempts: int = DEFAULT_ATTEMPTS
    deadline: float | None = DEFAULT_DEADLINE
    backoff: Backoff = field(default_factory=Backoff)
    on: On = None
    kinds: frozenset[Kind] = DEFAULT_KINDS
    idempotent: bool | None = None
    patience: float = 0.0
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
        check_non_negative("patience", self.patience)
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
        if self.idempotent is not None and not isinstance(self.idempotent, bool):
            raise TypeError(f"idempotent must be True, False or None, got {self.idempotent!r}")
        if self.breaker is not None:
            _check_guard(self.breaker, "breaker", _BREAKER_CALLS, ("_timed",), "CircuitBreaker")
        if self.budget is not None:
            _check_guard(self.budget, "budget", _BUDGET_CALLS, (), "RetryBudget")
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

    def _matches(self, exc: BaseException, failure: Failure | None) -> bool:
        on = self.on
        if on is None:
            return failure is not None and failure.kind in self.kinds
        if isinstance(on, type | tuple):
            return isinstance(exc, on)
        return bool(on(exc))
