"""Retry budget: cap retries to a fraction of recent traffic, so retries cannot turn an
outage into a retry storm.

It is Finagle's budget: every call deposits ``ratio`` of a token, every retry withdraws a
whole one, and a floor of ``min_per_second * ttl`` tokens is always there so that a service
with little traffic can still retry. Deposits and withdrawals expire after ``ttl`` seconds
(a sliding window of ``buckets`` time buckets), so the balance follows recent traffic::

    balance = min_per_second * ttl + ratio * calls(last ttl) - retries(last ttl)

A retry needs ``balance >= 1``. With the defaults (20 %, 10/s, 10 s), during a total outage
at a steady ``R`` calls per second the server sees at most ``1 + 0.2 + 10 / R`` attempts per
call, where naive "3 attempts" clients send 3.

One budget can be shared by any number of decorators, clients and pools: pass the same
object to each.

Example::

    >>> import resetguard
    >>> budget = resetguard.RetryBudget("api", ratio=0.2, min_per_second=0)
    >>> for _ in range(10):
    ...     budget.deposit()        # ten calls...
    >>> budget.withdraw(), budget.withdraw(), budget.withdraw()   # ...pay for two retries
    (True, True, False)
    >>> budget.statistics().refusals
    1
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import _events, _linking
from ._validate import check_non_negative, check_positive, check_positive_int, check_ratio

__all__ = ["BudgetBackend", "BudgetLink", "BudgetStatistics", "RetryBudget"]

_log = logging.getLogger("resetguard.budget")

#: Fraction of recent calls that may be retried (Finagle's ``percentCanRetry``).
DEFAULT_RATIO = 0.2
#: Retries per second always allowed, so a quiet service can still retry (Finagle's floor).
DEFAULT_MIN_PER_SECOND = 10.0
#: Seconds a deposit or withdrawal counts (Finagle's ``ttl``).
DEFAULT_TTL = 10.0
#: Time buckets of the window: tokens expire in steps of ttl / 10.
DEFAULT_BUCKETS = 10

# Float products such as 0.1 * 30 land a hair below the integer they mean.
_EPSILON = 1e-9


class BudgetLink(Protocol):
    """A budget's connection to shared state (made by a :class:`BudgetBackend`).

    ``spend`` takes one retry token from the shared budget: ``(allowed, balance)``, or
    ``None`` when the shared state is unreachable and the budget decides alone.
    """

    @property
    def reachable(self) -> bool: ...

    def spend(self) -> tuple[bool, float] | None: ...

    @property
    def retry_after(self) -> float | None: ...


class BudgetBackend(Protocol):
    """Where a budget's state is shared (``resetguard.fleet.RedisBackend``)."""

    def _link_budget(self, budget: RetryBudget) -> BudgetLink: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetStatistics:
    """A snapshot of a :class:`RetryBudget` (from :meth:`RetryBudget.statistics`).

    ``deposits``, ``withdrawals`` and ``refusals`` are totals since creation; the
    ``window_*`` counts and ``balance`` cover the last ``ttl`` seconds.
    ``retry_after`` is ``None`` while a retry would be allowed.
    """

    name: str
    deposits: int
    withdrawals: int
    refusals: int
    window_deposits: int
    window_withdrawals: int
    balance: float
    retry_after: float | None
    #: ``"local"``, or ``"fleet"`` with a shared backend (``"fleet-unreachable"`` while its
    #: store does not answer; ``balance`` and the window counts are always this process's).
    backend: str = "local"


