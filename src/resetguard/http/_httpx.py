"""httpx adapter: :class:`RetryTransport`, :class:`AsyncRetryTransport`, :class:`Client`,
:class:`AsyncClient`.

The transport wraps any httpx transport. When that transport is httpx's own
``HTTPTransport`` (the default), resetguard also wraps httpcore's network backend, so each
attempt knows whether its connection was reused, how long it had been idle, how many bytes
went out and whether any response byte came back; and an idle connection is retired
(reported readable, which makes httpcore discard it) once it passes its origin's idle limit:
when a request next wants it, and for the sync transport also in the background, as soon
as the limit passes (:mod:`resetguard.http._reaper`).
With any other transport the rules fall back to what the exception says, conservatively.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpcore
import httpx

from .._drivers import AttemptContext, adrive, drive
from .._events import ConnectionEvent, emit, hooks_active
from .._retry import Retry
from . import _reaper
from ._guards import OriginGuards
from ._idle import IdleLimits, expires_at, origin_of
from ._rules import HTTPPolicy, Progress
from ._run import Exchange, current, resolve_policy

__all__ = [
    "BUFFER_EXTENSION",
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "AsyncRetryTransport",
    "Client",
    "RetryTransport",
]

#: Request extension set by :class:`Client` when the caller reads the whole body (not
#: ``client.stream(...)``): the transport then reads it inside the retry loop, so a reset
#: mid-body is retried instead of surfacing.
BUFFER_EXTENSION = "resetguard.buffer"
#: 30 s per read/write (the playbook's request timeout), but 5 s to connect: a healthy
#: network connects in milliseconds, and a SYN unanswered for 5 s will not be answered.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
#: httpx's own pool sizes; the idle limit comes from the policy.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

_monotonic = time.monotonic
#: Close an expired connection this long after its limit passes: the limit's own check is
#: "idle > limit", and a wake-up a hair early would find nothing to close.
_REAP_SLACK = 0.002
#: The reaper's shortest wait for a connection that is in use: no busy loop on a long download.
_REAP_MIN_WAIT = 0.05


def _limits(policy: HTTPPolicy, limits: httpx.Limits | None) -> httpx.Limits:
    base = limits or DEFAULT_LIMITS
    return httpx.Limits(
        max_connections=base.max_connections,
        max_keepalive_connections=base.max_keepalive_connections,
        keepalive_expiry=policy.idle_timeout,
    )


def _origin(url: httpx.URL) -> str:
    return origin_of(str(url))


# --------------------------------------------------------------------------- sockets


class _Conn:
    """State of one connection, shared by its plain and TLS streams."""

    __slots__ = (
        "__weakref__",
        "closed",
        "created",
        "last_used",
        "limits",
        "max_age",
        "origin",
        "uses",
    )

    def __init__(self, origin: str, limits: IdleLimits, max_age: float | None) -> None:
        self.origin = origin
        self.limits = limits
        self.max_age = max_age
        self.created = self.last_used = _monotonic()
        self.uses = 0
        self.closed = False

    def due(self) -> float | None:
        """When this connection passes its idle limit or its max age (None: never)."""
        return expires_at(
            self.last_used, self.created, self.limits.limit(self.origin), self.max_age
        )

    def bind(self, progress: Progress) -> None:
        """The first write of an attempt: record whether this connection is reused."""
        now = _monotonic()
        progress.connected = True
        progress.received = False
        progress.peer = self.origin
        reused = self.uses > 0
        progress.reused = reused
        if reused:
            progress.idle_age = now - self.last_used
        self.uses += 1
        if reused and hooks_active():
            emit(
                ConnectionEvent(
                    name="httpx", action="reused", peer=self.origin, idle_age=progress.idle_age
                )
            )

    def readable(self, inner: Any) -> bool:
        """httpcore asks before reusing an idle connection; True makes it discard the connection."""
        now = _monotonic()
        idle = now - self.last_used
        due = self.due()
        if due is not None and now > due:
            if hooks_active():
                emit(
                    ConnectionEvent(name="httpx", action="expired", peer=self.origin, idle_age=idle)
                )
            return True
        readable = bool(inner.get_extra_info("is_readable"))
        if readable and self.uses:
            self.limits.closed(self.origin, idle)  # the server closed it while idle
            if hooks_active():
                emit(
                    ConnectionEvent(name="httpx", action="closed", peer=self.origin, idle_age=idle)
                )
        return readable


def _wrote(progress: Progress | None, conn: _Conn, n: int) -> None:
    conn.last_used = _monotonic()
    if progress is not None:
        progress.bytes_sent += n


def _read(progress: Progress | None, conn: _Conn, data: bytes) -> None:
    conn.last_used = _monotonic()
    if progress is not None and progress.connected:
        progress.write_done = True
        if data:
            progress.received = True
            progress.bytes_received += len(data)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, conn: _Conn) -> None:
        self._inner = inner
        self._conn = conn

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._inner.read(max_bytes, timeout)
        _read(current.get(), self._conn, data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        progress = current.get()
        if progress is not None and not progress.connected:
            self._conn.bind(progress)
        try:
            self._inner.write(buffer, timeout)
        except BaseException:
            if progress is not None:
                progress.send_failed = True
            raise
        _wrote(progress, self._conn, len(buffer))

    def close(self) -> None:
        self._conn.closed = True
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._conn)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self._conn.readable(self._inner)
        return self._inner.get_extra_info(info)


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, conn: _Conn) -> None:
        self._inner = inner
        self._conn = conn

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._inner.read(max_bytes, timeout)
        _read(current.get(), self._conn, data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        progress = current.get()
        if progress is not None and not progress.connected:
            self._conn.bind(progress)
        try:
            await self._inner.write(buffer, timeout)
        except BaseException:
            if progress is not None:
                progress.send_failed = True
            raise
        _wrote(progress, self._conn, len(buffer))

    async def aclose(self) -> None:
        self._conn.closed = True
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _AsyncStream(inner, self._conn)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self._conn.readable(self._inner)
        return self._inner.get_extra_info(info)


def _opened(origin: str) -> None:
    if hooks_active():
        emit(ConnectionEvent(name="httpx", action="opened", peer=origin))


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, limits: IdleLimits, max_age: float | None):
        self._inner = inner
        self._limits = limits
        self._max_age = max_age
        #: every connection still referenced by the pool, for the reaper's next due time
        self.conns: weakref.WeakSet[_Conn] = weakref.WeakSet()

    def _track(self, conn: _Conn) -> _Conn:
        self.conns.add(conn)
        return conn

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        origin = f"{host}:{port}"
        _opened(origin)
        return _Stream(stream, self._track(_Conn(origin, self._limits, self._max_age)))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _Stream(stream, self._track(_Conn(path, self._limits, self._max_age)))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(
        self, inner: httpcore.AsyncNetworkBackend, limits: IdleLimits, max_age: float | None
    ):
        self._inner = inner
        self._limits = limits
        self._max_age = max_age

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        origin = f"{host}:{port}"
        _opened(origin)
        return _AsyncStream(stream, _Conn(origin, self._limits, self._max_age))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _AsyncStream(stream, _Conn(path, self._limits, self._max_age))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _instrument(transport: object, limits: IdleLimits, max_age: float | None) -> bool:
    """Wrap the network backend of httpx's own transports; False for any other transport."""
    pool = getattr(transport, "_pool", None)
    if isinstance(pool, httpcore.ConnectionPool):
        backend = pool._network_backend
        if not isinstance(backend, _Backend):
            pool._network_backend = _Backend(backend, limits, max_age)
        return True
    if isinstance(pool, httpcore.AsyncConnectionPool):
        abackend = pool._network_backend
        if not isinstance(abackend, _AsyncBackend):
            pool._network_backend = _AsyncBackend(abackend, limits, max_age)
        return True
    return False


