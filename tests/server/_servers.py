"""Real ASGI servers started in-process, each in its own thread and event loop, on port 0.

Every server answers on 127.0.0.1 and is stopped (thread joined) by the ``with`` block.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

SERVERS = ("uvicorn-h11", "uvicorn-httptools", "uvicorn-uvloop", "hypercorn", "granian")


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    sock.setblocking(False)
    return sock


def _free_port() -> int:
    # Only granian needs this: its embedded server binds by address and port itself.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"server on port {port} did not start in time")


class ServerThread:
    """``with ServerThread("uvicorn-h11", app) as srv: srv.port``."""

    def __init__(self, kind: str, app: Callable[..., Any]) -> None:
        if kind not in SERVERS:
            raise ValueError(f"unknown server {kind!r}")
        self.kind = kind
        self.app = app
        self.port = 0
        self._thread: threading.Thread | None = None
        self._stop: Callable[[], None] = lambda: None
        self.error: BaseException | None = None

    def __enter__(self) -> ServerThread:
        starter = getattr(self, "_start_" + self.kind.split("-")[0])
        starter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
        if self._thread is not None:
            self._thread.join(15)
            assert not self._thread.is_alive(), f"{self.kind} did not stop"

    def _run(self, target: Callable[[], None]) -> None:
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced by the test through .error
                self.error = exc

        self._thread = threading.Thread(target=body, name=f"server-{self.kind}", daemon=True)
        self._thread.start()

    def _start_uvicorn(self) -> None:
        import uvicorn

        http = "h11" if self.kind == "uvicorn-h11" else "httptools"
        loop = "uvloop" if self.kind == "uvicorn-uvloop" else "asyncio"
        sock = _listening_socket()
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            http=http,
            loop=loop,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        self._run(lambda: server.run(sockets=[sock]))

        def stop() -> None:
            server.should_exit = True

        self._stop = stop
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline and self.error is None:
            time.sleep(0.01)
        if not server.started:
            stop()
            raise RuntimeError(f"uvicorn did not start: {self.error!r}")

    def _start_hypercorn(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        sock = _listening_socket()
        self.port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.fileno()}"]
        config.loglevel = "WARNING"
        config.graceful_timeout = 5
        loop = asyncio.new_event_loop()
        stop_event = asyncio.Event()

        def run() -> None:
            try:
                loop.run_until_complete(
                    serve(self.app, config, shutdown_trigger=stop_event.wait)  # type: ignore[arg-type]
                )
            finally:
                loop.close()
                sock.close()

        self._run(run)
        self._stop = lambda: loop.call_soon_threadsafe(stop_event.set)
        _wait_port(self.port, time.monotonic() + 15)

    def _start_granian(self) -> None:
        from granian.constants import Interfaces
        from granian.server.embed import Server

        self.port = _free_port()
        loop = asyncio.new_event_loop()
        server = Server(
            self.app,
            address="127.0.0.1",
            port=self.port,
            interface=Interfaces.ASGINL,
            log_enabled=False,
        )

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.serve())
            finally:
                loop.close()

        self._run(run)

        def stop() -> None:
            loop.call_soon_threadsafe(server.stop)

        self._stop = stop
        _wait_port(self.port, time.monotonic() + 15)
