"""Frozen event types emitted by the engine, the breaker, the budget and the adapters,
and the process-wide hook registry that delivers them.

Emitters check :func:`hooks_active` (a plain attribute read) before building an event, so
nothing is allocated on the hot path while no hook is installed.

Example::

    import resetguard

    seen = []
    resetguard.add_hook(seen.append)
    ...
    resetguard.remove_hook(seen.append)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from ._classify import Failure

__all__ = [
    "AttemptFailed",
    "BreakerStateChanged",
    "BudgetExhaustedEvent",
    "ClientDisconnected",
    "ConnectionEvent",
    "Event",
    "GaveUp",
    "Hook",
    "NoiseSuppressed",
    "OutcomeResolved",
    "RetryScheduled",
    "RetrySucceeded",
    "add_hook",
    "emit",
    "hooks_active",
    "remove_hook",
]

_log = logging.getLogger("resetguard.events")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every resetguard event. ``name`` names the guarded operation or component."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptFailed(Event):
    """An attempt raised. ``failure`` is ``None`` when it was not a connection fault."""

    attempt: int
    exception: BaseException
    failure: Failure | None
    elapsed: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    """Attempt ``attempt`` failed and attempt ``attempt + 1`` starts after ``delay`` seconds."""

    attempt: int
    max_attempts: int
    delay: float
    exception: BaseException
    failure: Failure | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GaveUp(Event):
    """No further attempt will be made; the last exception is re-raised to the caller.

    ``reason`` is one of ``"not_retryable"``, ``"unsafe"`` (the outcome is unknown),
    ``"attempts"``, ``"deadline"``, ``"budget"``, ``"breaker"``, or an adapter's own reason
    (HTTP: ``"body_consumed"``, ``"streamed"``).
    """

    attempts: int
    reason: str
    exception: BaseException
    failure: Failure | None
    elapsed: float


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeResolved(Event):
    """A ``resolve`` hook looked at an attempt that failed after its point of no return.

    ``outcome`` is ``"done"`` (it took effect: the call returns the hook's value),
    ``"rerun"`` (it did not: the operation runs again) or ``"unknown"`` (the hook could not
    tell, or raised: the caller gets an unknown outcome).
    """

    attempt: int
    outcome: str
    exception: BaseException


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrySucceeded(Event):
    """A call succeeded after at least one retry: a failure the caller never saw."""

    attempts: int
    elapsed: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerStateChanged(Event):
    """A circuit breaker moved from ``old`` to ``new`` (``closed``/``open``/``half_open``).

    ``decided_by`` is ``"local"`` when this process decided the move, ``"fleet"`` when it
    followed the shared state of a :mod:`resetguard.fleet` backend.
    """

    old: str
    new: str
    reason: str
    at: float
    decided_by: str = "local"


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetExhaustedEvent(Event):
    """A retry budget refused a retry; the caller gets the original error.

    ``decided_by`` is ``"fleet"`` when a :mod:`resetguard.fleet` backend's shared budget
    refused it, ``"local"`` otherwise (no backend, or the backend unreachable).
    """

    balance: float
    exception: BaseException | None = None
    decided_by: str = "local"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionEvent(Event):
    """A connection-level event from an adapter or the tracer.

    ``action`` is ``"opened"``, ``"reused"``, ``"returned"``, ``"closed"``, ``"expired"`` or
    ``"failed"``; ``name`` is the source library (``"httpx"``, ``"requests"``, ``"socket"``…).
    ``reason`` is the library's own word for why, when it gives one (pymongo's ``"idle"``,
    ``"stale"``, ``"error"``; a failed heartbeat).
    """

    action: str
    peer: str = ""
    idle_age: float | None = None
    bytes_sent: int | None = None
    bytes_received: int | None = None
    failure: Failure | None = None
    elapsed: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientDisconnected(Event):
    """A server-side handler saw its client go away before the response was complete.

    ``name`` is the component (``"asgi"``, ``"tcp"``, ``"socketio"``). ``reason`` says how
    the source reported the end: ``"disconnect"`` (ASGI ``http.disconnect``), ``"send_failed"``,
    ``"reset"``, ``"timeout"``, ``"idle_timeout"``, ``"clean"``, or a Socket.IO reason such as
    ``"transport close"``; ``""`` when unknown. ``how`` is the TCP-level end when it is known:
    ``"fin"`` (orderly close) or ``"rst"`` (reset). ``cancelled`` is true when resetguard
    stopped the handler because of it.
    """

    path: str = ""
    peer: str = ""
    elapsed: float | None = None
    reason: str = ""
    how: str = ""
    cancelled: bool = False
    failure: Failure | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NoiseSuppressed(Event):
    """A connection-fault report that resetguard demoted from a log line or traceback.

    ``name`` is where it was caught: ``"asyncio.handler"`` (the loop's exception handler),
    ``"asyncio.log"`` (the ``asyncio`` logger) or ``"threading"`` (``threading.excepthook``).
    ``message`` is the original message, ``failure`` the classified fault when there was one.
    """

    message: str = ""
    failure: Failure | None = None


class Hook(Protocol):
    """Anything callable with one :class:`Event`. Hooks must be fast and must not raise."""

    def __call__(self, event: Event, /) -> None: ...


_T = TypeVar("_T")


def with_listener(
    listeners: tuple[_T, ...], listener: _T, what: str = "listener"
) -> tuple[_T, ...]:
    """``listeners`` plus ``listener`` (a tuple: readers iterate it without a lock)."""
    if not callable(listener):
        raise TypeError(f"{what} must be callable, got {listener!r}")
    return (*listeners, listener)


def without_listener(
    listeners: tuple[_T, ...], listener: _T, what: str = "listener"
) -> tuple[_T, ...]:
    """``listeners`` less ``listener`` (``ValueError`` naming it when it is not there)."""
    remaining = list(listeners)
    try:
        remaining.remove(listener)
    except ValueError:
        raise ValueError(f"{what} {listener!r} is not registered") from None
    return tuple(remaining)


class _Registry:
    __slots__ = ("_lock", "hooks")

    def __init__(self) -> None:
        self.hooks: tuple[Callable[[Event], None], ...] = ()
        self._lock = threading.Lock()

    def add(self, hook: Callable[[Event], None]) -> None:
        with self._lock:
            self.hooks = with_listener(self.hooks, hook, "hook")

    def remove(self, hook: Callable[[Event], None]) -> None:
        with self._lock:
            self.hooks = without_listener(self.hooks, hook, "hook")


_registry = _Registry()


def add_hook(hook: Callable[[Event], None]) -> None:
    """Install a process-wide hook that receives every resetguard :class:`Event`.

    Example::

        >>> import resetguard
        >>> events = []
        >>> resetguard.add_hook(events.append)
        >>> resetguard.remove_hook(events.append)
    """
    _registry.add(hook)


def remove_hook(hook: Callable[[Event], None]) -> None:
    """Remove a hook installed with :func:`add_hook` (``ValueError`` if it is not installed)."""
    _registry.remove(hook)


def hooks_active() -> bool:
    """True when at least one process-wide hook is installed."""
    return bool(_registry.hooks)


def emit(event: Event, local: Callable[[Event], None] | None = None) -> None:
    """Deliver ``event`` to ``local`` (a per-object hook) and to every process-wide hook.

    A hook that raises is logged on ``resetguard.events`` and otherwise ignored: observers
    must never change the outcome of the call they observe.
    """
    if local is not None:
        _deliver(local, event)
    for hook in _registry.hooks:
        _deliver(hook, event)


def _deliver(hook: Callable[[Event], None], event: Event) -> None:
    try:
        hook(event)
    except Exception:
        _log.exception("resetguard hook %r raised on %s", hook, type(event).__name__)
