"""aiohttp adapter: :class:`RetrySession`, a ``ClientSession`` wrapper with the same rules.

aiohttp silently re-sends an idempotent request once when a pooled *or fresh* connection
breaks; on top of any retry layer that multiplies the number of times the server runs a
request. :class:`RetrySession` switches that off and decides itself, from what its
connector records for each attempt (connection reused or new, idle age) and whether the
response head had arrived. aiohttp's tracing signals would also tell how much was sent,
but any ``TraceConfig`` costs ~25 µs per request, so they are not used.

Idle expiry: the connector resetguard creates checks each pooled connection before reuse
against its origin's limit (configured, ``Keep-Alive`` hint, learned), and learns from the
connections it finds closed. A connector you pass yourself keeps aiohttp's own
``keepalive_timeout`` only; ``max_age`` is not applied to aiohttp connections.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import aiohttp

from .._drivers import AttemptContext, adrive
from .._events import ConnectionEvent, emit, hooks_active
from .._retry import Retry
from ._guards import OriginGuards
from ._idle import IdleLimits, expires_at, origin_of
from ._rules import HTTPPolicy
from ._run import Exchange, current, resolve_policy

__all__ = ["DEFAULT_TIMEOUT", "RetrySession"]

#: No total limit (the policy's deadline bounds retries), 5 s to connect, 30 s per read.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=30.0)


class _Connector(aiohttp.TCPConnector):
    """A TCPConnector that retires pooled connections past their origin's idle limit."""

    def __init__(self, limits: IdleLimits, **options: Any) -> None:
        super().__init__(**options)
        self._rg_limits = limits
        self._rg_idle: float | None = None  # idle age of the connection about to be reused

    async def _get(self, key: Any, *args: Any) -> Any:
        # Runs in the requesting task, so ``current`` is that request's attempt.
        self._rg_idle = None
        conns = self._conns.get(key)
        if conns:
            self._rg_sweep(key, conns)
        connection = await super()._get(key, *args)
        progress = current.get()
        if progress is not None:
            origin = f"{key.host}:{key.port}"
            progress.peer = origin
            progress.received = False
            progress.reused = connection is not None
            if connection is not None:
                progress.idle_age = self._rg_idle
            if hooks_active():
                action = "reused" if connection is not None else "opened"
                idle = progress.idle_age
                emit(ConnectionEvent(name="aiohttp", action=action, peer=origin, idle_age=idle))
        return connection

    def _rg_sweep(self, key: Any, conns: Any) -> None:
        # aiohttp stores (protocol, released_at) with time.monotonic and reuses the oldest
        # first; nothing awaits between this sweep and aiohttp popping that entry, so the
        # idle age left in _rg_idle belongs to the connection _get returns.
        origin = f"{key.host}:{key.port}"
        limit = self._rg_limits.limit(origin)
        now = time.monotonic()
        while conns:
            proto, released = conns[0]
            idle = now - released
            if not proto.is_connected():
                self._rg_limits.closed(origin, idle)  # the server closed it while idle
                if hooks_active():
                    emit(
                        ConnectionEvent(name="aiohttp", action="closed", peer=origin, idle_age=idle)
                    )
            elif (due := expires_at(released, released, limit, None)) is not None and now > due:
                if hooks_active():
                    emit(
                        ConnectionEvent(
                            name="aiohttp", action="expired", peer=origin, idle_age=idle
                        )
                    )
            else:
                self._rg_idle = idle
                return
            conns.popleft()
            proto.close()
        del self._conns[key]


def _replayable(kwargs: Mapping[str, Any]) -> Callable[[], bool]:
    """Readies the request body to be sent again; False when it cannot be (a stream)."""
    data = kwargs.get("data")
    if data is None or isinstance(data, bytes | bytearray | str | dict | list | tuple):
        return _always
    if isinstance(data, io.IOBase) and data.seekable():
        position = data.tell()

        def rewind() -> bool:
            try:
                data.seek(position)
            except (OSError, ValueError):
                return False
            return True

        return rewind
    return _never


def _always() -> bool:
    return True


def _never() -> bool:
    return False


class RetrySession:
    """An ``aiohttp.ClientSession`` with resetguard's retry rules.

    Args:
        policy: the :class:`HTTPPolicy` (default ``HTTPPolicy()``).
        retry: shorthand for ``policy=HTTPPolicy(retry=retry)``.
        session_options: ``aiohttp.ClientSession`` arguments (``base_url``, ``headers``…);
            a ``connector`` you pass is used as is.

    :meth:`request` reads the body before returning (so a reset mid-body is retried for
    idempotent requests); pass ``read=False`` to stream it yourself.

    Example::

        from resetguard.http import RetrySession

        async with RetrySession() as session:
            response = await session.get("https://example.org/")
            text = await response.text()
    """

    def __init__(
        self,
        *,
        policy: HTTPPolicy | None = None,
        retry: Retry | None = None,
        **session_options: Any,
    ) -> None:
        self._policy = resolve_policy(policy, retry)
        #: Per-origin idle limits seen (hints, learned); aiohttp itself applies only
        #: ``keepalive_timeout``.
        self.idle_limits = IdleLimits(self._policy.idle_timeout, learn=self._policy.learn_idle)
        #: The session's retry budget and per-origin breakers (``states()``, ``statistics()``).
        self.guards = OriginGuards(self._policy)
        if "connector" not in session_options:
            idle = self._policy.idle_timeout
            session_options["connector"] = _Connector(
                self.idle_limits,
                limit=100,
                keepalive_timeout=idle if idle is not None else 15.0,
            )
        session_options.setdefault("timeout", DEFAULT_TIMEOUT)
        self.session = aiohttp.ClientSession(**session_options)
        # aiohttp's own silent replay (one re-send of an idempotent request on any broken
        # connection) would multiply with ours; the rules below decide instead.
        self.session._retry_connection = False

    @property
    def policy(self) -> HTTPPolicy:
        """The :class:`HTTPPolicy` in force."""
        return self._policy

    async def request(
        self, method: str, url: Any, *, read: bool = True, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        """Send a request under the policy, like ``ClientSession.request`` (awaited)."""
        headers = kwargs.get("headers")
        if headers is not None and not isinstance(headers, Mapping):
            headers = dict(headers)
        exchange = Exchange(
            self._policy,
            method,
            str(url),
            headers,
            buffered=read,
            replayable=_replayable(kwargs),
            limits=self.idle_limits,
            guards=self.guards,
        )

        async def attempt(a: AttemptContext) -> aiohttp.ClientResponse:
            progress, token = exchange.begin(a)
            try:
                response = await self.session.request(method, url, **kwargs)
                # The head arrived. How much was written is not reported (a tracing
                # signal per request costs ~25 µs), so it stays unknown: the rules then
                # lean on reuse, "any byte received" and the exception.
                progress.received = True
                if read:
                    try:
                        await response.read()
                    except BaseException:
                        response.close()
                        raise
            finally:
                exchange.end(token)
            origin = origin_of(str(response.url))
            if exchange.answered(a, progress, response.status, response.headers, origin):
                response.release()
            return response

        return await adrive(exchange.run, attempt)

    async def get(self, url: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("GET", url, **kwargs)

    async def head(self, url: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("HEAD", url, **kwargs)

    async def options(self, url: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("OPTIONS", url, **kwargs)

    async def post(self, url: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("DELETE", url, **kwargs)

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> RetrySession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
