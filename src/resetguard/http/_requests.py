"""requests adapter: :class:`RetryAdapter` and :class:`Session`.

urllib3's pools have no idle expiry at all (urllib3#3184). The adapter installs pool and
connection subclasses that stamp each connection when it goes back to the pool and retire
it, when it is taken out again, if it sat idle past its origin's limit or is older than
``max_age``; the shared reaper thread (:mod:`resetguard.http._reaper`) also closes idle
connections in the pool as soon as they pass their limit. The same subclasses record, per
attempt, whether the connection was reused, how many bytes went out and whether the
response head arrived, so the retry decision is exact rather than a guess from the exception.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .._drivers import AttemptContext, drive_first
from .._events import _registry
from .._retry import Retry
from . import _reaper
from ._guards import OriginGuards
from ._idle import IdleLimits, announce, expires_at
from ._rules import HTTPPolicy, Progress
from ._run import Exchange, always, current, resolve_policy

__all__ = ["DEFAULT_TIMEOUT", "RetryAdapter", "Session"]

#: (connect, read) seconds: requests has no timeout by default, so a dead peer can hang a
#: call forever. 5 s to connect, 30 s per read (the playbook's request timeout).
DEFAULT_TIMEOUT = (5.0, 30.0)

_monotonic = time.monotonic
#: See resetguard.http._httpx._REAP_SLACK.
_REAP_SLACK = 0.002


class _TrackedConnection:
    """Mixin for urllib3 connections: reuse, idle age, bytes out, response head in."""

    _rg_last_used: float | None
    _rg_created: float
    _rg_uses: int
    _rg_in_pool: bool
    _rg_dropped: float | None
    _rg_origin: str
    sock: Any
    # The base class's methods that run on every request, set by each concrete class:
    # calling them directly costs about half of what super() does.
    _rg_base_send: Any
    _rg_base_getresponse: Any

    def _rg_init(self) -> None:
        self._rg_last_used = None
        self._rg_created = _monotonic()
        self._rg_uses = 0
        self._rg_in_pool = False
        self._rg_dropped = None
        self._rg_origin = ""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._rg_created = _monotonic()
        announce("requests", "opened", self._rg_origin)

    def close(self) -> None:
        if self._rg_in_pool and self.sock is not None and self._rg_last_used is not None:
            # urllib3 found it dropped while idle (or the pool is closing)
            self._rg_dropped = _monotonic() - self._rg_last_used
        super().close()  # type: ignore[misc]
        self._rg_uses = 0  # the object lives on in the pool; its next socket is a new one

    def send(self, data: Any) -> None:
        progress = current.get()
        if progress is not None and not progress.connected:
            self._rg_bind(progress)
        had_socket = self.sock is not None
        try:
            self._rg_base_send(data)
        except BaseException:
            if progress is not None and (had_socket or self.sock is not None):
                progress.send_failed = True
            raise
        if progress is not None:
            progress.bytes_sent += len(data) if isinstance(data, _BYTES) else 1

    def getresponse(self) -> Any:
        progress = current.get()
        if progress is not None:
            progress.write_done = True
        response = self._rg_base_getresponse()
        if progress is not None:
            progress.received = True
        return response

    def _rg_bind(self, progress: Progress) -> None:
        progress.connected = True
        progress.received = False
        progress.peer = self._rg_origin
        reused = self.sock is not None and self._rg_uses > 0
        progress.reused = reused
        if reused and self._rg_last_used is not None:
            progress.idle_age = _monotonic() - self._rg_last_used
            if _registry.hooks:
                announce("requests", "reused", self._rg_origin, progress.idle_age)
        self._rg_uses += 1


class _Connection(_TrackedConnection, HTTPConnection):
    _rg_base_send = HTTPConnection.send
    _rg_base_getresponse = HTTPConnection.getresponse

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rg_init()


class _SecureConnection(_TrackedConnection, HTTPSConnection):
    _rg_base_send = HTTPSConnection.send
    _rg_base_getresponse = HTTPSConnection.getresponse

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rg_init()


class _ExpiringPool:
    """Mixin for urllib3 pools: idle expiry and max age, checked when a connection is taken."""

    _rg_limits: IdleLimits
    _rg_max_age: float | None
    _rg_owner: weakref.ref[RetryAdapter]
    _rg_watched = False  # the owner's reaper knows this pool
    host: str
    port: int | None
    # As _TrackedConnection's: the base class's per-request methods, called directly.
    _rg_base_get_conn: Any
    _rg_base_put_conn: Any

    @functools.cached_property
    def _rg_origin(self) -> str:
        return f"{self.host}:{self.port}"

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = self._rg_base_get_conn(timeout)
        origin = self._rg_origin
        conn._rg_origin = origin
        conn._rg_in_pool = False
        dropped = conn._rg_dropped
        if dropped is not None:
            conn._rg_dropped = None
            self._rg_limits.closed(origin, dropped)
            announce("requests", "closed", origin, dropped)
        elif conn.sock is not None and conn._rg_last_used is not None:
            now = _monotonic()
            idle = now - conn._rg_last_used
            limits = self._rg_limits
            limit = limits.overrides.get(origin, limits.idle_timeout)
            due = expires_at(conn._rg_last_used, conn._rg_created, limit, self._rg_max_age)
            if due is not None and now > due:
                conn.close()
                announce("requests", "expired", origin, idle)
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is None:
            self._rg_base_put_conn(conn)
            return
        conn._rg_last_used = now = _monotonic()
        conn._rg_in_pool = True
        self._rg_base_put_conn(conn)
        owner = self._rg_owner()
        if owner is not None:
            owner._reap_later(self, now)

    def _rg_reap(self, now: float) -> float | None:
        """Close the idle connections past their limit; the next one's due time."""
        queue = getattr(self, "pool", None)
        if queue is None:
            return None  # the pool is closed
        origin = self._rg_origin
        limit = self._rg_limits.limit(origin)
        max_age = self._rg_max_age
        again: float | None = None
        # Under the queue's own lock nobody can take a connection while it is closed;
        # closing a socket does not block.
        with queue.mutex:
            for conn in queue.queue:
                if conn is None or conn.sock is None or not conn._rg_in_pool:
                    continue
                last = conn._rg_last_used
                due = expires_at(last, conn._rg_created, limit, max_age)
                if due is None:
                    continue
                if due < now:
                    conn._rg_in_pool = False  # our close, not a drop the server caused
                    conn.close()
                    announce("requests", "expired", origin, None if last is None else now - last)
                else:
                    again = due if again is None else min(again, due)
        return again


