"""Pure ASGI middleware: notice the client leaving, stop the handler, drop late sends, tell.

No import beyond the standard library: the middleware speaks ASGI 3 and runs under any
asyncio server (uvicorn with h11/httptools/uvloop, hypercorn, granian).

How it works: a small watcher task reads the server's ``receive()`` for the whole request,
so the ``http.disconnect`` message arrives while the handler is busy instead of only when
it next reads. Body messages are queued, unchanged and in order, for the application's own
``receive()`` (read-ahead stops at ``max_buffer`` bytes so an unread upload cannot fill the
memory). When the disconnect arrives the per-request :class:`DisconnectSignal` is set, the
request task is cancelled (app-wide, or only for routes marked with
:func:`cancel_on_disconnect`), registered streaming bodies are closed, later ``send()`` calls
are dropped, and a :class:`~resetguard.ClientDisconnected` event is emitted.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Final, TypeVar, cast

from .._classify import Failure, classify
from .._events import ClientDisconnected, emit, hooks_active
from ._signal import DisconnectSignal, _current

__all__ = ["CancelOnDisconnect", "cancel_on_disconnect", "stream"]

_log = logging.getLogger("resetguard.asgi")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_TCP_INFO: Final = getattr(socket, "TCP_INFO", None)
_TCP_CLOSE: Final = 7  # linux/tcp_states.h: the peer reset the connection
_FIN_STATES: Final = frozenset({6, 8, 9, 11})  # TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING
_FINAL_SENDS: Final = frozenset({"http.response.pathsend", "http.response.zerocopysend"})


class CancelOnDisconnect:
    """ASGI middleware that stops a request's work the moment its client goes away.

    Args:
        app: the ASGI application to wrap.
        cancel: ``True`` cancels every handler whose client leaves; ``False`` cancels only
            handlers decorated with :func:`cancel_on_disconnect` (the others still get the
            signal, the dropped sends and the event).
        max_buffer: request-body bytes read ahead of the application before the watcher
            pauses (an application that never reads a large upload is then watched again
            once it reads).
        name: ``name`` of the emitted :class:`~resetguard.ClientDisconnected` events.
        on_disconnect: called with each event, in addition to the process-wide hooks.
        log: log one INFO line per disconnect on the ``resetguard.asgi`` logger, so
            aborted requests show up in the logs (servers log none, or ``200 OK``).
        detect_how: tell a FIN from an RST when the server exposes the socket (uvicorn):
            the request holds a duplicate of the socket's descriptor while it runs.

    Example::

        from starlette.applications import Starlette
        from resetguard.asgi import CancelOnDisconnect

        app = CancelOnDisconnect(Starlette(routes=[...]))
    """

    __slots__ = ("app", "cancel", "detect_how", "log", "max_buffer", "name", "on_disconnect")

    def __init__(
        self,
        app: ASGIApp,
        *,
        cancel: bool = True,
        max_buffer: int = 1 << 20,
        name: str = "asgi",
        on_disconnect: Callable[[ClientDisconnected], None] | None = None,
        log: bool = True,
        detect_how: bool = True,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        if not isinstance(cancel, bool):
            raise TypeError(f"cancel must be True or False, got {cancel!r}")
        if not isinstance(max_buffer, int) or isinstance(max_buffer, bool) or max_buffer < 0:
            raise ValueError(f"max_buffer must be an int >= 0, got {max_buffer!r}")
        if on_disconnect is not None and not callable(on_disconnect):
            raise TypeError(f"on_disconnect must be callable, got {on_disconnect!r}")
        self.app = app
        self.cancel = cancel
        self.max_buffer = max_buffer
        self.name = name
        self.on_disconnect = on_disconnect
        self.log = log
        self.detect_how = detect_how

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = _Request(self, scope, receive, send)
        token = _current.set(request)
        try:
            await request.run()
        finally:
            _current.reset(token)


class _Request:
    """The state of one HTTP request under the middleware.

    No ``__slots__``: the class attributes are the defaults, so a request that never waits
    costs six attribute stores (this object is built for every request).
    """

    buffered = 0
    waiter: asyncio.Future[None] | None = None
    space: asyncio.Future[None] | None = None
    response_started = False
    response_done = False
    finished = False
    cancel_issued = False
    opted_in = False
    task: asyncio.Task[Any] | None = None
    watcher: asyncio.Task[None] | None = None
    probe: socket.socket | None = None
    direct = False  # the app is awaiting the server's receive() itself
    watch_pending = False
    watch_error: BaseException | None = None
    queue: deque[Message]
    streams: list[_SyncStream[Any] | _AsyncStream[Any]]

    def __init__(self, mw: CancelOnDisconnect, scope: Scope, receive: Receive, send: Send):
        self.mw = mw
        self.scope = scope
        self.reader = receive
        self.sender = send
        self.signal = DisconnectSignal()
        self.started = time.monotonic()
        self.streams = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        # Watch from the loop's next iteration: a request answered without ever suspending
        # (most fast requests) pays for one scheduled callback, not for a task and a probe.
        # Anything that really waits is watched before the loop runs anything else.
        handle = loop.call_soon(self._start_watching)
        try:
            try:
                await self.mw.app(self.scope, self.receive, self.send)
            except asyncio.CancelledError:
                if not self._absorb_own_cancel():
                    raise
                await self._close_response()
            else:
                self._absorb_own_cancel()
        finally:
            self.finished = True
            handle.cancel()
            watcher = self.watcher
            if watcher is not None and not watcher.done():
                watcher.cancel()
            self._close_probe()

    def _start_watching(self) -> None:
        if self.finished or self.watcher is not None or self.signal.flag:
            return
        if self.mw.detect_how and self.probe is None:
            self.probe = _open_probe(self.reader)
        if self.direct:
            # The app is in the server's receive() right now, and so will see a disconnect
            # itself; two readers of one receive() are not allowed. Start when it returns.
            self.watch_pending = True
            return
        self.queue = deque()
        self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _close_response(self) -> None:
        """End the response of a cancelled handler with 499 (nginx's "client closed request").

        The server drops it (the client is gone), but a wrapper between the server and this
        middleware, such as Starlette's ``BaseHTTPMiddleware``, needs a response to unwind
        without raising "No response returned", and access logs get a line saying 499.
        """
        try:
            if not self.response_started:
                await self.sender({"type": "http.response.start", "status": 499, "headers": []})
            if not self.response_done:
                await self.sender({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:
            pass  # our own message, to a client that is gone: servers may refuse it any way

    def _absorb_own_cancel(self) -> bool:
        """True when the only pending cancellation of the task is ours (then it is undone)."""
        if not self.cancel_issued:
            return False
        self.cancel_issued = False
        uncancel = getattr(self.task, "uncancel", None)
        if uncancel is None:  # Python 3.10: no cancellation count to keep straight
            return True
        return bool(uncancel() == 0)

    # -- the application's side

    async def receive(self) -> Message:
        if self.watcher is None:
            return await self._receive_direct()
        while not self.queue:
            if self.signal.flag:
                return {"type": "http.disconnect"}
            if self.watcher.done():  # the server's receive() ended or failed
                error = self.watch_error
                if error is not None:
                    raise error
                return {"type": "http.disconnect"}
            waiter = self.waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        message = self.queue.popleft()
        if message.get("type") == "http.request":
            self.buffered -= len(message.get("body", b""))
            space = self.space
            if space is not None and not space.done() and self.buffered <= self.mw.max_buffer:
                space.set_result(None)
        return message

    async def _receive_direct(self) -> Message:
        """Before the watcher runs, the app reads the server's receive() itself."""
        if self.signal.flag:
            return {"type": "http.disconnect"}
        self.direct = True
        try:
            message = await self.reader()
        except BaseException:  # cancelled (Starlette's is_disconnected() peeks this way)
            self.direct = False
            self._resume_watch()
            raise
        self.direct = False
        if message.get("type") == "http.disconnect" and not self.response_done:
            self.gone("disconnect")
        self._resume_watch()
        return message

    def _resume_watch(self) -> None:
        if self.watch_pending:
            self.watch_pending = False
            self._start_watching()

    async def send(self, message: Message) -> None:
        if self.signal.flag:
            return  # nobody is listening: drop it quietly
        kind = message.get("type")
        if kind == "http.response.start":
            self.response_started = True
        elif (kind == "http.response.body" and not message.get("more_body", False)) or (
            kind in _FINAL_SENDS
        ):
            self.response_done = True
        try:
            await self.sender(message)
        except OSError as exc:  # ASGI 2.4 servers may raise on a dead connection
            how = "rst" if isinstance(exc, ConnectionResetError) else ""
            self.gone("send_failed", how=how, failure=classify(exc))

    # -- the watcher's side

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.buffered > self.mw.max_buffer:
                self.space = loop.create_future()
                await self.space
                self.space = None
            try:
                message = await self.reader()
            except Exception as exc:  # the app's next receive() raises it, as it would have
                failure = classify(exc)
                if failure is not None and not self.response_done and not self.finished:
                    self.gone("receive_failed", failure=failure)
                else:
                    self.watch_error = exc
                self._wake_app()
                return
            if message.get("type") == "http.disconnect":
                if not self.response_done and not self.finished:
                    self.gone("disconnect")
                else:  # the response is complete: pass the server's word on, unchanged
                    self.queue.append(message)
                    self._wake_app()
                return
            self.queue.append(message)
            self.buffered += len(message.get("body", b""))
            self._wake_app()

    def _wake_app(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def gone(self, reason: str, *, how: str = "", failure: Failure | None = None) -> None:
        """The client has left: signal, cancel, close streams, report. Event-loop thread."""
        signal = self.signal
        if signal.flag:
            return
        elapsed = time.monotonic() - self.started
        signal.how = how or self._probe_how()
        signal.reason = reason
        signal.set()
        self._wake_app()
        if (self.mw.cancel or self.opted_in) and not self.finished:
            self._cancel()
        for body in self.streams:
            body.close_soon()
        self._report(elapsed, reason, failure)

    def _cancel(self) -> None:
        task = self.task
        if task is not None and not task.done() and not self.cancel_issued:
            self.cancel_issued = True
            task.cancel("client disconnected")

    def opt_in(self) -> None:
        """Called by a :func:`cancel_on_disconnect` handler (possibly from a worker thread)."""
        self.opted_in = True
        if self.signal.flag and not self.finished:
            task = self.task
            if task is None:
                return
            loop = task.get_loop()
            try:
                same = asyncio.get_running_loop() is loop
            except RuntimeError:
                same = False
            if same:
                self._cancel()
            else:
                loop.call_soon_threadsafe(self._cancel)

    def _report(self, elapsed: float, reason: str, failure: Failure | None) -> None:
        mw = self.mw
        want_log = mw.log and _log.isEnabledFor(logging.INFO)
        if not (want_log or mw.on_disconnect is not None or hooks_active()):
            return
        scope = self.scope
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else ""
        path = f"{scope.get('method', '')} {scope.get('path', '')}".strip()
        event = ClientDisconnected(
            name=mw.name,
            path=path,
            peer=peer,
            elapsed=elapsed,
            reason=reason,
            how=self.signal.how,
            cancelled=self.cancel_issued,
            failure=failure,
        )
        if want_log:
            _log.info(
                "client %s left %s after %.3fs (%s%s)%s",
                peer or "?",
                path,
                elapsed,
                reason,
                f", {event.how.upper()}" if event.how else "",
                ", handler cancelled" if event.cancelled else "",
            )
        emit(event, mw.on_disconnect)  # type: ignore[arg-type]

    # -- FIN or RST

    def _probe_how(self) -> str:
        probe = self.probe
        if probe is None:
            return ""
        try:
            state = probe.getsockopt(socket.IPPROTO_TCP, cast(int, _TCP_INFO), 1)[0]
        except OSError:
            return ""
        finally:
            self._close_probe()
        if state == _TCP_CLOSE:
            return "rst"
        return "fin" if state in _FIN_STATES else ""

    def _close_probe(self) -> None:
        probe = self.probe
        if probe is not None:
            self.probe = None
            probe.close()


def _open_probe(receive: Receive) -> socket.socket | None:
    """A duplicate of the request's socket, when the server lets us reach it (uvicorn).

    Holding it keeps the kernel socket alive after the server closes its own descriptor,
    so its TCP state still says how the peer left: CLOSE after an RST, CLOSE_WAIT after a FIN.
    """
    if _TCP_INFO is None:
        return None
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        return None
    try:
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        fd = sock.fileno()
        if fd < 0:
            return None
        return socket.socket(sock.family, socket.SOCK_STREAM, 0, os.dup(fd))
    except (OSError, AttributeError):
        return None


# --------------------------------------------------------------------------- per route


def cancel_on_disconnect(handler: F) -> F:
    """Mark one route handler to be cancelled when its client leaves.

    Use it with ``CancelOnDisconnect(app, cancel=False)`` to opt routes in one by one. The
    wrapper keeps the handler's signature, so FastAPI's dependency injection still works. A
    sync handler runs in a thread, which cannot be interrupted: it should poll
    :func:`current_disconnect` between steps.

    Example::

        from resetguard.asgi import cancel_on_disconnect

        @cancel_on_disconnect
        async def report(request):
            ...
    """
    if not callable(handler):
        raise TypeError(f"cancel_on_disconnect() needs a callable, got {handler!r}")
    if inspect.iscoroutinefunction(handler):
        afn = cast(Callable[..., Awaitable[Any]], handler)

        @functools.wraps(handler)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            request = _current.get()
            if request is not None:
                request.opt_in()
            return await afn(*args, **kwargs)

        return cast(F, async_wrapper)

    @functools.wraps(handler)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        request = _current.get()
        if request is not None:
            request.opt_in()
        return handler(*args, **kwargs)

    return cast(F, sync_wrapper)


# --------------------------------------------------------------------------- streams


def stream(body: Iterable[T] | AsyncIterable[T]) -> Iterator[T] | AsyncIterator[T]:
    """Wrap a streaming body so that it is closed as soon as the client leaves.

    Servers leave a sync generator suspended at ``yield`` until the garbage collector finds
    it (seconds later, or never), so its ``finally`` blocks and context managers do not run.
    Wrapped, a suspended generator is closed at once on disconnect; one that is busy in a
    worker thread is closed as soon as its current step returns. Outside a request under
    :class:`CancelOnDisconnect` the body is returned unchanged.

    Example::

        from starlette.responses import StreamingResponse
        from resetguard.asgi import stream

        def rows():
            with open_cursor() as cursor:
                yield from cursor

        async def export(request):
            return StreamingResponse(stream(rows()))
    """
    request = _current.get()
    if request is None:
        if isinstance(body, AsyncIterable):
            return aiter(body) if not isinstance(body, AsyncIterator) else body
        return iter(body)
    wrapped: _SyncStream[T] | _AsyncStream[T]
    if isinstance(body, AsyncIterable):
        wrapped = _AsyncStream(body, request)
    elif isinstance(body, Iterable):
        wrapped = _SyncStream(body, request)
    else:
        raise TypeError(f"stream() needs an iterable or async iterable, got {body!r}")
    request.streams.append(wrapped)
    if request.signal.flag:
        wrapped.close_soon()
    return wrapped


class _SyncStream(Iterator[T]):
    __slots__ = ("_closed", "_it", "_lock", "_request", "_running")

    def __init__(self, body: Iterable[T], request: _Request) -> None:
        import threading

        self._it = iter(body)
        self._request = request
        self._lock = threading.Lock()
        self._running = False
        self._closed = False

    def __iter__(self) -> _SyncStream[T]:
        return self

    def __next__(self) -> T:
        with self._lock:
            if self._closed:
                raise StopIteration
            self._running = True
        try:
            item = next(self._it)
        except BaseException:
            with self._lock:
                self._running = False
                self._closed = True
            raise
        with self._lock:
            self._running = False
        if self._request.signal.flag:
            self._close()
            raise StopIteration
        return item

    def close_soon(self) -> None:
        with self._lock:
            if self._running:
                return  # the thread running a step closes it when the step returns
        self._close()

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        self._close()


class _AsyncStream(AsyncIterator[T]):
    __slots__ = ("_closed", "_it", "_request", "_running")

    def __init__(self, body: AsyncIterable[T], request: _Request) -> None:
        self._it = aiter(body)
        self._request = request
        self._running = False
        self._closed = False

    def __aiter__(self) -> _AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        self._running = True
        try:
            item = await anext(self._it)
        except BaseException:
            self._closed = True
            raise
        finally:
            self._running = False
        if self._request.signal.flag:
            await self.aclose()
            raise StopAsyncIteration
        return item

    def close_soon(self) -> None:
        # A generator busy in __anext__ receives the handler's cancellation itself.
        if self._running or self._closed:
            return
        task = asyncio.get_running_loop().create_task(self.aclose())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._it, "aclose", None)
        if close is not None:
            await close()


_background: set[asyncio.Task[None]] = set()
