"""Circuit breaker: stop calling a dependency that keeps resetting connections.

States and moves (``CircuitState``)::

    CLOSED ──trip──▶ OPEN ──open duration elapsed──▶ HALF_OPEN ──M probes succeed──▶ CLOSED
                      ▲                                  │
                      └──────────── a probe fails ───────┘

A *trip* is any enabled trigger: ``failure_threshold`` consecutive failures, a failure rate
or a slow-call rate over a sliding window (the last ``window`` calls, or the last
``window_duration`` seconds) once ``minimum_calls`` are in it. Only the failures the breaker
*counts* matter: connection faults by default (:func:`resetguard.classify`), any predicate
with ``counts=``. Other exceptions are ignored: they neither fail nor succeed.

The hot path (closed breaker, successful call, no rate trigger) takes no lock: one attribute
read before the call, one atomic counter increment after. With a rate trigger, outcomes are
recorded under a short lock in preallocated counters. Nothing is allocated per call.

Example::

    >>> import resetguard
    >>> breaker = resetguard.CircuitBreaker("db", failure_threshold=3)
    >>> @breaker
    ... def query() -> int:
    ...     return 42
    >>> query(), breaker.state.value
    (42, 'closed')
"""

from __future__ import annotations

import collections
import enum
import functools
import inspect
import itertools
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from random import random as _default_random
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from . import _events, _linking
from ._classify import classify
from ._exceptions import CircuitOpen
from ._validate import check_non_negative, check_positive, check_positive_int, check_ratio

__all__ = [
    "BreakerBackend",
    "BreakerLink",
    "BreakerPolicy",
    "BreakerStatistics",
    "CircuitBreaker",
    "CircuitState",
]

_log = logging.getLogger("resetguard.breaker")

P = ParamSpec("P")
R = TypeVar("R")

#: Consecutive counted failures that open the breaker. 5 is what pybreaker, circuitbreaker,
#: purgatory, Finagle and Envoy all use: long enough to ride out a single stale keep-alive
#: reset, short enough to stop hammering a dead peer within a second at normal traffic.
DEFAULT_FAILURE_THRESHOLD = 5
#: Calls in the count-based window (resilience4j's default).
DEFAULT_WINDOW = 100
#: Calls needed in the window before a rate is judged: one failure in 5 calls is a 20 % rate
#: but means nothing; resilience4j waits for 100, which takes minutes at low traffic.
DEFAULT_MINIMUM_CALLS = 20
#: Buckets of a time-based window: the window slides in steps of window_duration / 10.
DEFAULT_WINDOW_BUCKETS = 10
#: First open period, seconds (Envoy's base ejection time).
DEFAULT_OPEN_DURATION = 30.0
#: Each consecutive trip without closing in between multiplies the open period...
DEFAULT_OPEN_DURATION_MULTIPLIER = 2.0
#: ...up to this cap (Finagle's and Envoy's 300 s).
DEFAULT_OPEN_DURATION_MAX = 300.0
#: The open period is shortened by up to this fraction at random, so that a fleet of
#: processes tripped together does not send its probes at the same instant.
DEFAULT_JITTER = 0.2
#: Probe calls allowed in flight at once while half-open.
DEFAULT_HALF_OPEN_PROBES = 1
#: Successful probes that close the breaker again.
DEFAULT_SUCCESS_THRESHOLD = 1

# Internal state codes: the low two bits of ``_sg`` (state + generation in one int, so the
# lock-free fast path reads both atomically with one attribute load).
_CLOSED, _OPEN, _HALF_OPEN = 0, 1, 2


class CircuitState(str, enum.Enum):
    """Where a :class:`CircuitBreaker` is."""

    CLOSED = "closed"  #: calls go through; outcomes are recorded
    OPEN = "open"  #: calls are rejected with :class:`~resetguard.CircuitOpen`
    HALF_OPEN = "half_open"  #: a few probe calls go through to test the dependency


_STATES = (CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN)


# Built-in exceptions that classify() always recognises, whatever their errno or chain:
# checking their exact type first saves the chain walk on the common failure path.
_ALWAYS_FAULTS = frozenset(
    {
        BrokenPipeError,
        ConnectionAbortedError,
        ConnectionRefusedError,
        ConnectionResetError,
        TimeoutError,
    }
)


class BreakerLink(Protocol):
    """A breaker's connection to shared state (made by a :class:`BreakerBackend`).

    The breaker calls it only off the hot path: to claim a half-open probe, and after an
    outcome that tripped it or ended a probe. ``claim`` returns ``(granted, wait)`` from the
    shared state, or ``None`` when that state is unreachable and the breaker decides alone.
    """

    claiming: bool

    @property
    def reachable(self) -> bool: ...

    def claim(self) -> tuple[bool, float] | None: ...

    def tripped(self) -> None: ...

    def probe_done(self, outcome: int) -> None: ...


class BreakerBackend(Protocol):
    """Where a breaker's state is shared (``resetguard.fleet.RedisBackend``)."""

    def _link_breaker(self, breaker: CircuitBreaker) -> BreakerLink: ...


def _default_counts(error: BaseException) -> bool:
    return type(error) in _ALWAYS_FAULTS or classify(error) is not None