class _Pool(_ExpiringPool, HTTPConnectionPool):
    ConnectionCls = _Connection
    _rg_base_get_conn = HTTPConnectionPool._get_conn
    _rg_base_put_conn = HTTPConnectionPool._put_conn


class _SecurePool(_ExpiringPool, HTTPSConnectionPool):
    ConnectionCls = _SecureConnection
    _rg_base_get_conn = HTTPSConnectionPool._get_conn
    _rg_base_put_conn = HTTPSConnectionPool._put_conn


class _OnceIterable:
    """A streamed request body: remembers whether sending it has started."""

    def __init__(self, inner: Iterable[bytes]) -> None:
        self._inner = inner
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        yield from self._inner


def _replayable(request: requests.PreparedRequest) -> Callable[[], bool]:
    """Whether the request's body can be sent again, asked before each replay: always for
    none or bytes; a file is rewound; an iterable is sent once."""
    body: Any = request.body  # typed bytes | str | None, but files and iterables pass
    if body is None or isinstance(body, (bytes, str)):  # a tuple: no union built per call
        return always
    return _Body(request, body).replay


class _Body:
    """How a file or iterable request body can be sent again."""

    __slots__ = ("_file", "_position", "_stream")

    def __init__(self, request: requests.PreparedRequest, body: Any) -> None:
        self._file: Any = None
        self._position = 0
        self._stream: _OnceIterable | None = None
        if hasattr(body, "read"):
            try:
                self._position = body.tell()
                self._file = body
            except (AttributeError, OSError):
                self._stream = _OnceIterable(iter(lambda: body.read(65536), b""))
                request.body = self._stream  # type: ignore[assignment]
            return
        self._stream = _OnceIterable(body)
        request.body = self._stream  # type: ignore[assignment]

    def replay(self) -> bool:
        """Ready the body to be sent again; False when it cannot be (a consumed stream)."""
        if self._stream is not None and self._stream.started:
            return False
        if self._file is None:
            return True
        try:
            self._file.seek(self._position)
        except (AttributeError, OSError):
            return False
        return True


