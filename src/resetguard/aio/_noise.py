"""Demote connection-reset noise from asyncio and threads to counted debug events.

Three places print a reset as if it were a bug:

* the event loop's exception handler (``Unhandled exception in client_connected_cb``,
  ``Task exception was never retrieved``, uvloop's closed-handler ``RuntimeError``);
* the ``asyncio`` logger, which never goes through that handler:
  ``socket.send() raised exception.`` (one WARNING per write to a dead connection, hundreds
  for one dead TLS stream) and debug mode's ``Fatal write/read error``;
* ``threading.excepthook``, for a thread that dies of a reset.

Each is covered here; whatever is not a connection fault goes on unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Final

from .._classify import Failure, Kind, classify
from .._events import NoiseSuppressed, emit

__all__ = [
    "AsyncioLogFilter",
    "NOISE_KINDS",
    "NoiseCounter",
    "QuietResets",
    "ResetExceptionHandler",
    "ThreadResetHook",
    "quiet_resets",
    "reset_noise",
]

_log = logging.getLogger("resetguard.aio")

#: The fault kinds treated as noise: the peer left. Timeouts, refused connections, DNS and
#: TLS verification errors are real problems and are never hidden.
NOISE_KINDS: Final = frozenset({Kind.RESET, Kind.BROKEN_PIPE, Kind.ABORTED, Kind.CLOSED})

# asyncio's own wording for a write to a transport whose connection is already lost: one
# WARNING per write once five were lost (selector_events, proactor_events and uvloop for
# TCP; sslproto for TLS). No exception is attached to classify; the wording is the proof.
_WRITE_ON_DEAD: Final = frozenset({"socket.send() raised exception.", "SSL connection is closed"})


def reset_noise(exc: BaseException | None) -> Failure | None:
    """The classified fault when ``exc`` means "the peer went away", else ``None``.

    Example::

        >>> from resetguard.aio import reset_noise
        >>> reset_noise(ConnectionResetError(104, "Connection reset by peer")).kind.value
        'reset'
        >>> reset_noise(RuntimeError("boom")) is None
        True
    """
    if exc is None or not isinstance(exc, Exception):
        return None
    failure = classify(exc)
    if failure is None or failure.kind not in NOISE_KINDS:
        return None
    return failure


class NoiseCounter:
    """Counts what was suppressed, by origin, and emits one
    :class:`~resetguard.NoiseSuppressed` event (and a DEBUG log line) for each."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def count(self, origin: str, message: str, failure: Failure | None) -> None:
        with self._lock:
            self._counts[origin] = self._counts.get(origin, 0) + 1
        if _log.isEnabledFor(logging.DEBUG):
            what = failure.describe() if failure is not None else "write to a lost connection"
            _log.debug("suppressed %s from %s: %s", what, origin, message)
        emit(NoiseSuppressed(name=origin, message=message, failure=failure))

    @property
    def counts(self) -> dict[str, int]:
        """Suppressed reports so far, by origin (a copy)."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


LoopHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class ResetExceptionHandler:
    """An event-loop exception handler that counts resets and passes the rest on.

    Everything that is not reset noise goes to ``fallback`` (the handler that was installed
    before, or the loop's default handler), unchanged.

    Example::

        import asyncio
        from resetguard.aio import ResetExceptionHandler

        loop = asyncio.new_event_loop()
        loop.set_exception_handler(ResetExceptionHandler())
    """

    __slots__ = ("counter", "fallback")

    def __init__(
        self, fallback: LoopHandler | None = None, *, counter: NoiseCounter | None = None
    ) -> None:
        if fallback is not None and not callable(fallback):
            raise TypeError(f"fallback must be a loop exception handler, got {fallback!r}")
        self.fallback = fallback
        self.counter = counter if counter is not None else NoiseCounter()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        failure = reset_noise(context.get("exception"))
        if failure is not None:
            self.counter.count("asyncio.handler", str(context.get("message", "")), failure)
            return
        if self.fallback is not None:
            self.fallback(loop, context)
        else:
            loop.default_exception_handler(context)


class AsyncioLogFilter(logging.Filter):
    """A filter for the ``asyncio`` logger that drops reset noise and keeps the rest.

    It drops ``socket.send() raised exception.`` and ``SSL connection is closed`` (logged
    for every write to a connection already lost) and any record whose attached exception
    is reset noise (debug mode's ``Fatal write error on socket transport``, the default
    handler's tracebacks).

    Example::

        >>> import logging
        >>> from resetguard.aio import AsyncioLogFilter
        >>> logging.getLogger("asyncio").addFilter(AsyncioLogFilter())
    """

    def __init__(self, *, counter: NoiseCounter | None = None) -> None:
        super().__init__()
        self.counter = counter if counter is not None else NoiseCounter()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if isinstance(msg, str) and msg in _WRITE_ON_DEAD and not record.args:
            self.counter.count("asyncio.log", msg, None)
            return False
        exc_info = record.exc_info
        if exc_info and exc_info[1] is not None:
            failure = reset_noise(exc_info[1])
            if failure is not None:
                self.counter.count("asyncio.log", record.getMessage(), failure)
                return False
        return True


class ThreadResetHook:
    """A ``threading.excepthook`` that counts threads dying of a reset and passes the rest
    to the hook installed before it.

    Example::

        import threading
        from resetguard.aio import ThreadResetHook

        threading.excepthook = ThreadResetHook(threading.excepthook)
    """

    __slots__ = ("counter", "previous")

    def __init__(
        self,
        previous: Callable[[threading.ExceptHookArgs], object] | None = None,
        *,
        counter: NoiseCounter | None = None,
    ) -> None:
        self.previous = previous if previous is not None else threading.__excepthook__
        self.counter = counter if counter is not None else NoiseCounter()

    def __call__(self, args: threading.ExceptHookArgs) -> None:
        failure = reset_noise(args.exc_value)
        if failure is not None:
            name = args.thread.name if args.thread is not None else "?"
            self.counter.count("threading", f"thread {name}: {args.exc_value!r}", failure)
            return
        self.previous(args)


class QuietResets:
    """Installs the three filters on entry; restores what was there before on exit.

    Built by :func:`quiet_resets`; ``counter.counts`` tells what was suppressed, by origin.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        handler: bool = True,
        log: bool = True,
        threads: bool = True,
    ) -> None:
        self.loop = loop
        self.counter = NoiseCounter()
        self._want = (handler, log, threads)
        self._previous_handler: LoopHandler | None = None
        self._handler: ResetExceptionHandler | None = None
        self._filter: AsyncioLogFilter | None = None
        self._hook: ThreadResetHook | None = None
        self._previous_hook: Callable[[threading.ExceptHookArgs], object] | None = None

    def __enter__(self) -> QuietResets:
        handler, log, threads = self._want
        if handler:
            loop = self.loop
            if loop is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
            if loop is not None:
                self.loop = loop
                self._previous_handler = loop.get_exception_handler()
                self._handler = ResetExceptionHandler(self._previous_handler, counter=self.counter)
                loop.set_exception_handler(self._handler)
        if log:
            self._filter = AsyncioLogFilter(counter=self.counter)
            logging.getLogger("asyncio").addFilter(self._filter)
        if threads:
            self._previous_hook = threading.excepthook
            self._hook = ThreadResetHook(self._previous_hook, counter=self.counter)
            threading.excepthook = self._hook
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handler is not None and self.loop is not None:
            if self.loop.get_exception_handler() is self._handler:
                self.loop.set_exception_handler(self._previous_handler)
            self._handler = None
        if self._filter is not None:
            logging.getLogger("asyncio").removeFilter(self._filter)
            self._filter = None
        if self._hook is not None:
            if threading.excepthook is self._hook:
                threading.excepthook = self._previous_hook  # type: ignore[assignment]
            self._hook = None


def quiet_resets(
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    handler: bool = True,
    log: bool = True,
    threads: bool = True,
) -> QuietResets:
    """Demote reset noise to counted debug events while the ``with`` block runs.

    Args:
        loop: the loop whose exception handler to set; default: the running loop, if any
            (outside a running loop only the logger filter and the thread hook apply).
        handler / log / threads: install the loop exception handler, the ``asyncio``
            logger filter, the ``threading.excepthook`` filter.

    Example::

        import asyncio
        from resetguard.aio import quiet_resets

        async def main() -> None:
            with quiet_resets() as quiet:
                await asyncio.sleep(0)  # serve clients here
            print(quiet.counter.counts)

        asyncio.run(main())
    """
    for label, value in (("handler", handler), ("log", log), ("threads", threads)):
        if not isinstance(value, bool):
            raise TypeError(f"{label} must be True or False, got {value!r}")
    if loop is not None and not isinstance(loop, asyncio.AbstractEventLoop):
        raise TypeError(f"loop must be an asyncio event loop, got {loop!r}")
    return QuietResets(loop, handler=handler, log=log, threads=threads)
