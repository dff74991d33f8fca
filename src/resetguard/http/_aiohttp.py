"""aiohttp adapter: :class:`RetrySession`, a ``ClientSession`` wrapper with the same rules.

aiohttp silently re-sends an idempotent request once when a pooled *or fresh* connection
breaks; on top of any retry layer that multiplies the number of times the server runs a
request. :class:`RetrySession` switches that off and decides itself, from what its
connector records for each attempt (connection reused or new, idle age) and whether the
response head had arrived. aiohttp's tracing signals would also tell how much was sent,
but any ``TraceConfig`` costs ~25 µs per request, so they are not used.

Idle expiry: the connector resetguard creates checks each pooled connection before reuse
against its origin's limit (configured, ``Keep-Alive`` hint, learned), and learns from the
connections it finds closed. A plain ``TCPConnector`` you pass gets the same checks on top
of its own options; a connector of another class keeps aiohttp's own ``keepalive_timeout``
only. ``max_age`` is not applied to aiohttp connections.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Coroutine, Generator, Mapping
from typing import Any

import aiohttp
import yarl

from .._drivers import AttemptContext, adrive_first
from .._events import _registry
from .._retry import Retry
from ._guards import OriginGuards
from ._idle import IdleLimits, announce, expires_at
from ._rules import HTTPPolicy
from ._run import Exchange, always, current, resolve_policy

__all__ = ["DEFAULT_TIMEOUT", "RequestContext", "RetrySession"]

#: No total limit (the policy's deadline bounds retries), 5 s to connect, 30 s per read.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=30.0)


class _Connector(aiohttp.TCPConnector):
    """A TCPConnector that retires pooled connections past their origin's idle limit."""

    _rg_limits: IdleLimits
    #: the sweep's limit for an origin with no limit of its own (see _rg_limit)
    _rg_default: float | None

    def __init__(self, limits: IdleLimits, **options: Any) -> None:
        super().__init__(**options)
        self._rg_setup(limits)

    def _rg_setup(self, limits: IdleLimits) -> None:
        self._rg_limits = limits
        self._rg_default = self._rg_limit(limits.idle_timeout)

    def _rg_limit(self, limit: float | None) -> float | None:
        """The sweep's limit for an origin limited to ``limit``: aiohttp's keep-alive
        timeout when lower, less the clock margin."""
        keepalive = self._keepalive_timeout
        if keepalive is not None and (limit is None or keepalive < limit):
            limit = keepalive
        return None if limit is None else limit - _CLOCK_MARGIN

    def _get(self, key: Any, *args: Any) -> Any:
        # Not a coroutine function: it sweeps, then returns aiohttp's own _get (one frame
        # less per request). Runs in the requesting task, so ``current`` is its attempt.
        conns = self._conns.get(key)
        origin = f"{key.host}:{key.port}"
        idle = self._rg_sweep(key, conns, origin) if conns else None
        progress = current.get()
        if progress is not None:
            progress.peer = origin
            progress.received = False
            progress.reused = reused = idle is not None
            progress.idle_age = idle
            if _registry.hooks:
                announce("aiohttp", "reused" if reused else "opened", origin, idle)
        return _base_get(self, key, *args)

    def _rg_sweep(self, key: Any, conns: Any, origin: str) -> float | None:
        """Close the pooled connections aiohttp would not reuse, and those past the origin's
        limit; the idle age of the one aiohttp reuses next (None: it opens a new one).

        aiohttp stores (protocol, released_at) with time.monotonic and reuses the oldest
        first, if it is connected and within ``keepalive_timeout``: the same test is made
        here, with the origin's limit when lower, so what is left first is what aiohttp
        takes (nothing awaits in between).
        """
        limits = self._rg_limits
        own = limits.overrides.get(origin)
        limit = self._rg_default if own is None else self._rg_limit(own)
        now = time.monotonic()
        while conns:
            proto, released = conns[0]
            idle: float = now - released
            if not proto.is_connected():
                limits.closed(origin, idle)  # the server closed it while idle
                announce("aiohttp", "closed", origin, idle)
            elif (due := expires_at(released, released, limit, None)) is not None and now > due:
                announce("aiohttp", "expired", origin, idle)
            else:
                return idle
            conns.popleft()
            proto.close()
        del self._conns[key]
        return None