class RetryBudget:
    """A thread-safe retry budget shared by every caller that holds it.

    Args:
        name: names the budget in events, logs and :class:`~resetguard.BudgetExhausted`.
        ratio: fraction of calls that may be retried, in (0, 1].
        min_per_second: retries per second allowed whatever the traffic (≥ 0).
        ttl: seconds a call or retry stays in the budget's memory (> 0).
        buckets: time buckets in the window (≥ 1): deposits expire in steps of ``ttl / buckets``.
        raise_on_exhausted: a refused retry raises :class:`~resetguard.BudgetExhausted`
            (from the original error) instead of re-raising the original error.
        clock: monotonic seconds.
        backend: shares the budget with other processes (``resetguard.fleet.RedisBackend``):
            retries are then paid from one fleet-wide balance; ``None`` keeps it in this
            process.

    Example::

        >>> import resetguard
        >>> shared = resetguard.RetryBudget("payments")   # 20 % of calls + 10/s over 10 s
        >>> shared.withdraw()   # the floor allows retries before any traffic
        True
    """

    __slots__ = (
        "__weakref__",
        "_bucket_deposits",
        "_bucket_withdrawals",
        "_clock",
        "_current",
        "_epoch",
        "_exhausted",
        "_link",
        "_listeners",
        "_lock",
        "_next_roll",
        "_refusals",
        "_reserve",
        "_total_deposits",
        "_total_withdrawals",
        "_w_deposits",
        "_w_withdrawals",
        "_width",
        "buckets",
        "min_per_second",
        "name",
        "raise_on_exhausted",
        "ratio",
        "ttl",
    )

    def __new__(cls, *args: Any, backend: BudgetBackend | None = None, **kwargs: Any) -> Any:
        return _linking.new(cls, backend, _LinkedBudget)

    def __init__(
        self,
        name: str = "retry-budget",
        *,
        ratio: float = DEFAULT_RATIO,
        min_per_second: float = DEFAULT_MIN_PER_SECOND,
        ttl: float = DEFAULT_TTL,
        buckets: int = DEFAULT_BUCKETS,
        raise_on_exhausted: bool = False,
        clock: Callable[[], float] = time.monotonic,
        backend: BudgetBackend | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        if backend is not None and not callable(getattr(backend, "_link_budget", None)):
            raise TypeError(f"backend must be a resetguard.fleet backend, got {backend!r}")
        if not isinstance(raise_on_exhausted, bool):
            raise TypeError(f"raise_on_exhausted must be a bool, got {raise_on_exhausted!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self.name = name
        self.ratio = check_ratio("ratio", ratio)
        self.min_per_second = check_non_negative("min_per_second", min_per_second)
        self.ttl = check_positive("ttl", ttl)
        self.buckets = check_positive_int("buckets", buckets)
        self.raise_on_exhausted = raise_on_exhausted
        self._clock = clock
        self._width = self.ttl / self.buckets
        self._reserve = self.min_per_second * self.ttl
        self._lock = threading.Lock()
        self._listeners: tuple[Callable[[_events.BudgetExhaustedEvent], None], ...] = ()
        # Past buckets live in these lists; the current bucket's deposits are counted by
        # ``_current``, an itertools.count whose next() is atomic, so a deposit needs no lock.
        self._bucket_deposits = [0] * self.buckets
        self._bucket_withdrawals = [0] * self.buckets
        self._w_deposits = 0  # deposits of the past buckets in the window
        self._w_withdrawals = 0  # withdrawals of every bucket in the window
        self._current = itertools.count()
        self._epoch = self._epoch_of(clock())
        self._next_roll = (self._epoch + 1) * self._width
        self._total_deposits = 0  # of the closed buckets; add the current one to read it
        self._total_withdrawals = 0
        self._refusals = 0
        self._exhausted = False
        self._link: BudgetLink | None = None
        if backend is not None:
            self._link = backend._link_budget(self)

    def __repr__(self) -> str:
        return (
            f"<RetryBudget {self.name!r} ratio={self.ratio} "
            f"min_per_second={self.min_per_second} ttl={self.ttl}>"
        )

    # ------------------------------------------------------------------ engine interface

    def _deposit(self) -> None:
        """Record one logical call (its first attempt): adds ``ratio`` of a token."""
        if self._clock() >= self._next_roll:
            with self._lock:
                self._roll(self._clock())
        # A deposit racing a roll-over lands in the bucket that is current when next() runs;
        # it is lost only if the roll-over falls between reading ``_current`` and next().
        next(self._current)

    def _withdraw(self, exception: BaseException | None = None) -> bool:
        """Take one token for a retry; ``False`` (counted, logged, emitted) when refused.

        ``exception`` is the error that would have been retried; it goes into the
        :class:`~resetguard.BudgetExhaustedEvent`.
        """
        with self._lock:
            self._roll(self._clock())
            balance = self._balance()
            if balance >= 1.0 - _EPSILON:
                self._bucket_withdrawals[self._epoch % self.buckets] += 1
                self._w_withdrawals += 1
                self._total_withdrawals += 1
                if not self._exhausted:
                    return True
                self._exhausted = False
                refused = self._refusals
                recovered = True
            else:
                self._refusals += 1
                recovered = False
                first = not self._exhausted
                self._exhausted = True
        if recovered:
            _log.info(
                "retry budget %r allows retries again (%d refused so far)", self.name, refused
            )
            return True
        self._refused(balance, exception, first, "local")
        return False

    def _refused(
        self, balance: float, exception: BaseException | None, first: bool, decided_by: str
    ) -> None:
        """Log (the first refusal of a run), then tell listeners and hooks."""
        if first:
            _log.warning(
                "retry budget %r exhausted (balance %.2f%s): retries are refused until "
                "traffic or time refills it",
                self.name,
                balance,
                "" if decided_by == "local" else f", {decided_by}",
            )
        if self._listeners or _events.hooks_active():
            event = _events.BudgetExhaustedEvent(
                name=self.name, balance=balance, exception=exception, decided_by=decided_by
            )
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    _log.exception("listener %r of retry budget %r raised", listener, self.name)
            _events.emit(event)

    #: Public name of :meth:`_deposit`, for hand-written retry loops.
    deposit = _deposit
    #: Public name of :meth:`_withdraw`, for hand-written retry loops.
    withdraw = _withdraw

    # ------------------------------------------------------------------ public API

    @property
    def balance(self) -> float:
        """Tokens available now (a retry costs 1)."""
        with self._lock:
            self._roll(self._clock())
            return self._balance()

    @property
    def retry_after(self) -> float | None:
        """Seconds until a retry would be allowed without new traffic; ``None`` if it is now.

        ``math.inf`` when only new calls can refill it (``min_per_second * ttl < 1``).
        """
        with self._lock:
            now = self._clock()
            self._roll(now)
            return self._retry_after(now)

    def add_listener(self, listener: Callable[[_events.BudgetExhaustedEvent], None]) -> None:
        """Call ``listener(event)`` for every refused retry (outside the budget's lock).

        Example::

            >>> import resetguard
            >>> budget = resetguard.RetryBudget("tiny", min_per_second=0)
            >>> refused = []
            >>> budget.add_listener(refused.append)
            >>> budget.withdraw()
            False
            >>> refused[0].name, refused[0].balance
            ('tiny', 0.0)
        """
        with self._lock:
            self._listeners = _events.with_listener(self._listeners, listener)

    def remove_listener(self, listener: Callable[[_events.BudgetExhaustedEvent], None]) -> None:
        """Remove a listener added with :meth:`add_listener` (``ValueError`` if absent)."""
        with self._lock:
            self._listeners = _events.without_listener(self._listeners, listener)

    def statistics(self) -> BudgetStatistics:
        """A frozen snapshot of the totals and of the current window."""
        with self._lock:
            now = self._clock()
            self._roll(now)
            return BudgetStatistics(
                name=self.name,
                deposits=self._total_deposits + _peek(self._current),
                withdrawals=self._total_withdrawals,
                refusals=self._refusals,
                window_deposits=self._w_deposits + _peek(self._current),
                window_withdrawals=self._w_withdrawals,
                balance=self._balance(),
                retry_after=self._retry_after(now),
                backend=self._backend_name(),
            )

    def _backend_name(self) -> str:
        return "local"

    # ------------------------------------------------------------------ internals (lock held)

    def _epoch_of(self, now: float) -> int:
        return int(now // self._width)

    def _balance(self) -> float:
        deposits = self._w_deposits + _peek(self._current)
        return self._reserve + self.ratio * deposits - self._w_withdrawals

    def _roll(self, now: float) -> None:
        """Close the current bucket if its time is over and expire buckets older than ttl."""
        epoch = self._epoch_of(now)
        old = self._epoch
        if epoch <= old:
            return  # same bucket, or a clock that stepped back: stay in the current one
        nb = self.buckets
        # Fold the closing bucket's deposits into the lists before expiring anything.
        current, self._current = self._current, itertools.count()
        closed = _peek(current)
        self._bucket_deposits[old % nb] += closed
        self._w_deposits += closed
        self._total_deposits += closed
        # At most nb buckets to clear however long the budget sat idle.
        for e in range(max(old + 1, epoch - nb + 1), epoch + 1):
            j = e % nb
            self._w_deposits -= self._bucket_deposits[j]
            self._w_withdrawals -= self._bucket_withdrawals[j]
            self._bucket_deposits[j] = self._bucket_withdrawals[j] = 0
        self._epoch = epoch
        self._next_roll = (epoch + 1) * self._width

    def _retry_after(self, now: float) -> float | None:
        balance = self._balance()
        if balance >= 1.0 - _EPSILON:
            return None
        nb = self.buckets
        for k in range(1, nb + 1):
            j = (self._epoch + k) % nb  # the bucket that expires at the k-th roll-over
            if k == nb:
                # The current bucket itself expires last.
                balance -= self.ratio * _peek(self._current)
            balance += self._bucket_withdrawals[j] - self.ratio * self._bucket_deposits[j]
            if balance >= 1.0 - _EPSILON:
                return max(0.0, (self._epoch + k) * self._width - now)
        return math.inf


class _LinkedBudget(RetryBudget):
    """A budget whose retries are paid from a shared balance through a :class:`BudgetLink`.

    Deposits stay local (no I/O; the link's syncer flushes them); a retry asks the link
    (one round trip). This process's own window is kept as well, for its statistics and
    for deciding alone while the shared state is unreachable.
    """

    __slots__ = ()

    _link: BudgetLink

    def _backend_name(self) -> str:
        return "fleet" if self._link.reachable else "fleet-unreachable"

    def _withdraw(self, exception: BaseException | None = None) -> bool:
        answer = self._link.spend()
        if answer is None:
            return super()._withdraw(exception)
        allowed, balance = answer
        with self._lock:
            self._roll(self._clock())
            if allowed:
                self._bucket_withdrawals[self._epoch % self.buckets] += 1
                self._w_withdrawals += 1
                self._total_withdrawals += 1
                recovered, self._exhausted = self._exhausted, False
                refused = self._refusals
            else:
                self._refusals += 1
                first, self._exhausted = not self._exhausted, True
        if allowed:
            if recovered:
                _log.info(
                    "retry budget %r allows retries again (%d refused so far, fleet)",
                    self.name,
                    refused,
                )
            return True
        self._refused(balance, exception, first, "fleet")
        return False

    deposit = RetryBudget._deposit
    withdraw = _withdraw

    @property
    def retry_after(self) -> float | None:
        """Seconds until the shared budget allows a retry (as of the last round trip), or
        this process's own estimate while the shared state is unreachable."""
        if self._link.reachable:
            return self._link.retry_after
        return super().retry_after

    def _fleet_deposits(self) -> int:
        """Deposits since creation, for the link to flush the new ones."""
        with self._lock:
            return self._total_deposits + _peek(self._current)


def _peek(counter: itertools.count[int]) -> int:
    """The next value of ``counter`` without consuming it (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])