# --------------------------------------------------------------------------- bodies


class _OnceStream(httpx.SyncByteStream):
    """A streamed request body: remembers whether sending it has started."""

    def __init__(self, inner: Iterable[bytes]) -> None:
        self._inner = inner
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        yield from self._inner

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class _AsyncOnceStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _track_body(request: httpx.Request) -> _OnceStream | _AsyncOnceStream | None:
    """None when the body is bytes (replayable); else a wrapper that tells if it started."""
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return None
    if isinstance(stream, httpx.AsyncByteStream):
        tracked: _OnceStream | _AsyncOnceStream = _AsyncOnceStream(stream)
    else:
        tracked = _OnceStream(stream)
    request.stream = tracked
    return tracked


def _exchange(transport: _Base, request: httpx.Request, buffered: bool) -> Exchange:
    """The request's translation for the engine (see :class:`~resetguard.http._run.Exchange`)."""
    body = _track_body(request)
    return Exchange(
        transport._policy,
        request.method,
        str(request.url),
        request.headers,
        buffered=buffered,
        replayable=_always if body is None else lambda: not body.started,
        limits=transport.idle_limits,
        guards=transport.guards,
    )


def _always() -> bool:
    return True


def _buffer(response: httpx.Response) -> None:
    """Read the raw body inside the retry loop; the client then reads it from memory.

    Only the stream is swapped: the response stays open, so the client still closes it
    and records ``elapsed``, and still decodes the content as usual.
    """
    stream = response.stream
    try:
        data = b"".join(stream)  # type: ignore[arg-type]
    finally:
        stream.close()  # type: ignore[union-attr]
    response.stream = httpx.ByteStream(data)


