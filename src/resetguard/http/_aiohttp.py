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
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp

from .. import _clock, _guard
from .._events import ConnectionEvent, emit, hooks_active
from .._retry import Retry
from ._idle import IdleLimits
from ._rules import HTTPPolicy, Progress, is_idempotent, parse_keep_alive
from ._run import HttpRun, current, resolve_policy

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
            elif limit is not None and idle > limit:
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


def _simple_body(kwargs: Mapping[str, Any]) -> tuple[bool, Any]:
    """(replayable as is, a seekable file to rewind or None)."""
    data = kwargs.get("data")
    if data is None or isinstance(data, bytes | bytearray | str | dict | list | tuple):
        return True, None
    if isinstance(data, io.IOBase) and data.seekable():
        return True, (data, data.tell())
    return False, None


def _origin(url: Any) -> str:
    from yarl import URL

    u = URL(str(url))
    return f"{u.host}:{u.port}"


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
        policy = self._policy
        retry = policy.retry
        headers = kwargs.get("headers")
        if headers is not None and not isinstance(headers, Mapping):
            headers = dict(headers)
        idempotent = is_idempotent(method, headers, policy)
        simple, rewind = _simple_body(kwargs)
        breaker, budget = retry.breaker, retry.budget
        if budget is not None:
            budget._deposit()
        run: HttpRun | None = None
        ticket, t0 = 0, 0.0
        while True:
            if breaker is not None:
                ticket = _guard.acquire(breaker, run)
                t0 = breaker._clock()
            progress = Progress()
            token = current.set(progress)
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
            except BaseException as exc:
                if breaker is not None:
                    _guard.release(breaker, ticket, t0, exc)
                if not isinstance(exc, Exception):
                    raise  # cancellation or an interrupt: never retried
                if run is None:
                    run = HttpRun(policy, method, str(url), idempotent=idempotent)
                replayable = simple
                if rewind is not None:
                    try:
                        rewind[0].seek(rewind[1])
                    except (OSError, ValueError):
                        replayable = False
                delay = run.failed(exc, progress, replayable=replayable, buffered=read)
                if run.stale_close and progress.idle_age is not None and progress.peer:
                    self.idle_limits.closed(progress.peer, progress.idle_age)
                if delay is None:
                    raise
                if delay > 0:
                    await (retry.async_sleep or _clock.async_sleep)(delay)
                continue
            finally:
                current.reset(token)
            if breaker is not None:
                _guard.release(breaker, ticket, t0, None)
            keep_alive = response.headers.get("Keep-Alive")
            if keep_alive is not None:
                seconds = parse_keep_alive(keep_alive)
                if seconds is not None:
                    self.idle_limits.hint(_origin(response.url), seconds)
            if progress.reused and progress.idle_age is not None and progress.peer:
                self.idle_limits.alive(progress.peer, progress.idle_age)
            if idempotent and response.status in policy.status_codes:
                if run is None:
                    run = HttpRun(policy, method, str(url), idempotent=idempotent)
                delay = run.status(response.status, response.headers.get("Retry-After"))
                if delay is not None:
                    response.release()
                    if delay > 0:
                        await (retry.async_sleep or _clock.async_sleep)(delay)
                    continue
            if run is not None and run.history:
                run.succeeded()
            return response

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