#: a tuple, not ``bytes | bytearray``: a union written in a call is built at every call
_BYTES = (bytes, bytearray)


def _keep_alive(response: requests.Response) -> str | None:
    """The response's ``Keep-Alive`` header, or None.

    ``CaseInsensitiveDict.get`` raises and catches a ``KeyError`` inside when the header
    is absent (most responses): its store, keyed by the lower-cased name, is asked instead
    when it has the shape requests gives it.
    """
    headers: Any = response.headers  # its _store is not in the type stubs
    value: str | None
    try:
        found = headers._store.get("keep-alive")  # (the name as sent, its value)
    except AttributeError:  # another shape than requests': the public lookup
        value = headers.get("keep-alive")
    else:
        value = None if found is None else found[1]
    return value


class _Request(Exchange):
    """One request through :class:`RetryAdapter`: its translation for the engine, and how
    an attempt sends it (a method, not a closure made per request)."""

    client: RetryAdapter
    request: requests.PreparedRequest
    options: tuple[bool, Any, bool | str, Any, Any]  # stream, timeout, verify, cert, proxies

    def send(self, a: AttemptContext) -> requests.Response:
        progress, token = self.begin(a)
        stream, timeout, verify, cert, proxies = self.options
        try:
            response = HTTPAdapter.send(
                self.client,
                self.request,
                stream=stream,
                timeout=timeout,
                verify=verify,
                cert=cert,
                proxies=proxies,
            )
            if self.buffered:
                response.content  # noqa: B018 - read in the attempt: a reset mid-body is retried
        finally:
            self.end(token)
        if self.answered(
            a, progress, response.status_code, response.headers, _keep_alive(response)
        ):
            response.close()
        return response


