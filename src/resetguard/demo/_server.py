"""The demo's misbehaving HTTP/1.1 server: every failure cause of the reset playbook, on demand.

Stdlib only, one thread per connection (bounded), loopback only. It counts what the
server really saw, so the demo can report duplicates and load from the server's side:

* ``idle_close`` — closes a kept-alive connection idle for longer than that (FIN, or RST
  with ``idle_rst``). ``lateness`` makes request bytes count as arriving that much later,
  as they would over a real network: a request sent just before the close loses the race
  (the keep-alive race that loopback alone almost never shows).
* ``rst_rate`` — RSTs that share of requests; half before executing them, half after
  (the reply is lost: the client cannot know whether a POST ran).
* ``down()`` / ``up()`` — a restart: the listener and every connection go away, new
  connections are refused, then it listens again on the same port.
* ``dead`` — a dead dependency behind a load balancer: accepts and RSTs every request,
  counting each attempt.
"""

from __future__ import annotations

import contextlib
import json
import random
import select
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["FlakyServer", "ServerStats"]

_LINGER_RST = struct.pack("ii", 1, 0)
_MAX_CONNECTIONS = 64
_MAX_REQUEST = 65536


@dataclass
class ServerStats:
    """What the server saw (mutated under the server's lock; read via ``snapshot()``)."""

    requests: int = 0
    executed: Counter[str] = field(default_factory=Counter)
    race_hits: int = 0
    rsts: int = 0
    idle_closes: int = 0
    dead_attempts: int = 0
    connections: int = 0

    def duplicates(self) -> int:
        """Requests (by X-Request-Id) the server executed more than once."""
        return sum(1 for n in self.executed.values() if n > 1)


class FlakyServer:
    """A loopback HTTP/1.1 server whose failure modes are switched at run time."""

    def __init__(
        self,
        *,
        idle_close: float | None = None,
        idle_rst: bool = False,
        lateness: float = 0.0,
        rst_rate: float = 0.0,
        seed: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.idle_close = idle_close
        self.idle_rst = idle_rst
        self.lateness = lateness
        self.rst_rate = rst_rate
        self.dead = False
        self.stats = ServerStats()
        self._host = host
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._keys: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._accepter: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FlakyServer:
        self._listen()
        return self

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self.port))
        sock.listen(128)
        sock.settimeout(0.05)
        self.port = sock.getsockname()[1]
        self._listener = sock
        thread = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True)
        thread.start()
        self._accepter = thread

    def down(self) -> None:
        """Stop listening and drop every connection (a crash or restart)."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
            accepter, self._accepter = self._accepter, None
        if listener is not None:
            listener.close()
        if accepter is not None and accepter is not threading.current_thread():
            # accept() holds the socket until its 50 ms timeout: only then is the port refused
            accepter.join(2.0)
        for conn in conns:
            _close(conn)

    def up(self) -> None:
        """Listen again on the same port."""
        if self._listener is None:
            self._listen()

    def stop(self) -> None:
        self._stop.set()
        self.down()
        for thread in self._threads:
            thread.join(2.0)

    def __enter__(self) -> FlakyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # ------------------------------------------------------------------ serving

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set() and self._listener is listener:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if len(self._conns) >= _MAX_CONNECTIONS:
                    _close(conn)
                    continue
                self._conns.add(conn)
                self.stats.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while not self._stop.is_set():
                request, buffer, late = self._read_request(conn, buffer)
                if request is None:
                    return
                if late:
                    # The request "arrives" after our idle close: it loses the race.
                    with self._lock:
                        self.stats.race_hits += 1
                        self.stats.idle_closes += 1
                    self._close_idle(conn)
                    return
                if not self._answer(conn, request):
                    return
        except OSError:
            return  # the client went away, or down() closed the socket under us
        finally:
            with self._lock:
                self._conns.discard(conn)
            _close(conn)

    def _read_request(self, conn: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes, bool]:
        """Read one request head+body. Returns (request, rest, arrived_too_late)."""
        idle_start = time.monotonic()
        while b"\r\n\r\n" not in buffer:
            remaining = None
            if self.idle_close is not None and not buffer:
                remaining = idle_start + self.idle_close - time.monotonic()
                if remaining <= 0:
                    with self._lock:
                        self.stats.idle_closes += 1
                    self._close_idle(conn)
                    return None, buffer, False
            # Wake up at least every 100 ms so stop() is noticed promptly.
            timeout = 0.1 if remaining is None else min(0.1, remaining)
            readable, _, _ = select.select([conn], [], [], timeout)
            if not readable:
                if self._stop.is_set():
                    return None, buffer, False
                continue
            if (
                not buffer
                and self.idle_close is not None
                and time.monotonic() + self.lateness > idle_start + self.idle_close
            ):
                try:
                    peek = conn.recv(1, socket.MSG_PEEK)
                except OSError:
                    peek = b""
                # Bytes in the race window lose the race; an EOF is the client closing its
                # own connection in time, which is no request at all.
                return (b"", buffer, True) if peek else (None, buffer, False)
            chunk = conn.recv(65536)
            if not chunk:
                return None, buffer, False
            buffer += chunk
            if len(buffer) > _MAX_REQUEST:
                return None, buffer, False
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or b"0")
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None, rest, False
            rest += chunk
        return head + b"\r\n\r\n" + rest[:length], rest[length:], False

    def _answer(self, conn: socket.socket, request: bytes) -> bool:
        head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        method, path = ([*lines[0].split(" "), "", ""])[:2]
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        with self._lock:
            self.stats.requests += 1
            if self.dead:
                self.stats.dead_attempts += 1
        if self.dead:
            self._rst(conn)
            return False
        roll = self._random.random()
        if roll < self.rst_rate / 2:  # reset before executing
            self._rst(conn)
            return False
        request_id = headers.get("x-request-id", "")
        key = headers.get("idempotency-key", "")
        if method == "POST":
            with self._lock:
                # A real API stores Idempotency-Key results: a replay is answered, not re-run.
                if not key or key not in self._keys:
                    self.stats.executed[request_id] += 1
                if key:
                    self._keys.add(key)
        if roll < self.rst_rate:  # executed, then the reply is lost
            self._rst(conn)
            return False
        body = json.dumps({"path": path, "method": method}).encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return headers.get("connection", "").lower() != "close"

    def _rst(self, conn: socket.socket) -> None:
        with self._lock:
            self.stats.rsts += 1
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        _close(conn)

    def _close_idle(self, conn: socket.socket) -> None:
        if self.idle_rst:
            self._rst(conn)
        else:
            _close(conn)


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.close()
