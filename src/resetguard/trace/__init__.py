"""Connection tracer: log every connection event with its timing, to debug resets.

For **httpx** (through httpcore's ``trace`` request extension), **requests/urllib3** (by
wrapping a few connection and pool methods) and **raw sockets** (:class:`TracedSocket`,
:func:`create_connection`), one line per event: DNS, connect, TLS, connection opened or
reused (with its idle age), request sent, first byte, response complete, returned to the
pool, closed, and errors classified with phase and reuse.

Off by default and free when off: nothing is patched until :func:`enable` runs, and
:func:`disable` restores every original. ``RESETGUARD_TRACE=1`` in the environment enables it
(with output to stderr) when this module is first imported.

Lines go to the ``resetguard.trace`` logger at INFO, with the fields as ``extra``
(``rg_conn``, ``rg_trace_step``, ``rg_idle_age`` …), or to your own ``sink``. Connection
lifecycle steps are also emitted as :class:`~resetguard.ConnectionEvent` to resetguard hooks,
so an installed :class:`Monitor` counts them.

Example::

    >>> import resetguard.trace
    >>> records = []
    >>> resetguard.trace.enable(sink=records.append)
    >>> resetguard.trace.enabled()
    True
    >>> resetguard.trace.disable()
    >>> resetguard.trace.enabled()
    False
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from . import _core
from ._core import STEPS, Sink, TraceRecord, log_sink
from ._socket import TracedSocket, create_connection

__all__ = [
    "ENV_VAR",
    "STEPS",
    "Sink",
    "TraceRecord",
    "TracedSocket",
    "create_connection",
    "disable",
    "enable",
    "enabled",
    "libraries",
    "log_sink",
    "tracing",
]

#: Environment variable read once, when ``resetguard.trace`` is first imported.
ENV_VAR = "RESETGUARD_TRACE"

_LIBRARIES = ("httpx", "urllib3", "dns")
_patches = _core.Patches()
_state: dict[str, object] = {"handler": None, "libraries": ()}


def enable(
    *,
    sink: Sink | None = None,
    stderr: bool = False,
    libraries: Sequence[str] = _LIBRARIES,
) -> None:
    """Start tracing connections (idempotent: a second call re-applies the new settings).

    Args:
        sink: receives each :class:`TraceRecord`; default: log on ``resetguard.trace``.
        stderr: also attach a stderr handler to ``resetguard.trace`` (what ``RESETGUARD_TRACE=1``
            does), for scripts without logging configuration.
        libraries: which of ``"httpx"``, ``"urllib3"``, ``"dns"`` to patch; those not
            installed are skipped. Raw sockets need no patch: wrap them.

    Importing httpx's httpcore and urllib3 happens here, never at ``import resetguard``.
    """
    if sink is not None and not callable(sink):
        raise TypeError(f"sink must be callable, got {sink!r}")
    if isinstance(libraries, str):
        raise TypeError(f"libraries must be a tuple of names, got the string {libraries!r}")
    unknown = [name for name in libraries if name not in _LIBRARIES]
    if unknown:
        raise ValueError(f"unknown libraries {unknown!r}; expected some of {list(_LIBRARIES)!r}")
    with _patches.lock:
        disable()
        _core.output.sink = sink if sink is not None else log_sink
        installed: list[str] = []
        try:
            if "httpx" in libraries:
                from . import _httpx

                if _httpx.install(_patches):
                    installed.append("httpx")
            if "urllib3" in libraries:
                from . import _urllib3

                if _urllib3.install(_patches):
                    installed.append("urllib3")
            if "dns" in libraries:
                from ._socket import install_dns

                install_dns(_patches)
                installed.append("dns")
        except BaseException:
            _patches.undo()
            raise
        _state["libraries"] = tuple(installed)
        if stderr:
            logger = logging.getLogger("resetguard.trace")
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s resetguard.trace %(message)s"))
            logger.addHandler(handler)
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
            _state["handler"] = handler
        _state["enabled"] = True


def disable() -> None:
    """Stop tracing and restore every patched method (no-op when not enabled)."""
    with _patches.lock:
        _patches.undo()
        _core.output.sink = log_sink
        handler = _state.get("handler")
        if isinstance(handler, logging.Handler):
            logging.getLogger("resetguard.trace").removeHandler(handler)
        _state.update(handler=None, libraries=(), enabled=False)


def enabled() -> bool:
    """Whether :func:`enable` is in effect."""
    return bool(_state.get("enabled"))


def libraries() -> tuple[str, ...]:
    """The libraries actually patched by the last :func:`enable`."""
    value = _state.get("libraries", ())
    return value if isinstance(value, tuple) else ()


@contextmanager
def tracing(*, sink: Sink | None = None, libraries: tuple[str, ...] = _LIBRARIES) -> Iterator[None]:
    """``with tracing(): ...`` — enable for a block, then disable.

    Example::

        >>> import resetguard.trace
        >>> with resetguard.trace.tracing(sink=print):
        ...     pass
        >>> resetguard.trace.enabled()
        False
    """
    enable(sink=sink, libraries=libraries)
    try:
        yield
    finally:
        disable()


def _env_enabled(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


if _env_enabled(os.environ.get(ENV_VAR)):
    enable(stderr=True)
