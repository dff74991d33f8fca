"""Connection-health monitor: counts outcomes by cause, computes rates, reports periodically.

A :class:`Monitor` learns about outcomes in two ways:

* **calls** that it sees directly, through :meth:`Monitor.record` or the :meth:`Monitor.track`
  decorator: every call counts once, as ``success`` or as the kind of fault that ended it;
* **events** from the retry engine, breakers, budgets, adapters and the connection tracer, once
  :meth:`Monitor.install` has subscribed it (or when it is passed as a local hook): failed
  attempts by kind, retries, recoveries, give-ups, breaker transitions, connection events.

Everything is kept in bounded memory: the endpoint table holds at most ``max_endpoints``
entries and evicts the least recently used one (counted in ``evicted_endpoints``); the sliding
window is a fixed ring of time buckets. One lock guards the state; nothing is allocated on the
hot path of :meth:`Monitor.record` except for a new endpoint's row.

Example::

    >>> import resetguard
    >>> from resetguard._monitor import Monitor
    >>> monitor = Monitor()
    >>> monitor.record("success", endpoint="api")
    >>> monitor.record(ConnectionResetError(104, "Connection reset by peer"), endpoint="api")
    >>> report = monitor.report()
    >>> report.calls.total, report.calls.reset, report.calls.reset_rate
    (2, 1, 0.5)
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeVar, cast, overload

from . import _events as ev
from ._classify import Failure, Kind, Phase, classify
from ._events import add_hook, remove_hook

__all__ = [
    "DEFAULT_LATENCY_BUCKETS",
    "DEFAULT_IDLE_BUCKETS",
    "EndpointCounts",
    "HistogramSnapshot",
    "Monitor",
    "MonitorReport",
    "OUTCOMES",
    "OutcomeCounts",
    "Reporter",
    "report_extra",
]

_log = logging.getLogger("resetguard.monitor")

#: Every outcome label, in a fixed order: ``success``, each :class:`~resetguard.Kind` value,
#: then ``other`` (an exception that is not a connection fault).
OUTCOMES: Final[tuple[str, ...]] = ("success", *(k.value for k in Kind), "other")
_N: Final = len(OUTCOMES)
_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(OUTCOMES)}
_SUCCESS: Final = 0
_OTHER: Final = _N - 1
_KIND_INDEX: Final[dict[Kind, int]] = {k: _INDEX[k.value] for k in Kind}
# One row holds call outcomes in [0, _N) and failed-attempt outcomes in [_N, 2 * _N).
_ROW: Final = 2 * _N

#: Call-duration histogram bounds in seconds (Prometheus' defaults, which suit network calls).
DEFAULT_LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Connection idle-age bounds in seconds: spans the usual server and load-balancer idle
#: timeouts (nginx 75 s, AWS ALB 60 s, Node 5 s, Apache 5 s, uvicorn 5 s).
DEFAULT_IDLE_BUCKETS: Final[tuple[float, ...]] = (
    0.1,
    0.5,
    1.0,
    2.0,
    4.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

_MAX_LABELS: Final = 64  # distinct sources / reasons / actions kept before folding into "(other)"
_MAX_BREAKERS: Final = 256
_OVERFLOW: Final = "(other)"

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeCounts:
    """Counts by outcome. ``total`` is the sum of all outcomes.

    The rates are fractions of ``total`` (``0.0`` when nothing was counted).

    Example::

        >>> from resetguard._monitor import OutcomeCounts
        >>> c = OutcomeCounts(success=8, reset=1, timeout=1)
        >>> c.total, c.faults, c.reset_rate, c.fault_rate
        (10, 2, 0.1, 0.2)
    """

    success: int = 0
    reset: int = 0
    broken_pipe: int = 0
    aborted: int = 0
    refused: int = 0
    timeout: int = 0
    closed: int = 0
    dns: int = 0
    tls: int = 0
    unreachable: int = 0
    protocol: int = 0
    other: int = 0

    @classmethod
    def _from(cls, values: list[int] | tuple[int, ...]) -> OutcomeCounts:
        return cls(**dict(zip(OUTCOMES, values, strict=True)))

    def get(self, outcome: str) -> int:
        """The count of one outcome by label (``ValueError`` for an unknown label)."""
        if outcome not in _INDEX:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
        return int(getattr(self, outcome))

    @property
    def total(self) -> int:
        """All outcomes."""
        return sum(getattr(self, name) for name in OUTCOMES)

    @property
    def faults(self) -> int:
        """Connection faults: everything except ``success`` and ``other``."""
        return self.total - self.success - self.other

    @property
    def failures(self) -> int:
        """Everything except ``success``."""
        return self.total - self.success

    def rate(self, outcome: str) -> float:
        """Fraction of ``total`` that ended with ``outcome``."""
        total = self.total
        return self.get(outcome) / total if total else 0.0

    @property
    def reset_rate(self) -> float:
        """Fraction of calls ended by a connection reset."""
        return self.rate("reset")

    @property
    def fault_rate(self) -> float:
        """Fraction of calls ended by any connection fault."""
        total = self.total
        return self.faults / total if total else 0.0

    @property
    def error_rate(self) -> float:
        """Fraction of calls that raised anything."""
        total = self.total
        return self.failures / total if total else 0.0

    def as_dict(self) -> dict[str, int]:
        """The non-zero counts, by outcome label."""
        return {name: getattr(self, name) for name in OUTCOMES if getattr(self, name)}


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointCounts:
    """What the monitor counted for one endpoint (or operation name)."""

    calls: OutcomeCounts
    attempt_failures: OutcomeCounts


@dataclass(frozen=True, slots=True, kw_only=True)
class HistogramSnapshot:
    """A fixed-bucket histogram: ``counts[i]`` values fell in ``(bounds[i-1], bounds[i]]``;
    the last count is for values above every bound."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int

    def cumulative(self) -> tuple[int, ...]:
        """Counts of values ``<=`` each bound, then the total (Prometheus ``le`` buckets)."""
        out: list[int] = []
        running = 0
        for c in self.counts:
            running += c
            out.append(running)
        return tuple(out)