#: aiohttp's own _get, called without super() (about 55 ns less per request)
_base_get = aiohttp.TCPConnector._get

#: aiohttp reads its clock a moment after the sweep: a connection this close to its
#: keep-alive limit is closed by the sweep, so aiohttp never finds it expired itself.
_CLOCK_MARGIN = 0.001


class _HeldFile(io.IOBase):
    """A file handed to aiohttp that aiohttp cannot close.

    aiohttp closes a file body when its request ends, failed or not, so a retry could not
    send it again. Each attempt gets this view instead (rewound before a replay), and the
    file itself is closed once, when the whole request is over, as aiohttp would.
    """

    def __init__(self, file: Any) -> None:
        super().__init__()
        self._file = file
        self.name = getattr(file, "name", None)

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._file.read(size)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position: int = self._file.seek(offset, whence)
        return position

    def tell(self) -> int:
        position: int = self._file.tell()
        return position

    def fileno(self) -> int:
        number: int = self._file.fileno()
        return number

    def close(self) -> None:
        pass  # the request closes the file itself when it is over


class _ReplayForm(aiohttp.FormData):
    """A ``FormData`` that builds a fresh multipart body for every attempt.

    aiohttp turns a ``FormData`` into its body once and closes that body when the attempt
    ends; a replay needs a new one, with the same fields.
    """

    def __init__(self, form: aiohttp.FormData, fields: list[Any]) -> None:
        super().__init__(quote_fields=form._quote_fields, charset=form._charset)
        self._is_multipart = form._is_multipart
        self._fields = fields

    def __call__(self) -> Any:
        fresh = aiohttp.FormData(quote_fields=self._quote_fields, charset=self._charset)
        fresh._is_multipart = self._is_multipart
        fresh._fields = list(self._fields)
        return fresh()


def _holdable(value: Any) -> bool:
    return (
        isinstance(value, io.BufferedReader | io.BufferedRandom | io.FileIO)
        and not value.closed
        and _seekable(value)
    )


def _hold_files(kwargs: dict[str, Any]) -> list[Any]:
    """Put each seekable file of the body behind a :class:`_HeldFile`; the files held."""
    data = kwargs.get("data")
    held: list[Any] = []

    def hold(value: Any) -> Any:
        if _holdable(value):
            held.append(value)
            return _HeldFile(value)
        return value

    if isinstance(data, aiohttp.FormData):
        if data._fields:
            fields = [(options, headers, hold(v)) for options, headers, v in data._fields]
            kwargs["data"] = _ReplayForm(data, fields)
    elif isinstance(data, Mapping):
        kwargs["data"] = {k: hold(v) for k, v in data.items()}
    elif isinstance(data, list | tuple):
        kwargs["data"] = [
            (p[0], hold(p[1])) if isinstance(p, tuple | list) and len(p) == 2 else p for p in data
        ]
    else:
        kwargs["data"] = hold(data)
    return held


async def _then_close(
    send: Coroutine[Any, Any, aiohttp.ClientResponse], files: list[Any]
) -> aiohttp.ClientResponse:
    try:
        return await send
    finally:
        for file in files:
            file.close()


def _adopt(connector: aiohttp.TCPConnector, limits: IdleLimits) -> None:
    """Give a plain ``TCPConnector`` (with the user's options) the idle checks of ours.

    ``_Connector`` adds attributes and methods to ``TCPConnector`` and nothing to its
    layout, so the connector keeps every option it was built with.
    """
    connector.__class__ = _Connector
    connector._rg_setup(limits)  # type: ignore[attr-defined]


