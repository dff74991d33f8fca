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

import operator
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any

import httpcore
import httpx

from .._drivers import AttemptContext, adrive_first, drive_first
from .._events import _registry
from .._retry import Retry
from . import _reaper
from ._guards import OriginGuards
from ._idle import IdleLimits, announce, expires_at
from ._rules import HTTPPolicy, Progress
from ._run import Exchange, always, current, resolve_policy

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
    """``host:port`` as httpcore dials it (an IDN host in its ASCII form, as the
    connection's own origin), from httpx's parse of the URL: ``URL.host`` would decode
    the host again on every request."""
    parsed = url._uri_reference
    return f"{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"


# --------------------------------------------------------------------------- sockets


class _Conn:
    """State of one connection, shared by its plain and TLS streams."""

    __slots__ = (
        "__weakref__",
        "checks_default",
        "closed",
        "created",
        "last_used",
        "limits",
        "max_age",
        "origin",
        "uses",
    )

    def __init__(
        self, origin: str, limits: IdleLimits, max_age: float | None, checks_default: bool
    ) -> None:
        self.origin = origin
        self.limits = limits
        self.max_age = max_age
        #: False when httpcore's own keep-alive expiry already retires the connection at
        #: the default limit (or sooner) and there is no max age: see get_extra_info
        self.checks_default = checks_default
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
        progress.connected = True
        progress.received = False
        progress.peer = origin = self.origin
        uses = self.uses
        self.uses = uses + 1
        if uses:
            progress.reused = True
            progress.idle_age = idle = _monotonic() - self.last_used
            if _registry.hooks:
                announce("httpx", "reused", origin, idle)
        else:
            progress.reused = False


