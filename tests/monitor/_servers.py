"""Real loopback servers for the monitor and tracer tests: they reset (RST) on demand.

A reset is a close with ``SO_LINGER`` on and a zero timeout: the kernel sends RST instead
of FIN, exactly what a crashed backend or an idle-timing load balancer does.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType

_LINGER_RST = struct.pack("ii", 1, 0)
_TIMEOUT = 5.0


def rst_close(sock: socket.socket) -> None:
    """Close ``sock`` so that the peer receives a TCP RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


class _Server:
    """Accept loop on 127.0.0.1:0 in a thread; one handler thread per connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.connections = 0
        self._accepter = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> _Server:
        self._accepter.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._accepter.join(_TIMEOUT)
        self.listener.close()
        for t in self._threads:
            t.join(_TIMEOUT)
        assert not any(t.is_alive() for t in self._threads), "server handler did not stop"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
            conn.settimeout(_TIMEOUT)
            t = threading.Thread(target=self._guarded, args=(conn, index), daemon=True)
            self._threads.append(t)
            t.start()

    def _guarded(self, conn: socket.socket, index: int) -> None:
        try:
            self.handle(conn, index)
        except OSError:
            pass
        finally:
            if conn.fileno() != -1:
                conn.close()

    def handle(self, conn: socket.socket, index: int) -> None:
        raise NotImplementedError


class PingServer(_Server):
    """Line protocol: reads ``ping\\n``, answers ``pong\\n`` or resets when ``reset(i)``."""

    def __init__(self, reset: Callable[[int], bool]) -> None:
        super().__init__()
        self.reset = reset

    def handle(self, conn: socket.socket, index: int) -> None:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(64)
            if not chunk:
                return
            data += chunk
        if self.reset(index):
            rst_close(conn)
        else:
            conn.sendall(b"pong\n")


class KeepAliveHTTPServer(_Server):
    """HTTP/1.1 with keep-alive; ``reset(conn_index, request_index)`` decides to RST a request
    after reading it (the server "died" or an idle timer fired while the request was in flight).
    """

    def __init__(self, reset: Callable[[int, int], bool] = lambda c, r: False) -> None:
        super().__init__()
        self.reset = reset
        self.requests = 0

    def handle(self, conn: socket.socket, index: int) -> None:
        buf = b""
        for request_index in range(1000):
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(buf) < length:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            buf = buf[length:]
            with self._lock:
                self.requests += 1
            if self.reset(index, request_index):
                rst_close(conn)
                return
            body = b"hello"
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(body), body)
            )


def ping(port: int) -> bytes:
    """One fresh connection: send ``ping``, return the answer (raises on a reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT) as c:
        c.sendall(b"ping\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(64)
            if not chunk:
                break
            data += chunk
        return data