def _form_values(data: Any) -> list[Any] | None:
    """The values of a form body (dict, pairs, ``FormData``); None for any other body."""
    if isinstance(data, aiohttp.FormData):
        return [value for _options, _headers, value in data._fields]
    if isinstance(data, Mapping):
        return list(data.values())
    if isinstance(data, list | tuple):
        return [
            pair[1] if isinstance(pair, tuple | list) and len(pair) == 2 else pair for pair in data
        ]
    return None


def _seekable(value: Any) -> bool:
    try:
        return isinstance(value, io.IOBase) and value.seekable()
    except (OSError, ValueError):
        return False


def _rewinder(positions: list[tuple[Any, int]]) -> Callable[[], bool]:
    def rewind() -> bool:
        try:
            for file, position in positions:
                file.seek(position)
        except (OSError, ValueError):
            return False
        return True

    return rewind


def _replayable(kwargs: Mapping[str, Any]) -> Callable[[], bool]:
    """Readies the request body to be sent again; False when it cannot be (a stream).

    Bytes and text replay as they are; a seekable file, alone or inside a form (dict,
    pairs, ``FormData``), is rewound to where it started.
    """
    data = kwargs.get("data")
    if data is None or isinstance(data, bytes | bytearray | str):
        return always
    if isinstance(data, io.IOBase):
        return _rewinder([(data, data.tell())]) if _seekable(data) else _never
    values = _form_values(data)
    if values is None:
        return _never
    if isinstance(data, aiohttp.FormData) and not values and data._is_multipart:
        return _never  # sent before (its fields were consumed): not replayed
    files = [v for v in values if hasattr(v, "read")]
    if not all(_seekable(f) for f in files):
        return _never  # a pipe or a stream inside the form: sent once
    if not files:
        return always
    return _rewinder([(f, f.tell()) for f in files])


def _never() -> bool:
    return False


class RequestContext(Coroutine[Any, Any, aiohttp.ClientResponse]):
    """What :meth:`RetrySession.request` and the verbs return, as aiohttp's own methods do.

    Await it (``response = await session.get(url)``) or enter it
    (``async with session.get(url) as response:``); the block releases the response.
    """

    __slots__ = ("_coro", "_response")

    def __init__(self, coro: Coroutine[Any, Any, aiohttp.ClientResponse]) -> None:
        self._coro = coro
        self._response: aiohttp.ClientResponse | None = None

    def __await__(self) -> Generator[Any, None, aiohttp.ClientResponse]:
        return self._coro.__await__()

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self._response = await self._coro
        return await self._response.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._response is not None:
            await self._response.__aexit__(*exc_info)


#: The origin key of a URL aiohttp cannot send to (unparsable, or no host): the request
#: fails when it runs, as aiohttp's own does, and no real origin's breaker hears of it.
_INVALID = "(invalid URL)"


class _Request(Exchange):
    """One aiohttp request: its translation for the engine, and how an attempt sends it
    (a method, not a closure made per request)."""

    client: RetrySession
    url: yarl.URL | str  # as aiohttp resolved it (base_url joined), or the text it rejects
    kwargs: dict[str, Any]

    async def send(self, a: AttemptContext) -> aiohttp.ClientResponse:
        progress, token = self.begin(a)
        try:
            response = await self.client.session._request(self.method, self.url, **self.kwargs)
            # The head arrived. How much was written is not reported (a tracing signal
            # per request costs ~25 µs), so it stays unknown: the rules then lean on
            # reuse, "any byte received" and the exception.
            progress.received = True
            if self.buffered:
                try:
                    await response.read()
                except BaseException:
                    response.close()
                    raise
        finally:
            self.end(token)
        headers = response.headers  # a multidict: its get() is C and raises nothing
        if self.answered(a, progress, response.status, headers, headers.get("keep-alive")):
            response.release()
        return response