async def _abuffer(response: httpx.Response) -> None:
    stream = response.stream
    try:
        data = b"".join([chunk async for chunk in stream])  # type: ignore[union-attr]
    finally:
        await stream.aclose()  # type: ignore[union-attr]
    response.stream = httpx.ByteStream(data)


# --------------------------------------------------------------------------- transports


class _Base:
    _policy: HTTPPolicy
    idle_limits: IdleLimits
    guards: OriginGuards

    def _setup(self, policy: HTTPPolicy | None, retry: Retry | None) -> None:
        self._policy = resolve_policy(policy, retry)
        #: Per-origin idle limits (configured, server hints, learned); see ``snapshot()``.
        self.idle_limits = IdleLimits(self._policy.idle_timeout, learn=self._policy.learn_idle)
        #: The client's retry budget and per-origin breakers (``states()``, ``statistics()``).
        self.guards = OriginGuards(self._policy)

    @property
    def policy(self) -> HTTPPolicy:
        """The :class:`HTTPPolicy` in force."""
        return self._policy


class RetryTransport(_Base, httpx.BaseTransport):
    """An httpx transport that retries when it is safe, and retires idle connections in time.

    Args:
        transport: the transport to wrap (default: a new ``httpx.HTTPTransport`` built
            from ``transport_options`` with the policy's idle limit).
        policy: the :class:`HTTPPolicy` (default ``HTTPPolicy()``).
        retry: shorthand for ``policy=HTTPPolicy(retry=retry)``.
        transport_options: ``httpx.HTTPTransport`` arguments (``verify``, ``limits``, …).

    Example::

        import httpx
        from resetguard.http import RetryTransport

        with httpx.Client(transport=RetryTransport()) as client:
            client.get("https://example.org/")
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        policy: HTTPPolicy | None = None,
        retry: Retry | None = None,
        **transport_options: Any,
    ) -> None:
        self._setup(policy, retry)
        if transport is None:
            transport_options["limits"] = _limits(self._policy, transport_options.get("limits"))
            transport = httpx.HTTPTransport(**transport_options)
        elif transport_options:
            raise TypeError(
                f"transport options {sorted(transport_options)} apply only without transport="
            )
        elif not isinstance(transport, httpx.BaseTransport):
            raise TypeError(f"transport must be an httpx.BaseTransport, got {transport!r}")
        self._inner = transport
        #: True when reuse, bytes and idle age are tracked (httpx's own transport).
        self.instrumented = _instrument(transport, self.idle_limits, self._policy.max_age)
        self._reap_due: float | None = None
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        # Closing expired connections in the background needs httpcore's pool lock and
        # list; with a pool that lacks them, expiry stays on reuse only.
        self._reapable = (
            isinstance(backend, _Backend)
            and isinstance(getattr(pool, "_connections", None), list)
            and hasattr(pool, "_optional_thread_lock")
        )

    def _reap_later(self, origin: str | None) -> None:
        """The pool may now hold an idle connection to ``origin``: close it once it expires."""
        if not self._reapable or origin is None:
            return
        limit = self.idle_limits.limit(origin)
        if limit is not None:
            _reaper.schedule(self, _monotonic() + limit + _REAP_SLACK)

    def _reap(self) -> float | None:
        """Close the idle connections past their limit; when to look again (None: never)."""
        pool: Any = self._inner._pool  # type: ignore[attr-defined]
        backend: _Backend = pool._network_backend
        closing = []
        with pool._optional_thread_lock:
            # has_expired() on an idle connection asks _Conn.readable(): the same check
            # (and the same learning) as when httpcore considers reusing it.
            for connection in list(pool._connections):
                if connection.is_idle() and connection.has_expired():
                    pool._connections.remove(connection)
                    closing.append(connection)
        for connection in closing:
            connection.close()
        now = _monotonic()
        again: float | None = None
        for conn in list(backend.conns):
            if conn.closed:
                continue
            due = conn.due()
            if due is None:
                continue
            if due <= now:
                # past due yet not closed: in use (a slow or streamed response), so it can
                # expire one full limit after its last byte at the earliest
                due = now + max(self.idle_limits.limit(conn.origin) or 1.0, _REAP_MIN_WAIT)
            due += _REAP_SLACK
            again = due if again is None else min(again, due)
        return again

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        buffered = bool(request.extensions.get(BUFFER_EXTENSION))
        exchange = _exchange(self, request, buffered)

        def attempt(a: AttemptContext) -> httpx.Response:
            progress, token = exchange.begin(a)
            try:
                response = self._inner.handle_request(request)
                if buffered:
                    _buffer(response)
            finally:
                exchange.end(token)
                self._reap_later(progress.peer)
            origin = _origin(request.url)
            if exchange.answered(a, progress, response.status_code, response.headers, origin):
                response.close()
            return response

        return drive(exchange.run, attempt)

    def close(self) -> None:
        self._inner.close()


class AsyncRetryTransport(_Base, httpx.AsyncBaseTransport):
    """The asyncio/trio twin of :class:`RetryTransport`.

    Example::

        import httpx
        from resetguard.http import AsyncRetryTransport

        async with httpx.AsyncClient(transport=AsyncRetryTransport()) as client:
            await client.get("https://example.org/")
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        policy: HTTPPolicy | None = None,
        retry: Retry | None = None,
        **transport_options: Any,
    ) -> None:
        self._setup(policy, retry)
        if transport is None:
            transport_options["limits"] = _limits(self._policy, transport_options.get("limits"))
            transport = httpx.AsyncHTTPTransport(**transport_options)
        elif transport_options:
            raise TypeError(
                f"transport options {sorted(transport_options)} apply only without transport="
            )
        elif not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport, got {transport!r}")
        self._inner = transport
        self.instrumented = _instrument(transport, self.idle_limits, self._policy.max_age)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        buffered = bool(request.extensions.get(BUFFER_EXTENSION))
        exchange = _exchange(self, request, buffered)

        async def attempt(a: AttemptContext) -> httpx.Response:
            progress, token = exchange.begin(a)
            try:
                response = await self._inner.handle_async_request(request)
                if buffered:
                    await _abuffer(response)
            finally:
                exchange.end(token)
            origin = _origin(request.url)
            if exchange.answered(a, progress, response.status_code, response.headers, origin):
                await response.aclose()
            return response

        return await adrive(exchange.run, attempt)

    async def aclose(self) -> None:
        await self._inner.aclose()