def _read(conn: _Conn, data: bytes) -> None:
    """After a read: the idle clock restarts; an attempt that wrote has its request out."""
    conn.last_used = _monotonic()
    progress = current.get()
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
        _read(self._conn, data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:  # h11 ends each message with empty writes: they send nothing
            return self._inner.write(buffer, timeout)
        progress = current.get()
        if progress is not None and not progress.connected:
            self._conn.bind(progress)
        try:
            self._inner.write(buffer, timeout)
        except BaseException:
            if progress is not None:
                progress.send_failed = True
            raise
        # The idle clock restarts on reads only: a response always follows the writes.
        if progress is not None:
            progress.bytes_sent += len(buffer)

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
        """httpcore asks ``is_readable`` before reusing an idle connection, and True makes
        it discard the connection: the idle limit and max age are checked here too."""
        inner = self._inner
        if info != "is_readable":
            return inner.get_extra_info(info)
        conn = self._conn
        limits = conn.limits
        limit = limits.overrides.get(conn.origin)
        # Under the default limit httpcore's keep-alive expiry retires the connection
        # itself (see _Conn.checks_default): the clock is then read only to report it.
        if limit is not None or conn.checks_default or _registry.hooks:
            now = _monotonic()
            idle = now - conn.last_used
            if limit is None:
                limit = limits.idle_timeout
            max_age = conn.max_age
            if (limit is not None and idle > limit) or (
                max_age is not None and now - conn.created > max_age
            ):
                announce("httpx", "expired", conn.origin, idle)
                return True
        readable = bool(inner.get_extra_info("is_readable"))
        if readable and conn.uses:
            idle = _monotonic() - conn.last_used
            limits.closed(conn.origin, idle)  # the server closed it while idle
            announce("httpx", "closed", conn.origin, idle)
        return readable


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, conn: _Conn) -> None:
        self._inner = inner
        self._conn = conn

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._inner.read(max_bytes, timeout)
        _read(self._conn, data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:  # h11 ends each message with empty writes: they send nothing
            return await self._inner.write(buffer, timeout)
        progress = current.get()
        if progress is not None and not progress.connected:
            self._conn.bind(progress)
        try:
            await self._inner.write(buffer, timeout)
        except BaseException:
            if progress is not None:
                progress.send_failed = True
            raise
        # The idle clock restarts on reads only: a response always follows the writes.
        if progress is not None:
            progress.bytes_sent += len(buffer)

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

    get_extra_info = _Stream.get_extra_info  # the same (synchronous) check


def _opened(origin: str) -> None:
    announce("httpx", "opened", origin)


def _checks_default(pool: Any, limits: IdleLimits, max_age: float | None) -> bool:
    """Whether a connection of ``pool`` needs resetguard's own check at the default idle
    limit: not when httpcore's ``keepalive_expiry`` is that limit or lower (the pool
    retires such connections itself) and no max age applies."""
    expiry = getattr(pool, "_keepalive_expiry", None)
    default = limits.idle_timeout
    return max_age is not None or expiry is None or default is None or expiry > default


class _Backend(httpcore.NetworkBackend):
    def __init__(
        self, inner: httpcore.NetworkBackend, limits: IdleLimits, max_age: float | None, pool: Any
    ):
        self._inner = inner
        self._limits = limits
        self._max_age = max_age
        self._checks_default = _checks_default(pool, limits, max_age)
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
        return _Stream(
            stream, self._track(_Conn(origin, self._limits, self._max_age, self._checks_default))
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _Stream(
            stream, self._track(_Conn(path, self._limits, self._max_age, self._checks_default))
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(
        self,
        inner: httpcore.AsyncNetworkBackend,
        limits: IdleLimits,
        max_age: float | None,
        pool: Any,
    ):
        self._inner = inner
        self._limits = limits
        self._max_age = max_age
        self._checks_default = _checks_default(pool, limits, max_age)

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
        return _AsyncStream(
            stream, _Conn(origin, self._limits, self._max_age, self._checks_default)
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _AsyncStream(stream, _Conn(path, self._limits, self._max_age, self._checks_default))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _instrument(transport: object, limits: IdleLimits, max_age: float | None) -> bool:
    """Wrap the network backend of httpx's own transports; False for any other transport."""
    pool = getattr(transport, "_pool", None)
    if isinstance(pool, httpcore.ConnectionPool):
        backend = pool._network_backend
        if not isinstance(backend, _Backend):
            pool._network_backend = _Backend(backend, limits, max_age, pool)
        return True
    if isinstance(pool, httpcore.AsyncConnectionPool):
        abackend = pool._network_backend
        if not isinstance(abackend, _AsyncBackend):
            pool._network_backend = _AsyncBackend(abackend, limits, max_age, pool)
        return True
    return False


# --------------------------------------------------------------------------- bodies


class _OnceStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A streamed request body: tells whether sending it again would send the same bytes.

    One wrapper serves both sides: httpx's multipart stream is a sync *and* an async
    stream, and the client that sends it decides which way it is read. A body that can be
    rewound (a multipart form whose files all seek, or a seekable file passed as
    ``content=``) never counts as started: each attempt reads it from its start again.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._sent = False
        self._rewind = _rewinder(inner)

    @property
    def started(self) -> bool:
        """True once sending began and the body cannot be sent again."""
        return self._sent and self._rewind is None

    def _begin(self) -> None:
        if self._sent and self._rewind is not None:
            self._rewind()
        self._sent = True

    def __iter__(self) -> Iterator[bytes]:
        self._begin()
        yield from self._inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._begin()
        async for chunk in self._inner:
            yield chunk

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

    async def aclose(self) -> None:
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()


#: The same wrapper serves async bodies (kept for code that names it).
_AsyncOnceStream = _OnceStream


def _seekable(file: Any) -> bool:
    try:
        return bool(file.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _rewinder(stream: Any) -> Any:
    """A callable that rewinds ``stream`` for a replay, or None if it cannot be replayed."""
    fields = getattr(stream, "fields", None)
    if isinstance(stream, httpx.SyncByteStream) and isinstance(fields, list):
        # httpx's multipart stream seeks every file to 0 itself each time it is read.
        files = [getattr(field, "file", None) for field in fields]
        if all(f is None or isinstance(f, str | bytes) or _seekable(f) for f in files):
            return lambda: None
        return None
    file = getattr(stream, "_stream", None)  # a file object given as content=
    if isinstance(stream, httpx.AsyncByteStream):
        return None  # an async file's seek is a coroutine: not replayed
    if file is not None and hasattr(file, "read") and _seekable(file):
        try:
            position = file.tell()
        except (OSError, ValueError):
            return None
        return lambda: file.seek(position)
    return None


def _track_body(request: httpx.Request) -> _OnceStream | None:
    """None when the body is bytes (replayable); else a wrapper that tells if it started."""
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return None
    if isinstance(stream, _OnceStream):
        return stream  # a 307/308 redirect sends the same body again: already tracked
    tracked = _OnceStream(stream)
    request.stream = tracked
    return tracked


class _Request(Exchange):
    """One httpx request: its translation for the engine, and how an attempt sends it.

    The attempt is a method, not a closure made per request (a bound method costs a
    fifth of a closure over four variables).
    """

    client: Any  # the RetryTransport or AsyncRetryTransport sending it
    request: httpx.Request

    def send(self, a: AttemptContext) -> httpx.Response:
        progress, token = self.begin(a)
        transport = self.client
        try:
            response: httpx.Response = transport._inner.handle_request(self.request)
            if self.buffered:
                _buffer(response)
        finally:
            self.end(token)
            transport._reap_later()
        if self.answered(
            a, progress, response.status_code, response.headers, _keep_alive(response)
        ):
            response.close()
        return response

    async def asend(self, a: AttemptContext) -> httpx.Response:
        progress, token = self.begin(a)
        try:
            response: httpx.Response = await self.client._inner.handle_async_request(self.request)
            if self.buffered:
                await _abuffer(response)
        finally:
            self.end(token)
        if self.answered(
            a, progress, response.status_code, response.headers, _keep_alive(response)
        ):
            await response.aclose()
        return response


def _exchange(transport: _Base, request: httpx.Request) -> _Request:
    """The request's translation for the engine (see :class:`~resetguard.http._run.Exchange`)."""
    body = _track_body(request)
    url = request.url
    buffered = bool(request.extensions.get(BUFFER_EXTENSION))
    replayable = always if body is None else lambda: not body.started
    exchange = _Request(
        transport, request.method, url, request.headers, buffered, replayable, _origin(url)
    )
    exchange.request = request
    return exchange


def _keep_alive(response: httpx.Response) -> str | None:
    """The response's ``Keep-Alive`` header, or None.

    ``Headers.get`` raises and catches a ``KeyError`` inside when the header is absent
    (about 9,000 instructions, most responses): its list of (raw name, lower-cased name,
    value) is searched instead, in C, when it has the shape httpx 0.2x gives it.
    """
    headers = response.headers
    try:
        items = headers._list
    except AttributeError:  # another shape than httpx 0.2x's: the public lookup
        items = None
    if items is not None and b"keep-alive" not in map(_lowered_name, items):
        return None
    value: str | None = headers.get("keep-alive")  # present: the public lookup reads it
    return value


_lowered_name = operator.itemgetter(1)


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
    response.stream = _Buffered(data)


async def _abuffer(response: httpx.Response) -> None:
    stream = response.stream
    try:
        data = b"".join([chunk async for chunk in stream])  # type: ignore[union-attr]
    finally:
        await stream.aclose()  # type: ignore[union-attr]
    response.stream = _Buffered(data)


class _Buffered(httpx.ByteStream):
    """A body read in full inside the retry loop, handed on to the client.

    httpx's ``ByteStream`` yields from a generator; an async generator costs a weak
    reference and the event loop's hooks per iteration, so these iterators are plain.
    """

    def __iter__(self) -> Iterator[bytes]:
        return iter((self._stream,))

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _AsyncOnce(self._stream)


class _AsyncOnce:
    __slots__ = ("_data",)

    def __init__(self, data: bytes | None) -> None:
        self._data = data

    def __aiter__(self) -> _AsyncOnce:
        return self

    async def __anext__(self) -> bytes:
        data = self._data
        if data is None:
            raise StopAsyncIteration
        self._data = None
        return data


# --------------------------------------------------------------------------- transports


class _Base:
    _policy: HTTPPolicy
    idle_limits: IdleLimits
    guards: OriginGuards

    _inner: Any

    def _setup(
        self,
        policy: HTTPPolicy | None,
        retry: Retry | None,
        idle_limits: IdleLimits | None,
        guards: OriginGuards | None,
        transport: object,
        options: dict[str, Any],
        default: Callable[..., object],
        kind: type,
    ) -> None:
        """Shared by both transports: ``kind`` is the httpx base class a ``transport``
        must be; ``default(**options)`` builds httpx's own when none is given."""
        self._policy = resolve_policy(policy, retry)
        #: Per-origin idle limits (configured, server hints, learned); see ``snapshot()``.
        self.idle_limits = idle_limits or IdleLimits(
            self._policy.idle_timeout, learn=self._policy.learn_idle
        )
        #: The client's retry budget and per-origin breakers (``states()``, ``statistics()``).
        self.guards = guards or OriginGuards(self._policy)
        if transport is None:
            options["limits"] = _limits(self._policy, options.get("limits"))
            transport = default(**options)
        elif options:
            raise TypeError(f"transport options {sorted(options)} apply only without transport=")
        elif not isinstance(transport, kind):
            raise TypeError(f"transport must be an httpx.{kind.__name__}, got {transport!r}")
        self._inner = transport
        #: True when reuse, bytes and idle age are tracked (httpx's own transport).
        self.instrumented = _instrument(transport, self.idle_limits, self._policy.max_age)

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
        idle_limits, guards: share what is known about origins, the retry budget and the
            per-origin breakers with other transports (the :class:`Client` gives all its
            transports, proxies and mounts one of each).
        transport_options: ``httpx.HTTPTransport`` arguments (``verify``, ``limits``, …).

    Entering and leaving it (``with``) enters and leaves the wrapped transport, once each.

    Example::

        import httpx
        from resetguard.http import RetryTransport

        with httpx.Client(transport=RetryTransport()) as client:
            client.get("https://example.org/")
    """

    _inner: httpx.BaseTransport

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        policy: HTTPPolicy | None = None,
        retry: Retry | None = None,
        idle_limits: IdleLimits | None = None,
        guards: OriginGuards | None = None,
        **transport_options: Any,
    ) -> None:
        self._setup(
            policy,
            retry,
            idle_limits,
            guards,
            transport,
            transport_options,
            httpx.HTTPTransport,
            httpx.BaseTransport,
        )
        self._reap_due: float | None = None
        pool = getattr(self._inner, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        # Closing expired connections in the background needs httpcore's pool lock and
        # list; with a pool that lacks them, expiry stays on reuse only.
        self._reapable = (
            isinstance(backend, _Backend)
            and isinstance(getattr(pool, "_connections", None), list)
            and hasattr(pool, "_optional_thread_lock")
        )

    def _reap_later(self) -> None:
        """The pool may now hold an idle connection: close it once it expires.

        The reaper is asked to wake when the lowest limit in force could first expire it
        (``schedule()`` returns at once while it is due sooner: every request after the
        first); it then sweeps and sleeps until the next connection's own due time.
        """
        floor = self.idle_limits.floor
        if floor is not None and self._reapable:
            _reaper.schedule(self, _monotonic() + floor + _REAP_SLACK)

    def _reap(self) -> float | None:
        """Close the idle connections past their limit; when to look again (None: never)."""
        pool: Any = self._inner._pool  # type: ignore[attr-defined]
        backend: _Backend = pool._network_backend
        closing = []
        with pool._optional_thread_lock:
            # has_expired() on an idle connection asks _Stream.get_extra_info(): the same check
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
        exchange = _exchange(self, request)
        return drive_first(exchange, exchange.send)

    def __enter__(self) -> RetryTransport:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._inner.__exit__(*exc_info)

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

    _inner: httpx.AsyncBaseTransport

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        policy: HTTPPolicy | None = None,
        retry: Retry | None = None,
        idle_limits: IdleLimits | None = None,
        guards: OriginGuards | None = None,
        **transport_options: Any,
    ) -> None:
        self._setup(
            policy,
            retry,
            idle_limits,
            guards,
            transport,
            transport_options,
            httpx.AsyncHTTPTransport,
            httpx.AsyncBaseTransport,
        )

    def handle_async_request(self, request: httpx.Request) -> Coroutine[Any, Any, httpx.Response]:
        # Not a coroutine function: it returns the driver's coroutine (one frame less).
        exchange = _exchange(self, request)
        return adrive_first(exchange, exchange.asend)

    async def __aenter__(self) -> AsyncRetryTransport:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)

    async def aclose(self) -> None:
        await self._inner.aclose()


# --------------------------------------------------------------------------- clients


def _client_limits(policy: HTTPPolicy, limits: httpx.Limits | None) -> httpx.Limits:
    """The user's ``limits`` as given; without them httpx's sizes and the policy's idle limit."""
    return limits if limits is not None else _limits(policy, None)


def _wrap_routes(
    client: httpx.Client | httpx.AsyncClient,
    cls: type[RetryTransport] | type[AsyncRetryTransport],
    policy: HTTPPolicy,
) -> Any:
    """Wrap every transport httpx chose (default, proxies, mounts); the default's wrapper.

    httpx picks the transports itself (``transport=``, proxies from ``proxy=`` or the
    environment, ``mounts=``), so every argument and environment setting keeps its httpx
    meaning; each route then gets the retry rules and idle limits, all sharing one
    :class:`IdleLimits` and one :class:`OriginGuards`. One transport object used on several
    routes gets one wrapper, so it is entered and closed as often as httpx would; a
    wrapper given as ``transport=`` is used as is (a second layer would multiply attempts).
    """
    shared = IdleLimits(policy.idle_timeout, learn=policy.learn_idle)
    guards = OriginGuards(policy)
    wrappers: dict[int, Any] = {}

    def one(transport: Any) -> Any:
        if transport is None or isinstance(transport, cls):
            return transport
        wrapper = wrappers.get(id(transport))
        if wrapper is None:
            wrapper = wrappers[id(transport)] = cls(
                transport, policy=policy, idle_limits=shared, guards=guards
            )
        return wrapper

    client._transport = one(client._transport)
    client._mounts = {pattern: one(t) for pattern, t in client._mounts.items()}
    return client._transport


class _Routes:
    """What both clients read from their default route's wrapper."""

    retry_transport: RetryTransport | AsyncRetryTransport

    @property
    def idle_limits(self) -> IdleLimits:
        """What the client knows about each origin's idle limit (``snapshot()``, ``forget()``)."""
        return self.retry_transport.idle_limits

    @property
    def guards(self) -> OriginGuards:
        """The client's retry budget and per-origin breakers, shared by every route."""
        return self.retry_transport.guards

    @property
    def policy(self) -> HTTPPolicy:
        """The :class:`HTTPPolicy` in force."""
        return self.retry_transport.policy


class Client(_Routes, httpx.Client):
    """An ``httpx.Client`` whose every route retries safely, with sound defaults.

    Every ``httpx.Client`` argument and environment setting means what it means in httpx:
    httpx chooses the transports (``transport=``, ``proxy=``, ``HTTP_PROXY``/``NO_PROXY``
    and friends with ``trust_env``, ``mounts=``), then each is wrapped in a
    :class:`RetryTransport` sharing one policy and one :attr:`idle_limits`.

    Defaults that differ from httpx: :data:`DEFAULT_TIMEOUT` (30 s, 5 s to connect) and,
    without ``limits=``, idle connections retired after 4 s (or ``Keep-Alive: timeout`` -
    1 s, or what was learned). Responses read in full are retried on a reset mid-body;
    streamed ones are not.

    Example::

        from resetguard.http import Client

        with Client() as client:
            client.get("https://example.org/").raise_for_status()
            print(client.idle_limits.snapshot())
    """

    #: The wrapper of the default route (``transport=`` or httpx's own transport).
    retry_transport: RetryTransport

    def __init__(
        self,
        *,
        policy: HTTPPolicy | None = None,
        retry: Retry | None = None,
        timeout: Any = DEFAULT_TIMEOUT,
        limits: httpx.Limits | None = None,
        **kwargs: Any,
    ) -> None:
        resolved = resolve_policy(policy, retry)
        super().__init__(timeout=timeout, limits=_client_limits(resolved, limits), **kwargs)
        self.retry_transport = _wrap_routes(self, RetryTransport, resolved)

    def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if not stream:
            request.extensions = {**request.extensions, BUFFER_EXTENSION: True}
        return httpx.Client.send(
            self, request, stream=stream, auth=auth, follow_redirects=follow_redirects
        )


class AsyncClient(_Routes, httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose every route retries safely (see :class:`Client`).

    Example::

        from resetguard.http import AsyncClient

        async with AsyncClient() as client:
            await client.get("https://example.org/")
            print(client.idle_limits.snapshot())
    """

    #: The wrapper of the default route (``transport=`` or httpx's own transport).
    retry_transport: AsyncRetryTransport

    def __init__(
        self,
        *,
        policy: HTTPPolicy | None = None,
        retry: Retry | None = None,
        timeout: Any = DEFAULT_TIMEOUT,
        limits: httpx.Limits | None = None,
        **kwargs: Any,
    ) -> None:
        resolved = resolve_policy(policy, retry)
        super().__init__(timeout=timeout, limits=_client_limits(resolved, limits), **kwargs)
        self.retry_transport = _wrap_routes(self, AsyncRetryTransport, resolved)

    def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> Coroutine[Any, Any, httpx.Response]:
        # Not a coroutine function: it returns httpx's own coroutine (one frame less).
        if not stream:
            request.extensions = {**request.extensions, BUFFER_EXTENSION: True}
        return httpx.AsyncClient.send(
            self, request, stream=stream, auth=auth, follow_redirects=follow_redirects
        )