class RetrySession:
    """An ``aiohttp.ClientSession`` with resetguard's retry rules.

    Args:
        policy: the :class:`HTTPPolicy` (default ``HTTPPolicy()``).
        retry: shorthand for ``policy=HTTPPolicy(retry=retry)``.
        session_options: ``aiohttp.ClientSession`` arguments (``base_url``, ``headers``,
            ``trust_env``, ``connector``…), as aiohttp takes them. A plain
            ``aiohttp.TCPConnector`` you pass keeps its options and gains the idle checks;
            a connector of another class is used as is.

    ``request()`` and the verbs work both ways aiohttp's do: ``await session.get(url)``
    and ``async with session.get(url) as response:`` (the block releases the response).
    Every ``ClientSession.request`` argument (``proxy=``, ``data=``, ``ssl=``…) passes
    through; seekable files (alone or in a form) are rewound when a retry replays them.

    :meth:`request` reads the body before returning (so a reset mid-body is retried for
    idempotent requests); pass ``read=False`` to stream it yourself.

    Example::

        from resetguard.http import RetrySession

        async with RetrySession() as session:
            async with session.get("https://example.org/") as response:
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
        #: Per-origin idle limits (configured, hints, learned): ``snapshot()``, ``forget()``.
        self.idle_limits = IdleLimits(self._policy.idle_timeout, learn=self._policy.learn_idle)
        #: The session's retry budget and per-origin breakers (``states()``, ``statistics()``).
        self.guards = OriginGuards(self._policy)
        connector = session_options.get("connector")
        if connector is None:
            idle = self._policy.idle_timeout
            session_options["connector"] = _Connector(
                self.idle_limits,
                limit=100,
                keepalive_timeout=idle if idle is not None else 15.0,
            )
        elif type(connector) is aiohttp.TCPConnector:
            _adopt(connector, self.idle_limits)
        session_options.setdefault("timeout", DEFAULT_TIMEOUT)
        self.session = aiohttp.ClientSession(**session_options)
        # aiohttp's own silent replay (one re-send of an idempotent request on any broken
        # connection) would multiply with ours; the rules below decide instead.
        self.session._retry_connection = False

    @property
    def policy(self) -> HTTPPolicy:
        """The :class:`HTTPPolicy` in force."""
        return self._policy

    def request(self, method: str, url: Any, *, read: bool = True, **kwargs: Any) -> RequestContext:
        """Send a request under the policy, like ``ClientSession.request``.

        Awaited or used as ``async with session.request(...) as response:``.
        """
        held = _hold_files(kwargs) if "data" in kwargs else None
        headers = kwargs.get("headers")
        if headers is not None and not isinstance(headers, Mapping):
            headers = dict(headers)
        # aiohttp's own resolution (base_url joined): the origin is then the one dialled,
        # and aiohttp does not parse the URL again
        target: yarl.URL | str
        try:
            target = self.session._build_url(url)
        except ValueError:  # aiohttp raises its InvalidURL error when the request runs
            target, origin = url, _INVALID
        else:
            host = target.raw_host
            origin = _INVALID if host is None else f"{host}:{target.port}"
        exchange = _Request(self, method, target, headers, read, _replayable(kwargs), origin)
        exchange.kwargs = kwargs
        sending = adrive_first(exchange, exchange.send)
        return RequestContext(_then_close(sending, held) if held else sending)

    def get(self, url: Any, **kwargs: Any) -> RequestContext:
        return self.request("GET", url, **kwargs)

    def head(self, url: Any, **kwargs: Any) -> RequestContext:
        return self.request("HEAD", url, **kwargs)

    def options(self, url: Any, **kwargs: Any) -> RequestContext:
        return self.request("OPTIONS", url, **kwargs)

    def post(self, url: Any, **kwargs: Any) -> RequestContext:
        return self.request("POST", url, **kwargs)

    def put(self, url: Any, **kwargs: Any) -> RequestContext:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: Any, **kwargs: Any) -> RequestContext:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: Any, **kwargs: Any) -> RequestContext:
        return self.request("DELETE", url, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Everything else a ClientSession has (cookie_jar, headers, closed, ws_connect…)
        # is the wrapped session's.
        if name == "session":
            raise AttributeError(name)
        return getattr(self.session, name)

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> RetrySession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
