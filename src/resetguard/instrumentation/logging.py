"""Structured logging of resetguard events, for stdlib :mod:`logging` and for structlog.

:class:`LogHook` is a hook (see :func:`resetguard.add_hook`) that writes one line per event:

* with a stdlib :class:`logging.Logger` (the default, ``resetguard.events``) the fields go in
  ``extra``, prefixed ``rg_`` so they never collide with ``LogRecord`` attributes; JSON
  formatters and structlog's ``ExtraAdder`` pick them up;
* with a structlog logger the fields are passed as key-value pairs (no prefix).

Credentials in URLs found in messages are replaced with ``***``.

Example::

    >>> import logging, resetguard
    >>> from resetguard.instrumentation.logging import LogHook
    >>> hook = LogHook(logging.getLogger("myapp.resets"))
    >>> resetguard.add_hook(hook)
    >>> resetguard.remove_hook(hook)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from .. import _events as ev
from .._classify import Failure

__all__ = ["DEFAULT_LEVELS", "LogHook", "describe_event", "event_fields", "redact_text"]

_CREDENTIALS = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")

#: Level used for each event type (``ConnectionEvent`` with action ``failed`` is logged at INFO).
DEFAULT_LEVELS: Mapping[type[ev.Event], int] = {
    ev.AttemptFailed: logging.INFO,
    ev.RetryScheduled: logging.INFO,
    ev.RetrySucceeded: logging.INFO,
    ev.GaveUp: logging.WARNING,
    ev.BudgetExhaustedEvent: logging.WARNING,
    ev.BreakerStateChanged: logging.WARNING,
    ev.ConnectionEvent: logging.DEBUG,
    ev.ClientDisconnected: logging.INFO,
    ev.NoiseSuppressed: logging.DEBUG,
}


def redact_text(text: str) -> str:
    """Replace ``user:password@`` in every URL of ``text`` by ``***@``.

    Example::

        >>> redact_text("cannot reach postgresql://app:pw@db:5432/x")
        'cannot reach postgresql://***@db:5432/x'
    """
    return _CREDENTIALS.sub(r"\1***@", text)


def _event_type(event: ev.Event) -> str:
    name = type(event).__name__
    if name == "BudgetExhaustedEvent":
        name = "BudgetExhausted"
    return _CAMEL.sub("_", name).lower()


def _failure_fields(failure: Failure | None) -> dict[str, Any]:
    if failure is None:
        return {}
    return {
        "kind": failure.kind.value,
        "phase": failure.phase.value,
        "reused": failure.reused,
        "source": failure.source,
        "code": failure.code,
    }


def event_fields(event: ev.Event) -> dict[str, Any]:
    """Flat, JSON-serialisable fields of ``event`` (``None`` values left out).

    Example::

        >>> from resetguard import RetrySucceeded
        >>> event_fields(RetrySucceeded(name="GET /", attempts=2, elapsed=0.25))
        {'event_type': 'retry_succeeded', 'operation': 'GET /', 'attempts': 2, 'elapsed': 0.25}
    """
    fields: dict[str, Any] = {
        "event_type": _event_type(event),
        "operation": redact_text(event.name),
    }
    for slot in _slots(type(event)):
        if slot == "name":
            continue
        value = getattr(event, slot)
        if slot == "failure":
            fields.update(_failure_fields(value))
        elif isinstance(value, BaseException):
            fields["error_type"] = f"{type(value).__module__}.{type(value).__qualname__}"
            fields["error"] = redact_text(str(value))
        elif isinstance(value, str):
            fields[slot] = redact_text(value)
        else:
            fields[slot] = value
    return {k: v for k, v in fields.items() if v is not None}


def _slots(cls: type) -> list[str]:
    out: list[str] = []
    for klass in reversed(cls.__mro__):
        for slot in getattr(klass, "__slots__", ()):
            if slot not in out and not slot.startswith("_"):
                out.append(slot)
    return out


def describe_event(event: ev.Event) -> str:
    """The human line for an event, e.g. ``GET /: attempt 1 failed: connection reset (…)``."""
    name = redact_text(event.name)
    if isinstance(event, ev.AttemptFailed):
        what = event.failure.describe() if event.failure else type(event.exception).__name__
        where = _where(event.failure)
        return f"{name}: attempt {event.attempt} failed after {event.elapsed:.3f}s: {what}{where}"
    if isinstance(event, ev.RetryScheduled):
        return (
            f"{name}: retrying in {event.delay:.3f}s "
            f"(attempt {event.attempt + 1} of {event.max_attempts})"
        )
    if isinstance(event, ev.RetrySucceeded):
        return f"{name}: succeeded after {event.attempts} attempts in {event.elapsed:.3f}s"
    if isinstance(event, ev.GaveUp):
        what = event.failure.describe() if event.failure else type(event.exception).__name__
        return f"{name}: gave up after {event.attempts} attempts ({event.reason}): {what}"
    if isinstance(event, ev.BudgetExhaustedEvent):
        return f"{name}: retry budget exhausted (balance {event.balance:.2f})"
    if isinstance(event, ev.BreakerStateChanged):
        return f"{name}: circuit breaker {event.old} -> {event.new} ({event.reason})"
    if isinstance(event, ev.ConnectionEvent):
        text = f"{name}: connection {event.action}"
        if event.peer:
            text += f" {redact_text(event.peer)}"
        if event.idle_age is not None:
            text += f" idle {event.idle_age:.3f}s"
        if event.failure is not None:
            text += f": {event.failure.describe()}{_where(event.failure)}"
        return text
    if isinstance(event, ev.ClientDisconnected):
        who = f"client {redact_text(event.peer)}" if event.peer else "client"
        text = f"{name}: {who} disconnected from {redact_text(event.path) or '?'}"
        if event.elapsed is not None:
            text += f" after {event.elapsed:.3f}s"
        details = [d for d in (event.reason, event.how.upper()) if d]
        if details:
            text += f" ({', '.join(details)})"
        if event.cancelled:
            text += ", handler cancelled"
        return text
    if isinstance(event, ev.NoiseSuppressed):
        what = event.failure.describe() if event.failure else "connection fault"
        return f"{name}: suppressed {what}: {redact_text(event.message)}"
    return f"{name}: {type(event).__name__}"


def _where(failure: Failure | None) -> str:
    if failure is None:
        return ""
    reuse = {True: ", reused connection", False: ", fresh connection", None: ""}[failure.reused]
    return f", phase={failure.phase.value}{reuse}"


class LogHook:
    """A hook that logs every resetguard event with structured fields.

    Args:
        logger: a stdlib :class:`logging.Logger` / ``LoggerAdapter`` (fields in ``extra``),
            or a structlog logger (fields as key-value pairs). Default: ``resetguard.events``.
        levels: level per event type, overriding :data:`DEFAULT_LEVELS`.
        prefix: prefix of ``extra`` keys for stdlib loggers.

    Example::

        >>> import logging
        >>> from resetguard import ConnectionEvent
        >>> hook = LogHook(logging.getLogger("app"), levels={ConnectionEvent: logging.INFO})
    """

    __slots__ = ("_levels", "_stdlib", "logger", "prefix")

    def __init__(
        self,
        logger: Any = None,
        *,
        levels: Mapping[type[ev.Event], int] | None = None,
        prefix: str = "rg_",
    ) -> None:
        self.logger = logging.getLogger("resetguard.events") if logger is None else logger
        self._stdlib = isinstance(self.logger, (logging.Logger, logging.LoggerAdapter))
        if not self._stdlib and not callable(getattr(self.logger, "info", None)):
            raise TypeError(
                f"logger must be a logging.Logger or a structlog logger, got {logger!r}"
            )
        merged = dict(DEFAULT_LEVELS)
        for cls, level in (levels or {}).items():
            if not isinstance(level, int) or isinstance(level, bool):
                raise ValueError(f"level for {cls.__name__} must be an int, got {level!r}")
            merged[cls] = level
        self._levels = merged
        self.prefix = prefix

    def _level(self, event: ev.Event) -> int:
        if isinstance(event, ev.ConnectionEvent) and event.action == "failed":
            return max(logging.INFO, self._levels.get(ev.ConnectionEvent, logging.DEBUG))
        for cls in type(event).__mro__:
            level = self._levels.get(cls)
            if level is not None:
                return level
        return logging.INFO

    def __call__(self, event: ev.Event, /) -> None:
        level = self._level(event)
        if self._stdlib:
            if not self.logger.isEnabledFor(level):
                return  # nothing is built for a disabled level
            fields = event_fields(event)
            extra = {self.prefix + k: v for k, v in fields.items()}
            self.logger.log(level, "%s", describe_event(event), extra=extra)
            return
        fields = event_fields(event)
        method = getattr(self.logger, logging.getLevelName(level).lower(), self.logger.info)
        method(describe_event(event), **fields)