class RetryAdapter(HTTPAdapter):
    """A requests ``HTTPAdapter`` that retries when it is safe and expires idle connections.

    Args:
        policy: the :class:`HTTPPolicy` (default ``HTTPPolicy()``).
        retry: shorthand for ``policy=HTTPPolicy(retry=retry)``.
        pool_connections, pool_maxsize, pool_block: as for ``HTTPAdapter``.

    urllib3's own retries are off (``max_retries=0``): the adapter decides.

    Example::

        import requests
        from resetguard.http import RetryAdapter

        session = requests.Session()
        session.mount("https://", RetryAdapter())
    """

    def __init__(
        self,
        *,
        policy: HTTPPolicy | None = None,
        retry: Retry | None = None,
        pool_connections: int = 10,
        pool_maxsize: int = 10,
        pool_block: bool = False,
    ) -> None:
        self._policy = resolve_policy(policy, retry)
        #: Per-origin idle limits (configured, server hints, learned).
        self.idle_limits = IdleLimits(self._policy.idle_timeout, learn=self._policy.learn_idle)
        self._rg_setup(self._policy)
        super().__init__(
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            max_retries=0,
            pool_block=pool_block,
        )

    # requests pickles the attributes listed here (a list in requests itself)
    __attrs__ = [*HTTPAdapter.__attrs__, "_policy"]  # noqa: RUF012

    @property
    def policy(self) -> HTTPPolicy:
        """The :class:`HTTPPolicy` in force."""
        return self._policy

    def __setstate__(self, state: dict[str, Any]) -> None:
        # What was learned about origins is not pickled: a new process starts afresh.
        policy = state.get("_policy") or HTTPPolicy()
        self.idle_limits = IdleLimits(policy.idle_timeout, learn=policy.learn_idle)
        self._rg_setup(policy)
        super().__setstate__(state)  # type: ignore[misc]

    def _rg_setup(self, policy: HTTPPolicy) -> None:
        #: The adapter's retry budget and per-origin breakers (``states()``, ``statistics()``);
        #: not pickled: a new process starts with closed breakers and a fresh budget.
        self.guards = OriginGuards(policy)
        self._reap_due: float | None = None
        self._pools: weakref.WeakSet[_ExpiringPool] = weakref.WeakSet()

    def _reap_later(self, pool: _ExpiringPool, now: float) -> None:
        """``pool`` just got an idle connection back (at ``now``): close it once it expires."""
        if not pool._rg_watched:  # each pool belongs to one adapter (its classes do)
            pool._rg_watched = True
            self._pools.add(pool)
        # As resetguard.http._httpx.RetryTransport._reap_later: woken by the lowest limit
        # in force, the reaper sleeps until the next connection's own due time.
        floor = self.idle_limits.floor
        if floor is not None:
            _reaper.schedule(self, now + floor + _REAP_SLACK)

    def _reap(self) -> float | None:
        """Called by the reaper thread: see :mod:`resetguard.http._reaper`."""
        now = _monotonic()
        again: float | None = None
        for pool in list(self._pools):
            due = pool._rg_reap(now)
            if due is not None:
                again = due if again is None else min(again, due)
        return None if again is None else again + _REAP_SLACK

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes()

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """requests' proxy manager, whose pools get the same idle expiry and tracking.

        Connections to an HTTP(S) proxy are pooled per proxy (and per target for CONNECT
        tunnels), so they go stale like any other; SOCKS proxies keep urllib3's own pools.
        """
        fresh = proxy not in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if fresh and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = self._pool_classes()
        return manager

    def _pool_classes(self) -> dict[str, type]:
        extra = {
            "_rg_limits": self.idle_limits,
            "_rg_max_age": self._policy.max_age,
            "_rg_owner": weakref.ref(self),
        }
        return {
            "http": type("ResetGuardHTTPPool", (_Pool,), extra),
            "https": type("ResetGuardHTTPSPool", (_SecurePool,), extra),
        }

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        exchange = _Request(
            self,
            request.method or "GET",
            request.url or "",
            request.headers,
            not stream,
            _replayable(request),
        )
        exchange.request = request
        exchange.options = (stream, timeout, verify, cert, proxies)
        return drive_first(exchange, exchange.send)


class Session(requests.Session):
    """A ``requests.Session`` with :class:`RetryAdapter` mounted for http and https.

    ``timeout`` (default :data:`DEFAULT_TIMEOUT`) applies to calls that pass none; set it
    to ``None`` for requests' own "wait forever". Everything else is requests': proxies
    from ``proxies=`` or the environment (``trust_env``), ``verify``, ``cert``, streamed
    uploads, and adapters you ``mount()`` for a longer prefix (requests picks the longest).

    Example::

        from resetguard.http import Session

        with Session() as session:
            session.get("https://example.org/").raise_for_status()
    """

    def __init__(
        self,
        *,
        policy: HTTPPolicy | None = None,
        retry: Retry | None = None,
        timeout: Any = DEFAULT_TIMEOUT,
        **adapter_options: Any,
    ) -> None:
        super().__init__()
        self.timeout = timeout
        self.retry_adapter = RetryAdapter(policy=policy, retry=retry, **adapter_options)
        self.mount("http://", self.retry_adapter)
        self.mount("https://", self.retry_adapter)

    __attrs__ = [*requests.Session.__attrs__, "timeout", "retry_adapter"]  # noqa: RUF012

    @property
    def idle_limits(self) -> IdleLimits:
        """What :attr:`retry_adapter` knows about each origin's idle limit (``snapshot()``)."""
        return self.retry_adapter.idle_limits

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return requests.Session.send(self, request, **kwargs)
