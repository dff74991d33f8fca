"""Exporters for resetguard's monitor and events: Prometheus, OpenTelemetry, structured logging.

Each exporter lives in its own module and imports its third-party library only when that
module is imported, so ``import resetguard.instrumentation`` costs nothing:

* :mod:`resetguard.instrumentation.prometheus` (``pip install resetguard[prometheus]``):
  :class:`~resetguard.instrumentation.prometheus.ResetGuardCollector`, ``register()``;
* :mod:`resetguard.instrumentation.otel` (``pip install resetguard[otel]``): ``instrument()``;
* :mod:`resetguard.instrumentation.logging` (stdlib; structlog optional): ``LogHook``.

The names are also reachable lazily from this package, e.g.
``resetguard.instrumentation.register_prometheus(monitor)``.

Example::

    >>> import resetguard.instrumentation as inst
    >>> inst.LogHook.__name__
    'LogHook'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .logging import LogHook, describe_event, event_fields
    from .otel import OTelInstruments
    from .otel import instrument as instrument_otel
    from .prometheus import ResetGuardCollector
    from .prometheus import register as register_prometheus

__all__ = [
    "LogHook",
    "OTelInstruments",
    "ResetGuardCollector",
    "describe_event",
    "event_fields",
    "instrument_otel",
    "register_prometheus",
]

_LAZY = {
    "LogHook": ("logging", "LogHook"),
    "describe_event": ("logging", "describe_event"),
    "event_fields": ("logging", "event_fields"),
    "OTelInstruments": ("otel", "OTelInstruments"),
    "instrument_otel": ("otel", "instrument"),
    "ResetGuardCollector": ("prometheus", "ResetGuardCollector"),
    "register_prometheus": ("prometheus", "register"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
