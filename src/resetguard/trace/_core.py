"""Trace records, the output sink, per-connection state and the reversible patch registry."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._classify import Failure, Phase, classify
from .._events import ConnectionEvent, emit, hooks_active

__all__ = ["ConnState", "TraceRecord", "log_sink"]

_log = logging.getLogger("resetguard.trace")

#: The steps a trace line can report, in the order they usually happen.
STEPS = (
    "dns",
    "connect",
    "tls",
    "opened",
    "reused",
    "request_sent",
    "first_byte",
    "response_complete",
    "returned",
    "closed",
    "error",
)

# Steps that are connection lifecycle changes, re-emitted as ConnectionEvent to hooks.
_ACTIONS = {"opened": "opened", "reused": "reused", "returned": "returned", "closed": "closed"}


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceRecord:
    """One traced connection event.

    Attributes:
        library: ``"httpx"``, ``"urllib3"`` (requests goes through it), ``"socket"``, or
            ``"dns"``.
        step: one of ``dns``, ``connect``, ``tls``, ``opened``, ``reused``, ``request_sent``,
            ``first_byte``, ``response_complete``, ``returned``, ``closed``, ``error``.
        conn: process-wide connection number (``None`` before a connection exists).
        peer: ``host:port`` of the other end.
        at: ``time.monotonic()`` when the step ended.
        duration: how long the step itself took (DNS, connect, TLS), when it has one.
        since_start: seconds since the request (or the connection attempt) started.
        idle_age: for ``reused``/``error``/``closed``: seconds the connection had been idle.
        requests: requests the connection had completed before this one.
        bytes_sent, bytes_received: totals for raw sockets.
        failure: for ``error``: the classified fault (with ``phase`` and ``reused``).
        error: for ``error``: ``ExceptionType: message``.
        detail: free text (request line, status, number of addresses …).
    """

    library: str
    step: str
    conn: int | None = None
    peer: str = ""
    at: float = 0.0
    duration: float | None = None
    since_start: float | None = None
    idle_age: float | None = None
    requests: int | None = None
    bytes_sent: int | None = None
    bytes_received: int | None = None
    failure: Failure | None = None
    error: str | None = None
    detail: str = ""

    def format(self) -> str:
        """``httpx conn#2 127.0.0.1:8080 reused idle=1.204s requests=1 | GET /`` style line."""
        parts = [self.library]
        if self.conn is not None:
            parts.append(f"conn#{self.conn}")
        if self.peer:
            parts.append(self.peer)
        parts.append(self.step)
        for template, value in (
            ("took={:.2f}ms", None if self.duration is None else self.duration * 1000),
            ("t=+{:.2f}ms", None if self.since_start is None else self.since_start * 1000),
            ("idle={:.3f}s", self.idle_age),
            ("requests={}", self.requests),
            ("sent={}B", self.bytes_sent),
            ("received={}B", self.bytes_received),
        ):
            if value is not None:
                parts.append(template.format(value))
        if self.failure is not None:
            reuse = {True: "reused", False: "fresh", None: "reuse unknown"}[self.failure.reused]
            parts.append(
                f"{self.failure.describe()} phase={self.failure.phase.value} {reuse} connection"
            )
        if self.error:
            parts.append(f"[{self.error}]")
        line = " ".join(parts)
        return f"{line} | {self.detail}" if self.detail else line

    def as_fields(self, prefix: str = "rg_") -> dict[str, Any]:
        """Flat fields (``None`` left out), for logging ``extra``."""
        fields: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value is None or value == "":
                continue
            if isinstance(value, Failure):
                fields[prefix + "kind"] = value.kind.value
                fields[prefix + "phase"] = value.phase.value
                fields[prefix + "reused"] = value.reused
                continue
            fields[prefix + ("trace_step" if name == "step" else name)] = value
        return fields


Sink = Callable[[TraceRecord], None]


def log_sink(record: TraceRecord) -> None:
    """The default sink: one INFO line on the ``resetguard.trace`` logger, fields as ``extra``."""
    if _log.isEnabledFor(logging.INFO):
        _log.info("%s", record.format(), extra=record.as_fields())


class _Output:
    """Where records go. Replaced as a whole by ``enable()``; read without a lock."""

    sink: Sink = log_sink


output = _Output()
_ids = itertools.count(1)


def next_conn_id() -> int:
    return next(_ids)


def now() -> float:
    return time.monotonic()


def publish(record: TraceRecord) -> None:
    """Send ``record`` to the sink, and lifecycle steps to resetguard hooks (the Monitor)."""
    try:
        output.sink(record)
    except Exception:
        _log.exception("resetguard trace sink failed")
    if hooks_active():
        action = _ACTIONS.get(record.step)
        if record.step == "error" and record.conn is not None:
            action = "failed"
        if action is not None:
            emit(
                ConnectionEvent(
                    name=record.library,
                    action=action,
                    peer=record.peer,
                    idle_age=record.idle_age,
                    bytes_sent=record.bytes_sent,
                    bytes_received=record.bytes_received,
                    failure=record.failure,
                    elapsed=record.since_start,
                )
            )


def describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fault(exc: BaseException, phase: Phase, reused: bool | None) -> Failure | None:
    """Classify ``exc`` and correct its phase and reuse with what the tracer saw."""
    failure = classify(exc)
    if failure is None:
        return None
    return failure.with_(phase=phase, reused=reused)


class ConnState:
    """What the tracer knows about one connection."""

    __slots__ = (
        "busy",
        "closed",
        "created",
        "failed",
        "id",
        "last_returned",
        "peer",
        "pending_close",
        "phase",
        "request_start",
        "requests",
    )

    def __init__(self, peer: str) -> None:
        self.id = next_conn_id()
        self.peer = peer
        self.created = now()
        self.requests = 0
        self.last_returned: float | None = None
        self.request_start: float | None = None
        self.phase = Phase.CONNECT
        self.closed = False
        self.failed = False
        # A request is in flight (idle age means nothing then), and a close seen during it
        # is reported after the error that caused it, so the trace reads in causal order.
        self.busy = False
        self.pending_close = False

    @property
    def reused(self) -> bool:
        return self.requests > 0

    def idle_age(self, at: float) -> float | None:
        return None if self.last_returned is None else at - self.last_returned

    def closed_record(self, library: str) -> TraceRecord:
        at = now()
        return TraceRecord(
            library=library,
            step="closed",
            conn=self.id,
            peer=self.peer,
            at=at,
            idle_age=None if self.busy or self.failed else self.idle_age(at),
            requests=self.requests,
            detail=f"open for {at - self.created:.3f}s",
        )

    def since(self, at: float) -> float | None:
        return None if self.request_start is None else at - self.request_start


class Patches:
    """Attribute replacements that :meth:`undo` restores exactly, in reverse order."""

    def __init__(self) -> None:
        self._done: list[tuple[Any, str, Any, bool]] = []
        self.lock = threading.RLock()

    def replace(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        had = name in vars(owner) if isinstance(owner, type) else hasattr(owner, name)
        original = getattr(owner, name)
        setattr(owner, name, make(original))
        self._done.append((owner, name, original, had))

    def undo(self) -> None:
        while self._done:
            owner, name, original, had = self._done.pop()
            if had:
                setattr(owner, name, original)
            else:
                delattr(owner, name)

    def __bool__(self) -> bool:
        return bool(self._done)
