"""In-process use: :class:`FaultProxyServer` (many proxies on one loop, optional API)
and :class:`FaultProxy` (one proxy).

Both work in two colours with the same methods:

* ``async with``: the proxies run on the caller's running event loop;
* ``with``: the proxies run on an event loop in a background thread, for synchronous
  code and tests.

Every method is synchronous and thread-safe: called from the loop's own thread it acts
at once, called from any other thread it is handed to the loop and waits for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from random import Random
from types import TracebackType
from typing import Any, TypeVar

from ._api import ApiServer, start_api
from ._proxy import Engine, Proxy, ProxyError, format_address, parse_address
from ._toxics import Toxic, ToxicError, parse_toxic, toxics_from_json

__all__ = ["FaultProxy", "FaultProxyServer", "ToxicLike", "as_toxics"]

T = TypeVar("T")
ToxicLike = Toxic | str | Mapping[str, Any]
_CALL_TIMEOUT = 30.0  # seconds a cross-thread call may wait for the loop


def as_toxics(items: Iterable[ToxicLike] | ToxicLike) -> tuple[Toxic, ...]:
    """Normalise toxics given as objects, CLI spec strings or Toxiproxy JSON dicts."""
    if isinstance(items, (Toxic, str, Mapping)):
        items = [items]
    out: list[Toxic] = []
    for item in items:
        if isinstance(item, Toxic):
            out.append(item)
        elif isinstance(item, str):
            out.extend(parse_toxic(item))
        elif isinstance(item, Mapping):
            out.extend(toxics_from_json(item))
        else:
            raise ToxicError(f"a toxic must be a Toxic, a spec string or a dict, got {item!r}")
    return tuple(out)


def _address(value: str | tuple[str, int]) -> str:
    if isinstance(value, tuple):
        host, port = value
        return format_address(host, int(port))
    parse_address(value)  # validate early, with a clear message
    return value


class FaultProxyServer:
    """A set of fault proxies on one event loop, with an optional Toxiproxy-compatible API.

    ``api`` is ``HOST:PORT`` for the control API (``None``: no API; port 0 picks one,
    see :attr:`api_address`). ``random`` drives toxicity draws, jitter and slicing.
    ``loop_factory`` (threaded form only) creates the loop, e.g. ``uvloop.new_event_loop``.

    Example::

        with FaultProxyServer(api="127.0.0.1:0") as server:
            db = server.create("127.0.0.1:5432", name="db")
            ...   # point clients at db.address; drive it through server.api_url too
    """

    def __init__(
        self,
        *,
        api: str | None = None,
        random: Random | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        if api is not None:
            parse_address(api, what="api")
        self._api_listen = api
        self._random = random
        self._loop_factory = loop_factory
        self._engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._api: ApiServer | None = None
        self.api_address: str | None = None
        """``HOST:PORT`` the API listens on, once started (``None`` without an API)."""

    # -- lifecycle -----------------------------------------------------------------------

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._engine = Engine(loop, self._random)
        if self._api_listen is not None:
            host, port = parse_address(self._api_listen, what="api")
            try:
                self._api = await start_api(self._engine, host, port)
            except OSError as exc:
                self._engine.close()
                self._engine = None
                reason = exc.strerror or str(exc)
                raise ProxyError(
                    f"cannot listen for the API on {self._api_listen}: {reason}"
                ) from None
            self.api_address = format_address(*self._api.address)

    async def _shutdown(self) -> None:
        if self._api is not None:
            self._api.close()
            await self._api.wait_closed()
            self._api = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    async def astart(self) -> FaultProxyServer:
        """Start on the running event loop."""
        if self._engine is not None:
            raise RuntimeError("FaultProxyServer already started")
        await self._open()
        return self

    async def aclose(self) -> None:
        """Stop every proxy, close every connection and the API (async form)."""
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.close)
            return
        await self._shutdown()

    async def __aenter__(self) -> FaultProxyServer:
        return await self.astart()

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def start(self) -> FaultProxyServer:
        """Start on a new event loop in a daemon thread."""
        if self._engine is not None or self._thread is not None:
            raise RuntimeError("FaultProxyServer already started")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        factory = self._loop_factory or asyncio.new_event_loop

        def run() -> None:
            loop = factory()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name="resetguard-proxy", daemon=True)
        self._thread = thread
        thread.start()
        try:
            ready.result()
        except BaseException:
            thread.join()
            self._thread = None
            raise
        return self

    def close(self) -> None:
        """Stop every proxy, close every connection and the API; join the thread."""
        thread = self._thread
        if thread is None:
            if self._engine is not None:
                # async form closed from sync code on the loop thread: no await needed
                # for the engine; the API server is closed without waiting.
                if self._api is not None:
                    self._api.close()
                    self._api = None
                self._engine.close()
                self._engine = None
            return
        loop = self._loop
        assert loop is not None
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
        self._thread = None

    def __enter__(self) -> FaultProxyServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- calls into the loop ------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = self._loop
        if self._engine is None or loop is None:
            raise RuntimeError("FaultProxyServer is not running")
        if threading.get_ident() == self._loop_thread:
            return fn(*args, **kwargs)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(_CALL_TIMEOUT)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("FaultProxyServer is not running")
        return self._engine

    @property
    def api_url(self) -> str | None:
        """``http://HOST:PORT`` of the API, or ``None``."""
        return None if self.api_address is None else f"http://{self.api_address}"

    # -- proxies ----------------------------------------------------------------------------

    def create(
        self,
        upstream: str | tuple[str, int],
        *,
        listen: str | tuple[str, int] = "127.0.0.1:0",
        name: str | None = None,
        toxics: Iterable[ToxicLike] = (),
        enabled: bool = True,
    ) -> FaultProxy:
        """Start a proxy from ``listen`` (default: a free loopback port) to ``upstream``.

        ``toxics`` are in place before the first connection is accepted.
        """
        up = _address(upstream)
        lis = _address(listen)
        specs = as_toxics(toxics)
        proxy = self._call(self.engine.create, name, lis, up, enabled=enabled, toxics=specs)
        return FaultProxy._bound(self, proxy)

    def get(self, name: str) -> FaultProxy:
        return FaultProxy._bound(self, self._call(self.engine.get, name))

    @property
    def proxies(self) -> dict[str, FaultProxy]:
        found = self._call(lambda: dict(self.engine.proxies))
        return {name: FaultProxy._bound(self, p) for name, p in found.items()}

    def remove(self, name: str) -> None:
        """Stop and delete a proxy, closing its connections."""
        self._call(self.engine.remove, name)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic (Toxiproxy's ``/reset``)."""
        self._call(self.engine.reset)

    def populate(self, entries: Iterable[Mapping[str, Any]]) -> list[FaultProxy]:
        """Create or replace proxies from Toxiproxy-style dicts (``name``, ``listen``,
        ``upstream``, ``enabled``, and optionally ``toxics``)."""
        checked = []
        for i, entry in enumerate(entries, 1):
            if not entry.get("name") or not entry.get("upstream"):
                raise ProxyError(f"missing required field: name or upstream at proxy {i}", 400)
            toxics = entry.get("toxics")
            checked.append(
                {
                    "name": entry["name"],
                    "listen": _address(entry.get("listen") or "127.0.0.1:0"),
                    "upstream": _address(entry["upstream"]),
                    "enabled": entry.get("enabled", True),
                    "toxics": None if toxics is None else as_toxics(toxics),
                }
            )
        done = self._call(self.engine.populate, checked)
        return [FaultProxy._bound(self, p) for p in done]


class FaultProxy:
    """One fault-injection proxy in front of ``upstream``.

    Standalone, it runs its own :class:`FaultProxyServer` (no API)::

        with FaultProxy("127.0.0.1:5432", toxics=["latency:latency=50"]) as proxy:
            connect(host=proxy.host, port=proxy.port)

        async with FaultProxy("127.0.0.1:5432") as proxy:
            with proxy.toxic("reset_peer"):
                ...

    From a server, :meth:`FaultProxyServer.create` returns one that is already running.
    """

    def __init__(
        self,
        upstream: str | tuple[str, int],
        *,
        listen: str | tuple[str, int] = "127.0.0.1:0",
        name: str | None = None,
        toxics: Iterable[ToxicLike] = (),
        enabled: bool = True,
        random: Random | None = None,
    ) -> None:
        self._args: dict[str, Any] | None = {
            "upstream": _address(upstream),
            "listen": _address(listen),
            "name": name,
            "toxics": as_toxics(toxics),
            "enabled": enabled,
        }
        self._random = random
        self._server: FaultProxyServer | None = None
        self._proxy: Proxy | None = None
        self._owns_server = False

    @classmethod
    def _bound(cls, server: FaultProxyServer, proxy: Proxy) -> FaultProxy:
        self = cls.__new__(cls)
        self._args = None
        self._random = None
        self._server = server
        self._proxy = proxy
        self._owns_server = False
        return self

    # -- lifecycle -----------------------------------------------------------------------

    def _adopt(self, server: FaultProxyServer) -> None:
        args = self._args
        assert args is not None
        self._server = server
        self._owns_server = True
        try:
            self._proxy = server.create(**args)._proxy
        except BaseException:
            server.close()
            self._server = None
            raise

    def __enter__(self) -> FaultProxy:
        if self._server is not None:
            raise RuntimeError("FaultProxy already started")
        self._adopt(FaultProxyServer(random=self._random).start())
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> FaultProxy:
        if self._server is not None:
            raise RuntimeError("FaultProxy already started")
        server = await FaultProxyServer(random=self._random).astart()
        try:
            self._adopt(server)
        except BaseException:
            await server.aclose()
            raise
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._owns_server and self._server is not None:
            server, self._server = self._server, None
            await server.aclose()
        else:
            self.close()

    def close(self) -> None:
        """Stop this proxy and close its connections (and its own server, if standalone)."""
        server = self._server
        proxy = self._proxy
        if server is None or proxy is None:
            return
        self._server = None
        if self._owns_server:
            server.close()
            return
        with contextlib.suppress(ProxyError, RuntimeError):
            server._call(_remove_if_same, server.engine, proxy)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._server is None:
            raise RuntimeError("FaultProxy is not running")
        return self._server._call(fn, *args, **kwargs)

    @property
    def _p(self) -> Proxy:
        if self._proxy is None:
            raise RuntimeError("FaultProxy is not running")
        return self._proxy

    # -- where it is -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._p.name

    @property
    def listen(self) -> str:
        """``HOST:PORT`` the proxy listens on (the real port, never 0)."""
        return self._p.listen

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to connect to, e.g. for ``socket.create_connection``."""
        return parse_address(self._p.listen)

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def upstream(self) -> str:
        return self._p.upstream

    @property
    def enabled(self) -> bool:
        return self._p.enabled

    def url(self, scheme: str = "http", path: str = "") -> str:
        """``scheme://HOST:PORT/path`` through the proxy."""
        return f"{scheme}://{self.listen}{path}"

    @property
    def connections(self) -> int:
        """Connections open through the proxy right now."""
        return self._call(lambda: len(self._p.conns))

    def stats(self) -> dict[str, int]:
        """Counters: bytes received/sent per direction, connections total and active."""

        def read() -> dict[str, int]:
            p = self._p
            (up_in, up_out), (down_in, down_out) = p.stats  # summed over connections: once
            return {
                "upstream_received": up_in,
                "upstream_sent": up_out,
                "downstream_received": down_in,
                "downstream_sent": down_out,
                "connections_total": p.connections_total,
                "connections_active": len(p.conns),
            }

        return self._call(read)

    # -- toxics -------------------------------------------------------------------------------

    @property
    def toxics(self) -> tuple[Toxic, ...]:
        return self._call(lambda: tuple(self._p.toxics.values()))

    def add_toxic(self, toxic: ToxicLike) -> Toxic:
        """Add one toxic (object, spec string or Toxiproxy JSON); it applies to open
        connections too. Raises ProxyError (409) if its name is taken."""
        specs = as_toxics(toxic)
        if len(specs) != 1:
            raise ToxicError("add_toxic takes one toxic; use toxic(...) for 'both' specs")
        return self._call(self._p.add_toxic, specs[0])

    def update_toxic(self, name: str, **changes: Any) -> Toxic:
        """Change a toxic's attributes or ``toxicity`` in place (open connections too)."""

        def update() -> Toxic:
            p = self._p
            old = p.toxics.get(name)
            if old is None:
                raise ProxyError("toxic not found", 404)
            return p.update_toxic(old.replace(**changes))

        return self._call(update)

    def remove_toxic(self, name: str) -> None:
        """Remove a toxic; data it held back (latency, bandwidth) is sent on at once."""
        self._call(self._p.remove_toxic, name)

    def clear_toxics(self) -> None:
        self._call(self._p.clear_toxics)

    @contextlib.contextmanager
    def toxic(self, *toxics: ToxicLike) -> Iterator[tuple[Toxic, ...]]:
        """Add toxics for the duration of a ``with`` block, then remove them."""
        specs = as_toxics(toxics)
        added: list[Toxic] = []
        try:
            for spec in specs:
                added.append(self._call(self._p.add_toxic, spec))
            yield tuple(added)
        finally:
            for spec in reversed(added):
                with contextlib.suppress(ProxyError, RuntimeError):
                    self._call(self._p.remove_toxic, spec.name)

    # -- the whole proxy ------------------------------------------------------------------------

    def disable(self) -> None:
        """Stop listening and close every connection (Toxiproxy's ``enabled: false``)."""
        self._call(self._p.stop)

    def enable(self) -> None:
        """Listen again (on the same address)."""
        self._call(self._p.start)

    def reset_connections(self) -> int:
        """Reset (RST) every open connection now; returns how many."""
        return self._call(self._p.close_connections, rst=True)

    def close_connections(self) -> int:
        """Close (FIN) every open connection now; returns how many."""
        return self._call(self._p.close_connections, rst=False)

    def __repr__(self) -> str:
        if self._proxy is None:
            return f"<FaultProxy not started upstream={self._args and self._args['upstream']}>"
        p = self._proxy
        return f"<FaultProxy {p.name} {p.listen} -> {p.upstream} toxics={list(p.toxics)}>"


def _remove_if_same(engine: Engine, proxy: Proxy) -> None:
    if engine.proxies.get(proxy.name) is proxy:
        engine.remove(proxy.name)
    else:
        proxy.stop()
