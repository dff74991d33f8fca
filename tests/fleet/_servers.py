"""Real loopback dependencies for the fleet tests: a server that resets every connection,
and one that answers after a delay (the half-open probe's target)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import TypeVar

S = TypeVar("S", bound="_Server")


class _Server:
    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self.accepted: list[float] = []  # time.time() of each accepted connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self: S) -> S:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(time.time())
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError


class ResetServer(_Server):
    """Accepts, then closes with SO_LINGER 0: the client's read gets ECONNRESET."""

    def handle(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


class SlowServer(_Server):
    """Answers ``ok``, the first connection only after ``hold`` seconds (each connection
    in its own thread); records when each answer was sent."""

    def __init__(self, hold: float) -> None:
        super().__init__()
        self.hold = hold
        self.answered: list[float] = []

    def handle(self, conn: socket.socket) -> None:
        delay = self.hold if len(self.accepted) == 1 else 0.0
        threading.Thread(target=self._answer, args=(conn, delay), daemon=True).start()

    def _answer(self, conn: socket.socket, delay: float) -> None:
        with conn:
            time.sleep(delay)
            try:
                conn.sendall(b"ok")
            except OSError:
                return
            self.answered.append(time.time())


def request(port: int, timeout: float = 5.0) -> bytes:
    """Connect to 127.0.0.1:port and read the answer (raises the connection's error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        data = sock.recv(16)
    if not data:
        raise ConnectionResetError(104, "connection closed before any answer")
    return data