def _mapping(d: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(d))


def _empty() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorReport:
    """A frozen snapshot of a :class:`Monitor`, as returned by :meth:`Monitor.report`.

    Attributes:
        name: the monitor's name.
        at: wall-clock time of the snapshot (``time.time()`` scale).
        uptime: seconds since the monitor started (or was last :meth:`~Monitor.reset`).
        window: seconds covered by the ``window_*`` fields (the configured window, or the
            uptime while it is shorter).
        calls / window_calls: outcomes of calls seen by ``record``/``track``.
        attempt_failures / window_attempt_failures: failed attempts reported by the retry
            engine (:class:`~resetguard.AttemptFailed`), by outcome.
        phases, sources: connection faults (calls and failed attempts) by phase and by the
            library that raised them.
        reused_faults, fresh_faults: connection faults on a reused / a fresh connection
            (faults whose reuse is unknown are in neither).
        endpoints: per endpoint (or operation name), the most recently used ``max_endpoints``.
        evicted_endpoints: endpoint rows dropped to respect ``max_endpoints``.
        retries, recovered, gave_up: retries scheduled, calls that succeeded after retrying,
            give-ups by reason.
        budget_exhausted: retries refused by a retry budget.
        breaker_transitions: breaker state changes by new state; ``breakers`` the last known
            state of each breaker.
        connections: connection events by action (``opened``, ``reused``, ``closed`` …).
        client_disconnects: server-side client disconnects.
        disconnect_reasons: client disconnects by ``"<component>:<reason>"`` (``asgi:disconnect``,
            ``tcp:reset``, ``socketio:transport close`` …) and, when known, by TCP end
            (``how:fin`` / ``how:rst``).
        cancelled_handlers: handlers stopped because their client went away.
        suppressed_noise: connection-fault reports demoted to debug events, by where they
            were caught (``asyncio.handler``, ``asyncio.log``, ``threading``).
        latency: call durations measured by ``track`` or given to ``record``.
        reuse_idle_age, failure_idle_age: idle age of connections when reused / when they
            failed.
    """

    name: str
    at: float
    uptime: float
    window: float
    calls: OutcomeCounts
    window_calls: OutcomeCounts
    attempt_failures: OutcomeCounts
    window_attempt_failures: OutcomeCounts
    phases: Mapping[str, int]
    sources: Mapping[str, int]
    reused_faults: int
    fresh_faults: int
    endpoints: Mapping[str, EndpointCounts]
    evicted_endpoints: int
    retries: int
    recovered: int
    gave_up: Mapping[str, int]
    budget_exhausted: int
    breaker_transitions: Mapping[str, int]
    breakers: Mapping[str, str]
    connections: Mapping[str, int]
    client_disconnects: int
    latency: HistogramSnapshot
    reuse_idle_age: HistogramSnapshot
    failure_idle_age: HistogramSnapshot
    disconnect_reasons: Mapping[str, int] = field(default_factory=_empty)
    cancelled_handlers: int = 0
    suppressed_noise: Mapping[str, int] = field(default_factory=_empty)

    def per_second(self, outcome: str, *, attempts: bool = False) -> float:
        """Window count of ``outcome`` per second (calls, or failed attempts)."""
        counts = self.window_attempt_failures if attempts else self.window_calls
        return counts.get(outcome) / self.window if self.window > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (zero counters left out of the outcome maps)."""
        return {
            "name": self.name,
            "at": self.at,
            "uptime": round(self.uptime, 3),
            "window": round(self.window, 3),
            "calls": self.calls.as_dict(),
            "calls_total": self.calls.total,
            "reset_rate": self.calls.reset_rate,
            "fault_rate": self.calls.fault_rate,
            "error_rate": self.calls.error_rate,
            "window_calls": self.window_calls.as_dict(),
            "window_reset_rate": self.window_calls.reset_rate,
            "window_fault_rate": self.window_calls.fault_rate,
            "attempt_failures": self.attempt_failures.as_dict(),
            "window_attempt_failures": self.window_attempt_failures.as_dict(),
            "phases": dict(self.phases),
            "sources": dict(self.sources),
            "reused_faults": self.reused_faults,
            "fresh_faults": self.fresh_faults,
            "endpoints": {
                k: {"calls": v.calls.as_dict(), "attempt_failures": v.attempt_failures.as_dict()}
                for k, v in self.endpoints.items()
            },
            "evicted_endpoints": self.evicted_endpoints,
            "retries": self.retries,
            "recovered": self.recovered,
            "gave_up": dict(self.gave_up),
            "budget_exhausted": self.budget_exhausted,
            "breaker_transitions": dict(self.breaker_transitions),
            "breakers": dict(self.breakers),
            "connections": dict(self.connections),
            "client_disconnects": self.client_disconnects,
            "disconnect_reasons": dict(self.disconnect_reasons),
            "cancelled_handlers": self.cancelled_handlers,
            "suppressed_noise": dict(self.suppressed_noise),
            "latency_count": self.latency.count,
            "latency_sum": self.latency.sum,
        }

    def format(self) -> str:
        """One human line for logs, e.g.
        ``api: 120 calls, 3 resets (2.50%), 4 faults (3.33%) | last 60s: …``."""
        c, w = self.calls, self.window_calls
        parts = [
            f"{self.name}: {c.total} calls, {c.reset} resets ({c.reset_rate:.2%}), "
            f"{c.faults} faults ({c.fault_rate:.2%}), {c.other} other errors",
            f"last {self.window:.0f}s: {w.total} calls, {w.reset} resets ({w.reset_rate:.2%}), "
            f"{w.faults} faults ({w.fault_rate:.2%})",
        ]
        a = self.attempt_failures
        if a.total or self.retries:
            parts.append(
                f"attempts: {a.total} failed ({a.reset} resets), {self.retries} retries, "
                f"{self.recovered} recovered, {sum(self.gave_up.values())} gave up"
            )
        if self.phases:
            parts.append("phases: " + ", ".join(f"{k}={v}" for k, v in sorted(self.phases.items())))
        if self.reused_faults or self.fresh_faults:
            parts.append(f"reused={self.reused_faults} fresh={self.fresh_faults}")
        return " | ".join(parts)


# --------------------------------------------------------------------------- live state


class _Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(
            bounds=self.bounds, counts=tuple(self.counts), sum=self.sum, count=self.count
        )


def _check_bounds(name: str, bounds: tuple[float, ...]) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in bounds)
    if not bounds or any(b <= 0 for b in bounds) or list(bounds) != sorted(set(bounds)):
        raise ValueError(f"{name} must be positive, strictly increasing numbers, got {bounds!r}")
    return bounds


def _redact(endpoint: str) -> str:
    """Drop credentials from ``scheme://user:password@host/…`` so reports never show them."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        return endpoint
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return endpoint
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"