# --------------------------------------------------------------------------- clients

_TRANSPORT_OPTIONS = ("verify", "cert", "trust_env", "http1", "http2", "limits")


def _split(kwargs: dict[str, Any], transport: object) -> dict[str, Any]:
    options = {k: kwargs[k] for k in _TRANSPORT_OPTIONS if k in kwargs}
    for k in ("verify", "cert", "http1", "http2", "limits"):
        kwargs.pop(k, None)
    if transport is not None and options:
        raise TypeError(f"{sorted(options)} apply only when transport= is not given")
    return options


class Client(httpx.Client):
    """An ``httpx.Client`` with :class:`RetryTransport` and sound defaults.

    Defaults: :data:`DEFAULT_TIMEOUT` (30 s, 5 s to connect), :data:`DEFAULT_LIMITS`, idle
    connections retired after 4 s (or ``Keep-Alive: timeout`` - 1 s, or what was learned).
    Responses read in full are retried on a reset mid-body; streamed ones are not.

    Example::

        from resetguard.http import Client

        with Client() as client:
            client.get("https://example.org/").raise_for_status()
    """

    def __init__(
        self,
        *,
        policy: HTTPPolicy | None = None,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: Any = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        options = _split(kwargs, transport)
        self.retry_transport = RetryTransport(transport, policy=policy, retry=retry, **options)
        super().__init__(transport=self.retry_transport, timeout=timeout, **kwargs)

    def send(
        self, request: httpx.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        if not stream:
            request.extensions = {**request.extensions, BUFFER_EXTENSION: True}
        return super().send(request, stream=stream, **kwargs)


class AsyncClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` with :class:`AsyncRetryTransport` and sound defaults.

    Example::

        from resetguard.http import AsyncClient

        async with AsyncClient() as client:
            await client.get("https://example.org/")
    """

    def __init__(
        self,
        *,
        policy: HTTPPolicy | None = None,
        retry: Retry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: Any = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        options = _split(kwargs, transport)
        self.retry_transport = AsyncRetryTransport(transport, policy=policy, retry=retry, **options)
        super().__init__(transport=self.retry_transport, timeout=timeout, **kwargs)

    async def send(
        self, request: httpx.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        if not stream:
            request.extensions = {**request.extensions, BUFFER_EXTENSION: True}
        return await super().send(request, stream=stream, **kwargs)