def _check_optional_ratio(name: str, value: float | None) -> float | None:
    return None if value is None else check_ratio(name, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """The validated, immutable configuration of a :class:`CircuitBreaker`.

    ``None`` disables a trigger. At least one of ``failure_threshold``, ``failure_rate`` and
    ``slow_call_rate`` must be enabled. ``window_duration`` (seconds) switches the sliding
    window from the last ``window`` calls to the last ``window_duration`` seconds.

    Example::

        >>> import resetguard
        >>> resetguard.BreakerPolicy(failure_threshold=None, failure_rate=0.5).minimum_calls
        20
    """

    failure_threshold: int | None = DEFAULT_FAILURE_THRESHOLD
    failure_rate: float | None = None
    slow_call_rate: float | None = None
    slow_call_duration: float | None = None
    window: int = DEFAULT_WINDOW
    window_duration: float | None = None
    window_buckets: int = DEFAULT_WINDOW_BUCKETS
    minimum_calls: int = DEFAULT_MINIMUM_CALLS
    half_open_probes: int = DEFAULT_HALF_OPEN_PROBES
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    open_duration: float = DEFAULT_OPEN_DURATION
    open_duration_multiplier: float = DEFAULT_OPEN_DURATION_MULTIPLIER
    open_duration_max: float = DEFAULT_OPEN_DURATION_MAX
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if self.failure_threshold is not None:
            check_positive_int("failure_threshold", self.failure_threshold)
        _check_optional_ratio("failure_rate", self.failure_rate)
        _check_optional_ratio("slow_call_rate", self.slow_call_rate)
        if self.slow_call_duration is not None:
            check_positive("slow_call_duration", self.slow_call_duration)
        if (self.slow_call_rate is None) != (self.slow_call_duration is None):
            raise ValueError(
                "slow_call_rate and slow_call_duration go together, got "
                f"slow_call_rate={self.slow_call_rate!r}, "
                f"slow_call_duration={self.slow_call_duration!r}"
            )
        if self.failure_threshold is None and not self.windowed:
            raise ValueError(
                "the breaker could never open: failure_threshold, failure_rate and "
                "slow_call_rate are all None (enable at least one)"
            )
        check_positive_int("window", self.window)
        check_positive_int("minimum_calls", self.minimum_calls)
        check_positive_int("window_buckets", self.window_buckets)
        if self.window_duration is None:
            if self.minimum_calls > self.window:
                raise ValueError(
                    f"window={self.window!r} calls is too small for minimum_calls="
                    f"{self.minimum_calls!r}: the rate could never be judged"
                )
        else:
            check_positive("window_duration", self.window_duration)
        check_positive_int("half_open_probes", self.half_open_probes)
        check_positive_int("success_threshold", self.success_threshold)
        check_positive("open_duration", self.open_duration)
        multiplier = check_positive("open_duration_multiplier", self.open_duration_multiplier)
        if multiplier < 1:
            raise ValueError(
                f"open_duration_multiplier must be >= 1, got {self.open_duration_multiplier!r}"
            )
        check_positive("open_duration_max", self.open_duration_max)
        if self.open_duration_max < self.open_duration:
            raise ValueError(
                f"open_duration_max={self.open_duration_max!r} is below "
                f"open_duration={self.open_duration!r}"
            )
        jitter = check_non_negative("jitter", self.jitter)
        if jitter >= 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")

    @property
    def windowed(self) -> bool:
        """True when a rate trigger needs the sliding window."""
        return self.failure_rate is not None or self.slow_call_rate is not None

    def open_period(self, trip: int, random: Callable[[], float]) -> float:
        """Seconds the breaker stays open after its ``trip``-th consecutive trip (1-based)."""
        period = self.open_duration
        multiplier = self.open_duration_multiplier
        if trip > 1 and multiplier > 1:
            ceiling = self.open_duration_max
            # Past the cap, skip the power: a long outage would overflow it.
            if (trip - 1) * math.log(multiplier) >= math.log(ceiling / period):
                period = ceiling
            else:
                period = min(ceiling, period * multiplier ** (trip - 1))
        if self.jitter:
            period *= 1.0 - self.jitter * random()
        return period


#: The breaker resetguard's long-lived clients give each server they talk to (an HTTP
#: origin, a Redis server). 5 consecutive connection faults: Envoy's outlier detection and
#: Finagle's FailureAccrual both eject a host after 5. Open 0.5 s, growing 1.5-fold up to
#: 30 s: short enough that a patient request meets the next probe within a restart, and
#: growing so that a lasting outage soon outlasts every request's patience and fails them
#: fast (one probe per open period instead of 3 attempts per request). 10 % jitter
#: spreads the probes of a fleet.
SERVER_BREAKER = BreakerPolicy(
    failure_threshold=5,
    open_duration=0.5,
    open_duration_multiplier=1.5,
    open_duration_max=30.0,
    jitter=0.1,
)
#: The patience that goes with :data:`SERVER_BREAKER`: rides out a restart of about 2 s
#: whatever the jitter and the restart's own latency did. The breaker opens ``o`` seconds
#: after the first refusal (at most 1.5 s: the backoff's 4 waits before the 5th failure,
#: 0.1 + 0.2 + 0.4 + 0.8 s; a busy client opens it almost at once), then probes after
#: open periods of 0.5, 0.75, 1.125 and 1.69 s, each up to 10 % shorter: the third probe
#: comes 2.14-2.38 s after opening, the fourth 3.65-4.06 s. When the third probe still
#: meets the restart (``o`` small, a server slow to listen again), the fourth one falls
#: within 5 s of the first failure for any ``o`` up to 0.94 s; for a larger ``o`` the third
#: probe already comes 3 s after the first refusal. (4 s left no room for the fourth probe
#: when the breaker opened at once and the third probe came before a server slow to listen
#: again; 3 s was measured too short: a restart was surfaced when the breaker opened
#: 0.75 s in.) Two restarts less than the open period apart are one longer outage to the
#: breaker, which may not probe while the server is briefly up. The arithmetic holds because
#: a retry waits for the breaker's next probe, not for its own backoff: a backoff of 2.6 s
#: slept past the probe that would have met the server back, into its next restart.
SERVER_PATIENCE = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerStatistics:
    """A consistent snapshot of a breaker's counters (from :meth:`CircuitBreaker.statistics`).

    ``calls`` counts completed calls: ``successes + failures + ignored``. ``failure_rate`` and
    ``slow_call_rate`` are ``None`` while the window holds fewer than ``minimum_calls``.
    """

    name: str
    state: CircuitState
    calls: int
    successes: int
    failures: int
    ignored: int
    slow_calls: int
    rejected: int
    trips: int
    consecutive_failures: int
    window_calls: int
    window_failures: int
    window_slow_calls: int
    failure_rate: float | None
    slow_call_rate: float | None
    half_open_in_flight: int
    half_open_successes: int
    retry_after: float | None
    #: ``"local"``, or ``"fleet"`` with a shared backend (``"fleet-unreachable"`` while its
    #: store does not answer and this process decides alone).
    backend: str = "local"


class CircuitBreaker:
    """A thread- and asyncio-safe circuit breaker.

    Use it as a decorator (sync or async), with :meth:`call` / :meth:`acall`, or hand it to
    ``resetguard.retry(breaker=...)``. A rejected call raises
    :class:`~resetguard.CircuitOpen` carrying ``retry_after``.

    Arguments are those of :class:`BreakerPolicy`, plus:

    Args:
        name: names the breaker in events, logs and errors.
        counts: ``counts(exc) -> bool`` decides which exceptions are failures
            (default: connection faults, ``resetguard.classify(exc) is not None``).
        clock: monotonic seconds; durations passed to ``_release`` must use it.
        random: returns floats in [0, 1) for the open-period jitter.
        backend: shares the state with other processes (``resetguard.fleet.RedisBackend``);
            ``None`` keeps it in this process.

    Example::

        >>> import resetguard
        >>> breaker = resetguard.CircuitBreaker("api", failure_threshold=2, jitter=0)
        >>> def down() -> None:
        ...     raise ConnectionResetError(104, "Connection reset by peer")
        >>> for _ in range(2):
        ...     try:
        ...         breaker.call(down)
        ...     except ConnectionResetError:
        ...         pass
        >>> breaker.state.value
        'open'
        >>> try:
        ...     breaker.call(down)
        ... except resetguard.CircuitOpen as exc:
        ...     print(f"retry after {exc.retry_after:.0f} s")
        retry after 30 s
    """

    __slots__ = (
        "__weakref__",
        "_bucket_calls",
        "_bucket_failures",
        "_bucket_slow",
        "_bucket_width",
        "_clock",
        "_consecutive",
        "_counts",
        "_delivering",
        "_epoch",
        "_failures",
        "_fast_successes",
        "_fast_ticket",
        "_half_open_in_flight",
        "_half_open_successes",
        "_ignored",
        "_isolated",
        "_link",
        "_listeners",
        "_lock",
        "_open_until",
        "_pending",
        "_random",
        "_rejected",
        "_ring",
        "_ring_filled",
        "_ring_pos",
        "_sg",
        "_slow_calls",
        "_slow_duration",
        "_streak",
        "_successes",
        "_threshold",
        "_timed",
        "_timed_window",
        "_trips",
        "_w_calls",
        "_w_failures",
        "_w_slow",
        "_windowed",
        "name",
        "policy",
    )

    def __new__(cls, *args: Any, backend: BreakerBackend | None = None, **kwargs: Any) -> Any:
        return _linking.new(cls, backend, _LinkedBreaker)

    def __init__(
        self,
        name: str = "breaker",
        *,
        failure_threshold: int | None = DEFAULT_FAILURE_THRESHOLD,
        failure_rate: float | None = None,
        slow_call_rate: float | None = None,
        slow_call_duration: float | None = None,
        window: int = DEFAULT_WINDOW,
        window_duration: float | None = None,
        window_buckets: int = DEFAULT_WINDOW_BUCKETS,
        minimum_calls: int = DEFAULT_MINIMUM_CALLS,
        half_open_probes: int = DEFAULT_HALF_OPEN_PROBES,
        success_threshold: int = DEFAULT_SUCCESS_THRESHOLD,
        open_duration: float = DEFAULT_OPEN_DURATION,
        open_duration_multiplier: float = DEFAULT_OPEN_DURATION_MULTIPLIER,
        open_duration_max: float = DEFAULT_OPEN_DURATION_MAX,
        jitter: float = DEFAULT_JITTER,
        counts: Callable[[BaseException], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _default_random,
        backend: BreakerBackend | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        if backend is not None and not callable(getattr(backend, "_link_breaker", None)):
            raise TypeError(f"backend must be a resetguard.fleet backend, got {backend!r}")
        for arg, value in (("counts", counts), ("clock", clock), ("random", random)):
            if value is not None and not callable(value):
                raise TypeError(f"{arg} must be callable, got {value!r}")
        self.policy = policy = BreakerPolicy(
            failure_threshold=failure_threshold,
            failure_rate=failure_rate,
            slow_call_rate=slow_call_rate,
            slow_call_duration=slow_call_duration,
            window=window,
            window_duration=window_duration,
            window_buckets=window_buckets,
            minimum_calls=minimum_calls,
            half_open_probes=half_open_probes,
            success_threshold=success_threshold,
            open_duration=open_duration,
            open_duration_multiplier=open_duration_multiplier,
            open_duration_max=open_duration_max,
            jitter=jitter,
        )
        self.name = name
        self._counts = counts or _default_counts
        self._clock = clock
        self._random = random
        self._lock = threading.Lock()
        self._pending: collections.deque[_events.BreakerStateChanged] = collections.deque()
        self._delivering = threading.Lock()
        self._listeners: tuple[Callable[[_events.BreakerStateChanged], None], ...] = ()
        self._sg = _CLOSED
        # The ticket of a closed, windowless breaker's current generation (-1 otherwise): a
        # success carrying it needs no lock, only the C-level atomic counter below.
        self._fast_ticket = -1
        self._fast_successes = itertools.count()
        self._threshold = policy.failure_threshold or 0
        # math.inf disables the slow check with a single float comparison on the hot path.
        self._slow_duration = (
            policy.slow_call_duration if policy.slow_call_duration is not None else math.inf
        )
        #: whether _release reads an attempt's duration (slow calls); if not, callers
        #: pass 0.0 and read no clock
        self._timed = self._slow_duration != math.inf
        self._windowed = policy.windowed
        self._timed_window = policy.window_duration is not None
        self._ring = bytearray(policy.window if self._windowed and not self._timed_window else 0)
        nb = policy.window_buckets if self._timed_window else 0
        self._bucket_calls = [0] * nb
        self._bucket_failures = [0] * nb
        self._bucket_slow = [0] * nb
        self._bucket_width = (policy.window_duration or 1.0) / (nb or 1)
        self._successes = self._failures = self._ignored = self._slow_calls = 0
        self._rejected = self._trips = 0
        self._isolated = False
        self._open_until = 0.0
        self._streak = 0  # consecutive trips without closing in between
        self._consecutive = self._half_open_in_flight = self._half_open_successes = 0
        self._w_calls = self._w_failures = self._w_slow = 0
        self._ring_pos = self._ring_filled = 0
        self._epoch: int | None = None
        self._set_fast_ticket()
        self._link: BreakerLink | None = None
        if backend is not None:
            self._link = backend._link_breaker(self)

    @classmethod
    def from_policy(
        cls,
        policy: BreakerPolicy,
        name: str = "breaker",
        *,
        counts: Callable[[BaseException], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _default_random,
        backend: BreakerBackend | None = None,
    ) -> CircuitBreaker:
        """A new breaker (its own state) configured by a shared :class:`BreakerPolicy`.

        Example::

            >>> import resetguard
            >>> strict = resetguard.BreakerPolicy(failure_threshold=2, open_duration=5)
            >>> resetguard.CircuitBreaker.from_policy(strict, "a").policy == strict
            True
        """
        if not isinstance(policy, BreakerPolicy):
            raise TypeError(f"policy must be a resetguard.BreakerPolicy, got {policy!r}")
        fields = {field: getattr(policy, field) for field in policy.__dataclass_fields__}
        return cls(name, counts=counts, clock=clock, random=random, backend=backend, **fields)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state.value}>"

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> CircuitState:
        """The current state (an elapsed open period turns into ``HALF_OPEN`` here)."""
        if self._sg & 3 == _OPEN and not self._isolated:
            self._maybe_half_open()
        return _STATES[self._sg & 3]

    def _wrapper_parts(
        self,
    ) -> tuple[
        Callable[[], int],
        Callable[[int, BaseException | None, float], None],
        Callable[[], float],
        bool,
        Callable[[], int],
    ]:
        """What a decorated function's wrapper binds once, for its inlined fast paths:
        the slow acquire, the release, the clock, whether durations are timed, and the
        fast-success counter."""
        return (
            self._acquire_slow,
            self._release,
            self._clock,
            self._slow_duration != math.inf,
            self._fast_successes.__next__,
        )

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function so every call goes through the breaker."""
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, R]", self._wrap_async(fn))
        breaker = self
        acquire, release, clock, timed, succeeded = self._wrapper_parts()

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            # _acquire and _release's fast paths, inlined: this wrapper is the hot path.
            sg = breaker._sg
            ticket = acquire() if sg & 3 else sg << 1
            if timed:
                start = clock()
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    release(ticket, exc, clock() - start)
                    raise
                release(ticket, None, clock() - start)
                return result
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                release(ticket, exc, 0.0)
                raise
            if ticket == breaker._fast_ticket:
                succeeded()
                breaker._consecutive = 0
            else:
                release(ticket, None, 0.0)
            return result

        return guarded

    def _wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        breaker = self
        acquire, release, clock, timed, succeeded = self._wrapper_parts()

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            # The sync wrapper's shape; the lock is only ever taken between awaits.
            sg = breaker._sg
            ticket = acquire() if sg & 3 else sg << 1
            start = clock() if timed else 0.0
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                release(ticket, exc, clock() - start if timed else 0.0)
                raise
            if ticket == breaker._fast_ticket:
                succeeded()
                breaker._consecutive = 0
            else:
                release(ticket, None, clock() - start if timed else 0.0)
            return result

        return guarded

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        Example::

            >>> import resetguard
            >>> resetguard.CircuitBreaker("calc").call(divmod, 7, 2)
            (3, 1)
        """
        ticket = self._acquire()
        start = self._clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._release(ticket, exc, self._clock() - start)
            raise
        self._release(ticket, None, self._clock() - start)
        return result

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` through the breaker (the lock is never held across it).

        Example::

            >>> import asyncio, resetguard
            >>> async def ping() -> str:
            ...     return "pong"
            >>> asyncio.run(resetguard.CircuitBreaker("svc").acall(ping))
            'pong'
        """
        ticket = self._acquire()
        start = self._clock()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._release(ticket, exc, self._clock() - start)
            raise
        self._release(ticket, None, self._clock() - start)
        return result

    def isolate(self) -> None:
        """Force the breaker open until :meth:`reset`: every call is rejected.

        Example::

            >>> import resetguard
            >>> breaker = resetguard.CircuitBreaker("maintenance")
            >>> breaker.isolate()
            >>> breaker.state.value
            'open'
            >>> breaker.reset()
        """
        with self._lock:
            self._isolated = True
            event = self._move(_OPEN, "isolated", self._clock())
        self._announce(event)

    def reset(self) -> None:
        """Close the breaker and forget every recorded outcome (the totals are kept)."""
        with self._lock:
            self._isolated = False
            self._streak = 0
            event = self._move(_CLOSED, "reset", self._clock())
            self._clear_counts()
        self._announce(event)

    def add_listener(self, listener: Callable[[_events.BreakerStateChanged], None]) -> None:
        """Call ``listener(event)`` on every state change of this breaker.

        Listeners run outside the breaker's lock, one change at a time and in the order the
        changes happened (usually in the thread that caused the change, sometimes in another
        one delivering a burst of changes); one that raises is logged and ignored.
        Process-wide hooks (:func:`resetguard.add_hook`) see the same events.

        Example::

            >>> import resetguard
            >>> breaker = resetguard.CircuitBreaker("cache")
            >>> changes = []
            >>> breaker.add_listener(changes.append)
            >>> breaker.isolate()
            >>> [(e.old, e.new, e.reason) for e in changes]
            [('closed', 'open', 'isolated')]
        """
        with self._lock:
            self._listeners = _events.with_listener(self._listeners, listener)

    def remove_listener(self, listener: Callable[[_events.BreakerStateChanged], None]) -> None:
        """Remove a listener added with :meth:`add_listener` (``ValueError`` if absent)."""
        with self._lock:
            self._listeners = _events.without_listener(self._listeners, listener)

    def statistics(self) -> BreakerStatistics:
        """A frozen snapshot of the counters, taken under the lock.

        Example::

            >>> import resetguard
            >>> breaker = resetguard.CircuitBreaker("s")
            >>> breaker.call(len, "abc")
            3
            >>> breaker.statistics().successes
            1
        """
        self.state  # noqa: B018 -- applies a due OPEN -> HALF_OPEN move first
        with self._lock:
            code = self._sg & 3
            minimum = self.policy.minimum_calls
            if self._timed_window:
                self._advance(self._clock())
            n = self._w_calls
            judged = self._windowed and n >= minimum
            retry_after: float | None = None
            if code == _OPEN and not self._isolated:
                retry_after = max(0.0, self._open_until - self._clock())
            successes = self._successes + _peek(self._fast_successes)
            return BreakerStatistics(
                name=self.name,
                state=_STATES[code],
                calls=successes + self._failures + self._ignored,
                successes=successes,
                failures=self._failures,
                ignored=self._ignored,
                slow_calls=self._slow_calls,
                rejected=self._rejected,
                trips=self._trips,
                consecutive_failures=self._consecutive,
                window_calls=n,
                window_failures=self._w_failures,
                window_slow_calls=self._w_slow,
                failure_rate=self._w_failures / n if judged else None,
                slow_call_rate=self._w_slow / n if judged else None,
                half_open_in_flight=self._half_open_in_flight,
                half_open_successes=self._half_open_successes,
                retry_after=retry_after,
                backend=self._backend_name(),
            )

    def _backend_name(self) -> str:
        return "local"

    # ------------------------------------------------------------------ engine interface

    def _probe_in(self) -> float | None:
        """Seconds until the open breaker lets a probe through (0.0: due now), or None when
        it is not open or is isolated. A hint read without the lock: a retry waits for it
        rather than for its own backoff, since the breaker refuses every attempt before it."""
        if self._sg & 3 != _OPEN or self._isolated:
            return None
        return max(0.0, self._open_until - self._clock())

    def _acquire(self) -> int:
        """Admit one attempt or raise :class:`CircuitOpen`; returns the ticket for ``_release``.

        The ticket is ``(generation << 2 | state) << 1 | probe``: an outcome reported for an
        older generation (the state moved while the call ran) is counted but moves nothing.
        """
        sg = self._sg
        if not sg & 3:  # closed: no lock, no allocation
            return sg << 1
        return self._acquire_slow()

    def _acquire_slow(self) -> int:
        event = None
        try:
            with self._lock:
                code = self._sg & 3
                if code == _OPEN:
                    if self._isolated:
                        self._rejected += 1
                        raise CircuitOpen(
                            f"circuit breaker {self.name!r} is isolated; "
                            "no probe until it is reset",
                            retry_after=None,
                            breaker=self.name,
                        )
                    now = self._clock()
                    if now < self._open_until:
                        self._rejected += 1
                        wait = self._open_until - now
                        raise CircuitOpen(
                            f"circuit breaker {self.name!r} is open; next probe in "
                            + (f"{wait:.1f} s" if wait >= 0.1 else f"{wait * 1000:.0f} ms"),
                            retry_after=wait,
                            breaker=self.name,
                        )
                    event = self._move(_HALF_OPEN, "open period elapsed", now)
                    code = _HALF_OPEN
                if code == _HALF_OPEN:
                    if self._half_open_in_flight >= self.policy.half_open_probes:
                        self._rejected += 1
                        raise CircuitOpen(
                            f"circuit breaker {self.name!r} is half-open and all "
                            f"{self.policy.half_open_probes} probe slot(s) are taken; "
                            "try again when a probe ends",
                            retry_after=None,
                            breaker=self.name,
                        )
                    self._half_open_in_flight += 1
                    return self._sg << 1 | 1
                return self._sg << 1  # closed meanwhile
        finally:
            if event is not None:
                self._announce(event)

    def _release(self, ticket: int, error: BaseException | None, duration: float) -> None:
        """Record the outcome of an attempt admitted by :meth:`_acquire`."""
        if error is None:
            if ticket == self._fast_ticket:
                # Lock-free: concurrent with a failure, this reset may land before or after
                # the failure's increment, as the two calls really did overlap.
                next(self._fast_successes)
                self._consecutive = 0
                return
            failed = False
        elif isinstance(error, Exception) and self._counts(error):
            failed = True
        else:
            # Not a failure we count (or a cancellation): it says nothing about the peer.
            with self._lock:
                self._ignored += 1
                if ticket & 1:
                    self._half_open_in_flight -= 1
            return
        slow = duration >= self._slow_duration
        event = None
        with self._lock:
            if failed:
                self._failures += 1
            else:
                self._successes += 1
            if slow:
                self._slow_calls += 1
            if ticket & 1:
                # Probes of an earlier half-open period hold their slot until they end too:
                # the dependency never sees more than half_open_probes probes at once.
                self._half_open_in_flight -= 1
            sg = ticket >> 1
            if sg != self._sg:
                return  # the state moved while this call ran
            code = sg & 3
            if code == _CLOSED:
                if not failed:
                    self._consecutive = 0
                    if not self._windowed:
                        return
                    if slow or self._timed_window:
                        self._record(0b10 if slow else 0)
                    else:
                        # _record for a fast success in a count window, inlined (hot path).
                        ring = self._ring
                        i = self._ring_pos
                        old = ring[i]
                        ring[i] = 0
                        self._ring_pos = i + 1 if i + 1 < len(ring) else 0
                        if old:
                            self._w_failures -= old & 1
                            self._w_slow -= old >> 1
                        elif self._ring_filled < len(ring):
                            self._ring_filled += 1
                            self._w_calls += 1
                    # A fast success lowers a count window's failure rate, except the call
                    # that completes minimum_calls; in a time window, an expiring bucket of
                    # successes may leave a failure-heavy window behind.
                    if slow or self._timed_window or self._w_calls == self.policy.minimum_calls:
                        event = self._check_rates()
                    if event is None:
                        return
                else:
                    self._consecutive += 1
                    if self._windowed:
                        self._record(0b11 if slow else 0b01)
                    if self._threshold and self._consecutive >= self._threshold:
                        event = self._trip(f"{self._consecutive} consecutive failures")
                    elif self._windowed:
                        event = self._check_rates()
            elif code == _HALF_OPEN:
                if failed or slow:
                    event = self._trip("probe call failed" if failed else "probe call was slow")
                else:
                    self._half_open_successes += 1
                    if self._half_open_successes >= self.policy.success_threshold:
                        self._streak = 0
                        event = self._move(
                            _CLOSED,
                            f"{self._half_open_successes} probe call(s) succeeded",
                            self._clock(),
                        )
        if event is not None:
            self._announce(event)

    # ------------------------------------------------------------------ internals (lock held)

    def _clear_counts(self) -> None:
        self._consecutive = 0
        self._half_open_successes = 0
        self._w_calls = self._w_failures = self._w_slow = 0
        ring = self._ring
        ring[:] = bytes(len(ring))
        self._ring_pos = 0
        self._ring_filled = 0
        for buckets in (self._bucket_calls, self._bucket_failures, self._bucket_slow):
            buckets[:] = [0] * len(buckets)
        self._epoch = None  # no bucket in use yet

    def _record(self, flags: int) -> None:
        """Add one outcome (bit 0 failed, bit 1 slow) to the sliding window."""
        failed = flags & 1
        slow = flags >> 1
        if not self._timed_window:
            ring = self._ring
            i = self._ring_pos
            old = ring[i]
            ring[i] = flags
            self._ring_pos = i + 1 if i + 1 < len(ring) else 0
            if self._ring_filled < len(ring):
                self._ring_filled += 1
                self._w_calls += 1
            self._w_failures += failed - (old & 1)
            self._w_slow += slow - (old >> 1)
            return
        i = self._advance(self._clock())
        self._bucket_calls[i] += 1
        self._bucket_failures[i] += failed
        self._bucket_slow[i] += slow
        self._w_calls += 1
        self._w_failures += failed
        self._w_slow += slow

    def _advance(self, now: float) -> int:
        """Expire buckets older than the window; return the index of the current bucket."""
        epoch = int(now // self._bucket_width)
        nb = len(self._bucket_calls)
        last = self._epoch
        if last is None:
            self._epoch = epoch
        elif epoch > last:
            # At most nb buckets to clear however long the breaker sat idle.
            for e in range(max(last + 1, epoch - nb + 1), epoch + 1):
                j = e % nb
                self._w_calls -= self._bucket_calls[j]
                self._w_failures -= self._bucket_failures[j]
                self._w_slow -= self._bucket_slow[j]
                self._bucket_calls[j] = self._bucket_failures[j] = self._bucket_slow[j] = 0
            self._epoch = epoch
        else:
            epoch = last  # a clock that stepped back stays in the current bucket
        return epoch % nb

    def _check_rates(self) -> _events.BreakerStateChanged | None:
        n = self._w_calls
        policy = self.policy
        if n < policy.minimum_calls:
            return None
        if policy.failure_rate is not None and self._w_failures >= policy.failure_rate * n:
            return self._trip(f"failure rate {self._w_failures / n:.0%} over {n} calls")
        if policy.slow_call_rate is not None and self._w_slow >= policy.slow_call_rate * n:
            return self._trip(f"slow-call rate {self._w_slow / n:.0%} over {n} calls")
        return None

    def _trip(self, reason: str) -> _events.BreakerStateChanged | None:
        self._trips += 1
        self._streak += 1
        now = self._clock()
        period = self.policy.open_period(self._streak, self._random)
        self._open_until = now + period
        return self._move(_OPEN, f"{reason}; open for {period:.3g} s", now)

    def _move(
        self, code: int, reason: str, now: float, decided_by: str = "local"
    ) -> _events.BreakerStateChanged | None:
        old = self._sg & 3
        if code != _CLOSED or old != _CLOSED:
            # A new generation makes every outcome still in flight stale.
            self._sg = ((self._sg >> 2) + 1) << 2 | code
            self._set_fast_ticket()
            self._half_open_successes = 0
        if old == code:
            return None
        if code == _CLOSED:
            self._clear_counts()
        event = _events.BreakerStateChanged(
            name=self.name,
            old=_STATES[old].value,
            new=_STATES[code].value,
            reason=reason,
            at=now,
            decided_by=decided_by,
        )
        self._pending.append(event)  # queued under the lock: the queue order is the true order
        return event

    def _set_fast_ticket(self) -> None:
        sg = self._sg
        self._fast_ticket = sg << 1 if sg & 3 == _CLOSED and not self._windowed else -1

    def _maybe_half_open(self) -> None:
        with self._lock:
            if self._sg & 3 != _OPEN or self._isolated:
                return
            now = self._clock()
            if now < self._open_until:
                return
            event = self._move(_HALF_OPEN, "open period elapsed", now)
        self._announce(event)

    # ------------------------------------------------------------------ delivery (no lock)

    def _announce(self, event: _events.BreakerStateChanged | None) -> None:
        """Deliver the queued state changes, in the order they happened.

        Listeners run outside the state lock, so two threads could otherwise deliver their
        changes out of order. One thread at a time drains the queue; a thread that finds
        another draining leaves its event to it, and the drainer looks again after letting
        go, so no event is stranded.
        """
        if event is None:
            return
        pending = self._pending
        while pending:
            if not self._delivering.acquire(blocking=False):
                return
            try:
                while pending:
                    self._deliver(pending.popleft())
            finally:
                self._delivering.release()

    def _deliver(self, event: _events.BreakerStateChanged) -> None:
        level = logging.WARNING if event.new == "open" else logging.INFO
        if _log.isEnabledFor(level):
            _log.log(
                level,
                "circuit breaker %r: %s -> %s (%s%s)",
                self.name,
                event.old,
                event.new,
                event.reason,
                "" if event.decided_by == "local" else f"; decided by the {event.decided_by}",
            )
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                _log.exception("listener %r of circuit breaker %r raised", listener, self.name)
        _events.emit(event)


class _LinkedBreaker(CircuitBreaker):
    """A breaker whose state is shared through a :class:`BreakerLink`.

    The local state stays a cache: the closed-state success path is the in-process one
    (no I/O); claiming a half-open probe asks the link (one round trip, outside the lock),
    and a trip or a probe's end is reported to it. The link's syncer brings the shared
    state back through :meth:`_adopt`.
    """

    __slots__ = ()

    _link: BreakerLink

    def _backend_name(self) -> str:
        return "fleet" if self._link.reachable else "fleet-unreachable"

    def _reject(self, message: str, retry_after: float | None) -> CircuitOpen:
        self._rejected += 1
        return CircuitOpen(
            f"circuit breaker {self.name!r} {message}", retry_after=retry_after, breaker=self.name
        )

    def _acquire_slow(self) -> int:
        link = self._link
        with self._lock:
            code = self._sg & 3
            if code == _CLOSED:
                return self._sg << 1
            if code == _OPEN:
                if self._isolated:
                    raise self._reject("is isolated", None)
                now = self._clock()
                if now < self._open_until:
                    raise self._reject("is open", self._open_until - now)
            elif self._half_open_in_flight >= self.policy.half_open_probes:
                raise self._reject(
                    f"is half-open and all {self.policy.half_open_probes} probe slot(s) are taken",
                    None,
                )
            if link.claiming:
                raise self._reject("is half-open and this process is claiming a probe", None)
            link.claiming = True
        try:
            answer = link.claim()  # I/O: never under the lock
        finally:
            link.claiming = False
        event = None
        try:
            with self._lock:
                code = self._sg & 3
                now = self._clock()
                if answer is not None and not answer[0]:
                    if code == _OPEN:
                        self._open_until = now + answer[1]
                    raise self._reject(
                        "is open fleet-wide (another process holds the probe)", answer[1]
                    )
                if answer is None:  # the fleet is unreachable: decide as an in-process breaker
                    if code == _OPEN and now < self._open_until:
                        raise self._reject("is open", self._open_until - now)
                    if (
                        code == _HALF_OPEN
                        and self._half_open_in_flight >= self.policy.half_open_probes
                    ):
                        raise self._reject("is half-open and all probe slots are taken", None)
                if code == _OPEN:
                    event = self._move(
                        _HALF_OPEN,
                        "open period elapsed" + ("" if answer is None else "; fleet probe claimed"),
                        now,
                        "local" if answer is None else "fleet",
                    )
                self._half_open_in_flight += 1
                return self._sg << 1 | 1
        finally:
            if event is not None:
                self._announce(event)

    def _release(self, ticket: int, error: BaseException | None, duration: float) -> None:
        if error is None and ticket == self._fast_ticket:
            next(self._fast_successes)
            self._consecutive = 0
            return
        trips = self._trips
        super()._release(ticket, error, duration)
        if ticket & 1:
            if error is None:
                outcome = -1 if duration >= self._slow_duration else 1
            elif isinstance(error, Exception) and self._counts(error):
                outcome = -1
            else:
                outcome = 0
            self._link.probe_done(outcome)
        elif self._trips != trips:
            self._link.tripped()

    # ------------------------------------------------------------------ for the link

    def _fleet_counts(self) -> tuple[int, int, int, int, float]:
        """``(successes, failures, consecutive failures, state code, open seconds left)``."""
        with self._lock:
            left = self._open_until - self._clock() if self._sg & 3 == _OPEN else 0.0
            return (
                self._successes + _peek(self._fast_successes),
                self._failures,
                self._consecutive,
                self._sg & 3 if not self._isolated else -1,
                max(0.0, left),
            )

    def _adopt(self, state: str, remaining: float, streak: int, reason: str) -> None:
        """Follow the shared state: ``state`` is ``closed``, ``open`` or ``half_open``
        (a probe runs elsewhere); ``remaining`` is the open time left, in seconds."""
        event = None
        with self._lock:
            if self._isolated:
                return
            code = self._sg & 3
            now = self._clock()
            if state == "closed":
                if code != _CLOSED and not self._half_open_in_flight:
                    self._streak = 0
                    event = self._move(_CLOSED, reason, now, "fleet")
            elif code == _OPEN:
                self._open_until = now + remaining
                self._streak = streak
            elif not self._half_open_in_flight:
                # Closed here, or half-open with no probe of ours running: the fleet knows better.
                self._open_until = now + remaining
                self._streak = streak
                event = self._move(_OPEN, reason, now, "fleet")
        if event is not None:
            self._announce(event)


def _peek(counter: itertools.count[int]) -> int:
    """The next value of ``counter`` without consuming it (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])
