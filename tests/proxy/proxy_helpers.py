"""Real upstream servers on loopback for the proxy tests (imported by tests and conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TcpServer:
    """A threaded TCP server running ``handler(conn)`` per connection."""

    handler: Callable[[socket.socket], None]
    family: int = socket.AF_INET
    host: str = "127.0.0.1"
    errors: list[BaseException] = field(default_factory=list)
    _sock: socket.socket | None = None
    _conns: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> TcpServer:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(128)
        self._sock = sock
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.close()


def echo(conn: socket.socket) -> None:
    """Echo until EOF, then half-close back (so half-close is observable)."""
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


def have_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class AsyncEchoServer:
    """An asyncio echo server on its own loop thread: cheap for thousands of connections."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self.transports: set[asyncio.BaseTransport] = set()

    def __enter__(self) -> AsyncEchoServer:
        self._thread.start()
        transports = self.transports

        class Echo(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport
                transports.add(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                transports.discard(self.t)

            def data_received(self, data: bytes) -> None:
                self.t.write(data)  # type: ignore[attr-defined]

            def eof_received(self) -> bool:
                return False

        async def start() -> asyncio.base_events.Server:
            return await self.loop.create_server(Echo, "127.0.0.1", 0, backlog=1024)

        self._server = asyncio.run_coroutine_threadsafe(start(), self.loop).result()
        return self

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for transport in list(self.transports):
                transport.abort()
            await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
