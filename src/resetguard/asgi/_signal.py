"""The per-request disconnect signal that handlers await, poll, or check from a thread."""

from __future__ import annotations

import asyncio
import threading
from contextvars import ContextVar
from typing import Any

__all__ = ["DisconnectSignal", "current_disconnect"]


class DisconnectSignal:
    """Set once when the client of the current request has gone away.

    Safe to read from any thread: :meth:`is_set` is a plain attribute read, so a sync handler
    running in a thread pool can poll it between steps. Async code can ``await`` :meth:`wait`;
    threads can block in :meth:`wait_sync`. The event loop and the thread-side event are
    created only when someone waits, so an unused signal costs one small object per request.

    Example::

        >>> from resetguard.asgi import DisconnectSignal
        >>> signal = DisconnectSignal()
        >>> signal.is_set()
        False
        >>> signal.set(); signal.is_set()
        True
    """

    __slots__ = ("_loop", "_thread_event", "_waiters", "flag", "how", "reason")

    # One lock for every signal: it guards only the rare waiter registrations, and a
    # signal is built for every request.
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.flag = False
        #: ``"fin"`` or ``"rst"`` when the TCP-level end is known, else ``""``.
        self.how = ""
        #: How the end was observed (``"disconnect"``, ``"send_failed"``); ``""`` until set.
        self.reason = ""
        self._waiters: list[asyncio.Future[None]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_event: threading.Event | None = None

    def __bool__(self) -> bool:
        return self.flag

    def __repr__(self) -> str:
        if not self.flag:
            return "<DisconnectSignal unset>"
        how = f"/{self.how}" if self.how else ""
        return f"<DisconnectSignal set, {self.reason or '?'}{how}>"

    def is_set(self) -> bool:
        """True once the client has gone away."""
        return self.flag

    def set(self) -> None:
        """Mark the client as gone and wake every waiter (idempotent; any thread)."""
        with self._lock:
            if self.flag:
                return
            self.flag = True
            waiters, self._waiters = self._waiters, None
            event = self._thread_event
            loop = self._loop
        if event is not None:
            event.set()
        if waiters and loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                _wake(waiters)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_wake, waiters)

    async def wait(self) -> None:
        """Return once the client has gone away (returns at once if it already has)."""
        if self.flag:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.is_set():  # another thread may have set it meanwhile
                return
            self._loop = loop
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(future)
        await future

    def wait_sync(self, timeout: float | None = None) -> bool:
        """Block the calling thread until the client goes away or ``timeout`` passes.

        Returns :meth:`is_set`. Never call it on the event loop's thread.
        """
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout >= 0):
            raise ValueError(f"timeout must be a number >= 0 or None, got {timeout!r}")
        with self._lock:
            if self.flag:
                return True
            if self._thread_event is None:
                self._thread_event = threading.Event()
            event = self._thread_event
        event.wait(timeout)
        return self.flag


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(None)


_current: ContextVar[Any] = ContextVar("resetguard_asgi_request", default=None)


def current_disconnect() -> DisconnectSignal | None:
    """The disconnect signal of the request being handled, or ``None`` outside one.

    Works in async handlers and in sync handlers that Starlette/FastAPI run in a thread
    (the context is copied into the thread).

    Example::

        from resetguard.asgi import current_disconnect

        def report() -> dict[str, int]:
            gone = current_disconnect()
            for step in range(100):
                if gone is not None and gone.is_set():
                    break
                do_step(step)
    """
    state = _current.get()
    return None if state is None else state.signal