def _bump(table: dict[str, int], key: str) -> None:
    if key not in table and len(table) >= _MAX_LABELS:
        key = _OVERFLOW
    table[key] = table.get(key, 0) + 1


_Outcome = str | Kind | Failure | BaseException | None


class Monitor:
    """Counts call outcomes and resetguard events; thread-safe, bounded, cheap to update.

    Args:
        name: label used in reports and log lines.
        window: length of the sliding window in seconds.
        buckets: number of time buckets in the window (its resolution is ``window / buckets``).
        max_endpoints: endpoint rows kept; the least recently used is evicted beyond it.
        latency_buckets, idle_buckets: histogram bounds in seconds.
        clock: monotonic clock (seconds) for windows and durations.
        wall_clock: clock for the report timestamp.

    Example::

        >>> from resetguard._monitor import Monitor
        >>> monitor = Monitor(name="billing", window=60.0)
        >>> @monitor.track(endpoint="charge")
        ... def charge() -> str:
        ...     return "ok"
        >>> charge()
        'ok'
        >>> monitor.report().endpoints["charge"].calls.success
        1
    """

    __slots__ = (
        "_breaker_moves",
        "_breakers",
        "_clock",
        "_conn_actions",
        "_counters",
        "_disconnect_reasons",
        "_endpoints",
        "_evicted",
        "_failure_idle",
        "_gave_up",
        "_installed",
        "_latency",
        "_lock",
        "_max_endpoints",
        "_noise",
        "_observers",
        "_phases",
        "_reuse_idle",
        "_reused",
        "_ring",
        "_ring_epoch",
        "_sources",
        "_started",
        "_totals",
        "_wall_clock",
        "_width",
        "buckets",
        "name",
        "window",
    )

    def __init__(
        self,
        *,
        name: str = "resetguard",
        window: float = 60.0,
        buckets: int = 12,
        max_endpoints: int = 1000,
        latency_buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS,
        idle_buckets: tuple[float, ...] = DEFAULT_IDLE_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not window > 0:
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f"buckets must be an int >= 1, got {buckets!r}")
        if (
            isinstance(max_endpoints, bool)
            or not isinstance(max_endpoints, int)
            or max_endpoints < 0
        ):
            raise ValueError(f"max_endpoints must be an int >= 0, got {max_endpoints!r}")
        if not callable(clock) or not callable(wall_clock):
            raise TypeError("clock and wall_clock must be callables returning seconds")
        self.name = name
        self.window = float(window)
        self.buckets = buckets
        self._width = self.window / buckets
        self._max_endpoints = max_endpoints
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._installed = False
        # Observers see every recorded call; exporters that need raw values (OTel
        # histograms) use them. A tuple so the hot path reads it without the lock.
        self._observers: tuple[Callable[[str, str, float | None], None], ...] = ()
        self._latency = _Histogram(_check_bounds("latency_buckets", latency_buckets))
        idle = _check_bounds("idle_buckets", idle_buckets)
        self._reuse_idle = _Histogram(idle)
        self._failure_idle = _Histogram(idle)
        self._clear()

    def _clear(self) -> None:
        self._started = self._clock()
        self._totals = [0] * _ROW
        self._ring = [[0] * _ROW for _ in range(self.buckets)]
        self._ring_epoch = [-1] * self.buckets
        self._endpoints: OrderedDict[str, tuple[str, list[int]]] = OrderedDict()
        self._evicted = 0
        self._phases: dict[str, int] = {}
        self._sources: dict[str, int] = {}
        self._reused = [0, 0]  # [reused, fresh]
        # retries, recovered, budget_exhausted, client_disconnects, cancelled_handlers
        self._counters = [0, 0, 0, 0, 0]
        self._disconnect_reasons: dict[str, int] = {}
        self._noise: dict[str, int] = {}
        self._gave_up: dict[str, int] = {}
        self._breakers: dict[str, str] = {}
        self._breaker_moves: dict[str, int] = {}  # breaker transitions by new state
        self._latency = _Histogram(self._latency.bounds)
        self._reuse_idle = _Histogram(self._reuse_idle.bounds)
        self._failure_idle = _Histogram(self._failure_idle.bounds)
        self._conn_actions: dict[str, int] = {}

    # ----------------------------------------------------------------- recording

    def _count(self, index: int, endpoint: str, now: float) -> None:
        """Add one to ``index`` in the totals, the current bucket and the endpoint row.

        Caller holds the lock.
        """
        self._totals[index] += 1
        epoch = int(now / self._width)
        slot = epoch % self.buckets
        row = self._ring[slot]
        if self._ring_epoch[slot] != epoch:
            for i in range(_ROW):
                row[i] = 0
            self._ring_epoch[slot] = epoch
        row[index] += 1
        if endpoint and self._max_endpoints:
            entry = self._endpoints.get(endpoint)
            if entry is None:
                if len(self._endpoints) >= self._max_endpoints:
                    self._endpoints.popitem(last=False)
                    self._evicted += 1
                entry = (_redact(endpoint), [0] * _ROW)
                self._endpoints[endpoint] = entry
            else:
                self._endpoints.move_to_end(endpoint)
            entry[1][index] += 1

    def _fault(self, failure: Failure) -> None:
        """Breakdown of a connection fault by phase, source and reuse. Caller holds the lock."""
        _bump(self._phases, failure.phase.value)
        _bump(self._sources, failure.source)
        if failure.reused is True:
            self._reused[0] += 1
        elif failure.reused is False:
            self._reused[1] += 1

    def record(
        self,
        outcome: _Outcome = "success",
        *,
        endpoint: str = "",
        latency: float | None = None,
        phase: Phase | str | None = None,
        source: str | None = None,
    ) -> None:
        """Count one call.

        ``outcome`` is an outcome label (``"success"``, ``"reset"``, … see :data:`OUTCOMES`),
        a :class:`~resetguard.Kind`, a :class:`~resetguard.Failure`, the exception the call
        raised (classified with :func:`resetguard.classify`; not a connection fault counts as
        ``other``), or ``None`` for success. ``phase``/``source`` describe a fault given as a
        label or kind. ``latency`` (seconds) feeds the duration histogram.

        Example::

            >>> from resetguard._monitor import Monitor
            >>> m = Monitor()
            >>> m.record("timeout", endpoint="db", phase="connect")
            >>> m.report().phases["connect"]
            1
        """
        failure: Failure | None = None
        if outcome is None or outcome == "success":
            index = _SUCCESS
        elif isinstance(outcome, Failure):
            failure = outcome
            index = _KIND_INDEX[outcome.kind]
        elif isinstance(outcome, BaseException):
            failure = classify(outcome)
            index = _OTHER if failure is None else _KIND_INDEX[failure.kind]
        elif isinstance(outcome, Kind):
            index = _KIND_INDEX[outcome]
        elif isinstance(outcome, str) and outcome in _INDEX:
            index = _INDEX[outcome]
        else:
            raise ValueError(
                f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}, "
                "a Kind, a Failure, an exception or None"
            )
        if failure is None and (phase is not None or source is not None):
            if index in (_SUCCESS, _OTHER):
                raise ValueError(
                    f"phase/source describe a connection fault, not {OUTCOMES[index]!r}"
                )
            failure = Failure(
                kind=Kind(OUTCOMES[index]),
                phase=Phase(phase) if phase is not None else Phase.UNKNOWN,
                source=source if source is not None else "stdlib",
            )
        if latency is not None and not latency >= 0:
            raise ValueError(f"latency must be a number of seconds >= 0, got {latency!r}")
        with self._lock:
            self._count(index, endpoint, self._clock())
            if failure is not None:
                self._fault(failure)
            if latency is not None:
                self._latency.add(latency)
        for observer in self._observers:
            observer(OUTCOMES[index], endpoint, latency)

    @overload
    def track(self, fn: F, /, *, endpoint: str | None = None) -> F: ...

    @overload
    def track(self, fn: None = None, /, *, endpoint: str | None = None) -> Callable[[F], F]: ...

    def track(self, fn: F | None = None, /, *, endpoint: str | None = None) -> F | Callable[[F], F]:
        """Decorate a function (sync or ``async``) so each call is counted and timed.

        The call's exception is classified and re-raised unchanged. ``endpoint`` defaults to
        the function's qualified name.

        Example::

            >>> from resetguard._monitor import Monitor
            >>> m = Monitor()
            >>> @m.track
            ... def boom():
            ...     raise BrokenPipeError(32, "Broken pipe")
            >>> try:
            ...     boom()
            ... except BrokenPipeError:
            ...     pass
            >>> m.report().calls.broken_pipe
            1
        """
        if fn is None:
            return lambda f: self.track(f, endpoint=endpoint)
        if not callable(fn):
            raise TypeError(f"track() needs a callable, got {fn!r}")
        label = endpoint if endpoint is not None else getattr(fn, "__qualname__", repr(fn))
        clock = self._clock
        record = self.record

        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                start = clock()
                try:
                    result = await afn(*args, **kwargs)
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        record(exc, endpoint=label, latency=clock() - start)
                    raise
                record(None, endpoint=label, latency=clock() - start)
                return result

            return cast(F, awrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                record(exc, endpoint=label, latency=clock() - start)
                raise
            record(None, endpoint=label, latency=clock() - start)
            return result

        return cast(F, wrapper)

    # ----------------------------------------------------------------- events

    def __call__(self, event: ev.Event, /) -> None:
        """Receive one resetguard event (this makes the monitor a hook)."""
        now = self._clock()
        with self._lock:
            if isinstance(event, ev.AttemptFailed):
                f = event.failure
                self._count(_N + (_OTHER if f is None else _KIND_INDEX[f.kind]), event.name, now)
                if f is not None:
                    self._fault(f)
            elif isinstance(event, ev.RetryScheduled):
                self._counters[0] += 1
            elif isinstance(event, ev.RetrySucceeded):
                self._counters[1] += 1
            elif isinstance(event, ev.GaveUp):
                _bump(self._gave_up, event.reason)
            elif isinstance(event, ev.BudgetExhaustedEvent):
                self._counters[2] += 1
            elif isinstance(event, ev.ClientDisconnected):
                self._counters[3] += 1
                if event.cancelled:
                    self._counters[4] += 1
                _bump(self._disconnect_reasons, f"{event.name}:{event.reason or 'unknown'}")
                if event.how:
                    _bump(self._disconnect_reasons, f"how:{event.how}")
                if event.failure is not None:
                    self._fault(event.failure)
            elif isinstance(event, ev.NoiseSuppressed):
                _bump(self._noise, event.name)
            elif isinstance(event, ev.ConnectionEvent):
                _bump(self._conn_actions, event.action)
                if event.idle_age is not None:
                    if event.action == "reused":
                        self._reuse_idle.add(event.idle_age)
                    elif event.action == "failed":
                        self._failure_idle.add(event.idle_age)
                if event.action == "failed" and event.failure is not None:
                    self._fault(event.failure)
            elif isinstance(event, ev.BreakerStateChanged):
                _bump(self._breaker_moves, event.new)
                if event.name not in self._breakers and len(self._breakers) >= _MAX_BREAKERS:
                    del self._breakers[next(iter(self._breakers))]
                self._breakers[event.name] = event.new

    def install(self) -> Monitor:
        """Subscribe to every resetguard event in this process (see :func:`resetguard.add_hook`).

        Returns the monitor, so ``monitor = Monitor().install()`` works; also usable as a
        context manager that uninstalls on exit.
        """
        with self._lock:
            if self._installed:
                raise RuntimeError(f"monitor {self.name!r} is already installed")
            self._installed = True
        add_hook(self)
        return self

    def uninstall(self) -> None:
        """Stop receiving process-wide events (``RuntimeError`` when not installed)."""
        with self._lock:
            if not self._installed:
                raise RuntimeError(f"monitor {self.name!r} is not installed")
            self._installed = False
        remove_hook(self)

    @property
    def installed(self) -> bool:
        """Whether :meth:`install` subscribed this monitor."""
        return self._installed

    def __enter__(self) -> Monitor:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    # ----------------------------------------------------------------- reading

    def reset(self) -> None:
        """Forget every count (the window, endpoints, histograms) and restart the uptime."""
        with self._lock:
            self._clear()

    def report(self) -> MonitorReport:
        """A frozen snapshot of everything counted so far."""
        now = self._clock()
        wall = self._wall_clock()
        with self._lock:
            current = int(now / self._width)
            window = [0] * _ROW
            for slot in range(self.buckets):
                epoch = self._ring_epoch[slot]
                if current - self.buckets < epoch <= current:
                    row = self._ring[slot]
                    for i in range(_ROW):
                        window[i] += row[i]
            totals = list(self._totals)
            # Copy the raw rows only: building the snapshot objects happens after the lock
            # is released, so a scrape of many endpoints never stalls the hot path.
            rows = [(shown, row[:]) for shown, row in self._endpoints.values()]
            uptime = now - self._started
            parts = dict(
                phases=_mapping(self._phases),
                sources=_mapping(self._sources),
                reused_faults=self._reused[0],
                fresh_faults=self._reused[1],
                evicted_endpoints=self._evicted,
                retries=self._counters[0],
                recovered=self._counters[1],
                gave_up=_mapping(self._gave_up),
                budget_exhausted=self._counters[2],
                breaker_transitions=_mapping(self._breaker_moves),
                breakers=MappingProxyType(dict(self._breakers)),
                connections=_mapping(self._conn_actions),
                client_disconnects=self._counters[3],
                disconnect_reasons=_mapping(self._disconnect_reasons),
                cancelled_handlers=self._counters[4],
                suppressed_noise=_mapping(self._noise),
                latency=self._latency.snapshot(),
                reuse_idle_age=self._reuse_idle.snapshot(),
                failure_idle_age=self._failure_idle.snapshot(),
            )
        endpoints = {
            shown: EndpointCounts(
                calls=OutcomeCounts._from(row[:_N]),
                attempt_failures=OutcomeCounts._from(row[_N:]),
            )
            for shown, row in rows
        }
        return MonitorReport(
            name=self.name,
            at=wall,
            uptime=uptime,
            window=min(self.window, uptime),
            calls=OutcomeCounts._from(totals[:_N]),
            window_calls=OutcomeCounts._from(window[:_N]),
            attempt_failures=OutcomeCounts._from(totals[_N:]),
            window_attempt_failures=OutcomeCounts._from(window[_N:]),
            endpoints=MappingProxyType(endpoints),
            **parts,  # type: ignore[arg-type]
        )

    # ----------------------------------------------------------------- reporting

    def start_reporter(
        self,
        interval: float = 60.0,
        *,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        sink: Callable[[MonitorReport], None] | None = None,
    ) -> Reporter:
        """Log :meth:`report` every ``interval`` seconds from a daemon thread.

        Each report is logged on ``logger`` (default ``resetguard.monitor``) with the line of
        :meth:`MonitorReport.format` and its fields as ``extra`` (prefixed ``rg_``), or handed
        to ``sink``. Stop it with :meth:`Reporter.stop` or use it as a context manager.

        Example::

            >>> from resetguard._monitor import Monitor
            >>> reports = []
            >>> with Monitor().start_reporter(0.01, sink=reports.append) as reporter:
            ...     reporter.wait_for(1, timeout=5.0)
            True
        """
        reporter = Reporter(self, interval, logger=logger, level=level, sink=sink)
        reporter.start()
        return reporter

    async def report_periodically(
        self,
        interval: float = 60.0,
        *,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        sink: Callable[[MonitorReport], None] | None = None,
    ) -> None:
        """The asyncio form of :meth:`start_reporter`: runs until cancelled.

        Example::

            task = asyncio.create_task(monitor.report_periodically(60.0))
            ...
            task.cancel()
        """
        import asyncio

        deliver = _deliverer(logger, level, sink)
        _check_interval(interval)
        while True:
            await asyncio.sleep(interval)
            deliver(self.report())

    def _add_observer(self, observer: Callable[[str, str, float | None], None]) -> None:
        with self._lock:
            self._observers = (*self._observers, observer)

    def _remove_observer(self, observer: Callable[[str, str, float | None], None]) -> None:
        with self._lock:
            self._observers = tuple(o for o in self._observers if o != observer)

    def __repr__(self) -> str:
        return f"Monitor(name={self.name!r}, window={self.window!r})"


def _check_interval(interval: float) -> None:
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
        raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")


def report_extra(report: MonitorReport, prefix: str = "rg_") -> dict[str, Any]:
    """``report.as_dict()`` with prefixed keys, safe to pass as logging ``extra``."""
    return {prefix + k: v for k, v in report.as_dict().items()}


def _deliverer(
    logger: logging.Logger | None, level: int, sink: Callable[[MonitorReport], None] | None
) -> Callable[[MonitorReport], None]:
    if sink is not None:
        if not callable(sink):
            raise TypeError(f"sink must be callable, got {sink!r}")
        return sink
    log = logger if logger is not None else _log

    def deliver(report: MonitorReport) -> None:
        log.log(level, "%s", report.format(), extra=report_extra(report))

    return deliver


class Reporter:
    """A running periodic reporter (see :meth:`Monitor.start_reporter`)."""

    __slots__ = ("_cond", "_deliver", "_interval", "_monitor", "_stop", "_thread", "delivered")

    def __init__(
        self,
        monitor: Monitor,
        interval: float,
        *,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        sink: Callable[[MonitorReport], None] | None = None,
    ) -> None:
        _check_interval(interval)
        self._monitor = monitor
        self._interval = float(interval)
        self._deliver = _deliverer(logger, level, sink)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self.delivered = 0
        self._thread = threading.Thread(
            target=self._run, name=f"resetguard-reporter-{monitor.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._deliver(self._monitor.report())
            except Exception:
                _log.exception("resetguard monitor reporter failed")
            with self._cond:
                self.delivered += 1
                self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until ``count`` reports were delivered (False after ``timeout`` seconds)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.delivered >= count, timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (``RuntimeError`` if it did not stop in time)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"reporter thread did not stop within {timeout} s")

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
