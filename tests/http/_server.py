"""A raw-socket HTTP/1.1 loopback server with faults on demand, for tests and benchmarks.

Every request carrying ``X-Req-Id`` is counted (``executions[id]``, its body kept in
``bodies[id]``) when the server
*executes* it, i.e. when the handler runs; faults that happen before that (the idle close)
leave it uncounted, faults after it (an RST instead of the response) do not undo it.

Routes (query parameters in brackets):
  /ok                           200 "ok"
  /echo                         200 with the request body's length
  /slow [ms]                    sleeps, then 200
  /status [code, retry_after, times]   ``code`` for the first ``times`` executions of an id
  /midbody [times]              headers + 1000 of 100 000 bytes, then RST (first ``times``)
  /rst [times]                  executes, then RST without a response (first ``times``)
  /big [size]                   200 with ``size`` bytes
  /redirect [to, code]          ``code`` (307) to ``to`` (/ok)
  anything else                 200 "{}"

Server-wide faults: ``idle_close`` (close a keep-alive connection idle that long, by FIN or
by RST with ``idle_rst``), ``read_delay`` (requests are seen that much later: the race),
``rst_rate`` (RST that fraction of requests after executing them, seeded).
"""

from __future__ import annotations

import collections
import contextlib
import random
import select
import socket
import struct
import threading
import time
from urllib.parse import parse_qs, urlsplit

__all__ = ["FaultServer"]

_LINGER_RST = struct.pack("ii", 1, 0)


def _rst(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


def _fin(sock: socket.socket, wait: float = 1.0) -> None:
    """Close with a FIN even with unread bytes pending (a plain close would RST)."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.05)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                if not sock.recv(65536):
                    break
            except TimeoutError:
                continue
    except OSError:
        pass
    sock.close()


class FaultServer:
    def __init__(
        self,
        *,
        idle_close: float | None = None,
        idle_rst: bool = False,
        read_delay: float = 0.0,
        rst_rate: float = 0.0,
        keep_alive_header: str | None = None,
        seed: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.idle_close = idle_close
        self.idle_rst = idle_rst
        self.read_delay = read_delay
        self.rst_rate = rst_rate
        self.keep_alive_header = keep_alive_header
        self.host = host
        self.port = port
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.executions: collections.Counter[str] = collections.Counter()
        self.methods: dict[str, str] = {}
        #: the body of every execution of a request with ``X-Req-Id``, in order
        self.bodies: collections.defaultdict[str, list[bytes]] = collections.defaultdict(list)
        self.race_hits = 0
        self.idle_closes = 0
        self.connections = 0
        self.requests = 0
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._socks: set[socket.socket] = set()
        self._local = threading.local()  # per connection thread: is this a HEAD request

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> FaultServer:
        self._stop.clear()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.create_server((self.host, self.port), family=family, backlog=64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        t = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self, *, rst: bool = True) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            socks = list(self._socks)
            self._socks.clear()
        for s in socks:
            if rst:
                _rst(s)
            else:
                self._shutdown(s)
                s.close()
        for t in self._threads:
            t.join(timeout=5)
        alive = [t for t in self._threads if t.is_alive()]
        self._threads = []
        if alive:
            raise RuntimeError(f"{len(alive)} server threads did not stop")

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def restart(self, downtime: float) -> None:
        """Stop (resetting every connection), stay down ``downtime`` s, listen again."""
        self.stop(rst=True)
        time.sleep(downtime)
        self.start()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ counters

    def duplicates(self, method: str = "POST") -> int:
        with self._lock:
            return sum(
                1 for k, n in self.executions.items() if n > 1 and self.methods.get(k) == method
            )

    # ------------------------------------------------------------------ serving

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                # stop() sets the flag before it takes the sockets under this lock: one
                # accepted after that is reset here, never left open with nobody serving it
                stopping = self._stop.is_set()
                if not stopping:
                    self.connections += 1
                    self._socks.add(sock)
            if stopping:
                _rst(sock)
                return
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            t.start()
            self._threads.append(t)

    def _close(self, sock: socket.socket, *, rst: bool) -> None:
        with self._lock:
            if sock not in self._socks:
                return  # stop() owns it
            self._socks.discard(sock)
        if rst:
            _rst(sock)
        else:
            _fin(sock)

    def _serve(self, sock: socket.socket) -> None:
        buf = b""
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                if b"\r\n\r\n" not in buf:
                    if not self._wait_request(sock, last, bool(buf)):
                        return
                    chunk = sock.recv(65536)
                    if not chunk:
                        self._close(sock, rst=False)
                        return
                    buf += chunk
                    continue
                head, _, rest = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                chunked = headers.get("transfer-encoding", "").lower() == "chunked"
                body, buf = self._read_body(sock, rest, length, chunked)
                if body is None:
                    return
                keep = self._handle(sock, method, target, headers, body)
                if not keep:
                    return
                last = time.monotonic()
        except OSError:
            with self._lock:
                self._socks.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _wait_request(self, sock: socket.socket, last: float, partial: bool) -> bool:
        """Wait for request bytes; apply the idle close. False when the connection is gone."""
        while not self._stop.is_set():
            now = time.monotonic()
            if self.idle_close is not None and not partial:
                left = last + self.idle_close - now
                if left <= 0:
                    with self._lock:
                        self.idle_closes += 1
                    self._close(sock, rst=self.idle_rst)
                    return False
                timeout = min(left, 0.05)
            else:
                timeout = 0.05
            try:
                readable, _, _ = select.select([sock], [], [], timeout)
            except (OSError, ValueError):
                return False
            if not readable:
                continue
            try:
                peeked = sock.recv(1, socket.MSG_PEEK)
            except OSError:
                return False
            if not peeked:
                return True  # the client closed: the caller reads the EOF
            if (
                self.idle_close is not None
                and not partial
                and self.read_delay > 0
                and time.monotonic() + self.read_delay - last > self.idle_close
            ):
                # The request is "still in flight" when the idle timer fires: the race.
                fire = last + self.idle_close - time.monotonic()
                if fire > 0:
                    time.sleep(fire)
                with self._lock:
                    self.race_hits += 1
                self._close(sock, rst=self.idle_rst)
                return False
            return True
        return False

    def _read_body(
        self, sock: socket.socket, rest: bytes, length: int, chunked: bool
    ) -> tuple[bytes | None, bytes]:
        sock.settimeout(5)
        try:
            if chunked:
                # Chunk by chunk: waiting for the data to end in "0\r\n\r\n" stopped early
                # when a read ended inside a chunk that ends so (a form part's headers,
                # "Content-Length: 100\r\n\r\n"), and the parse then failed.
                data, body = rest, b""
                while True:
                    size_line, found, tail = data.partition(b"\r\n")
                    if found:
                        size = int(size_line.split(b";")[0], 16)
                        if len(tail) >= size + 2:
                            if size == 0:
                                return body, tail[2:]
                            body += tail[:size]
                            data = tail[size + 2 :]
                            continue
                    more = sock.recv(65536)
                    if not more:
                        self._close(sock, rst=False)
                        return None, b""
                    data += more
            while len(rest) < length:
                more = sock.recv(65536)
                if not more:
                    self._close(sock, rst=False)
                    return None, b""
                rest += more
            return rest[:length], rest[length:]
        finally:
            sock.settimeout(None)

    def _count(self, key: str, method: str) -> int:
        with self._lock:
            self.requests += 1
            if not key:
                return 1
            self.executions[key] += 1
            self.methods[key] = method
            return self.executions[key]

    def _send(self, sock: socket.socket, status: int, body: bytes, extra: str = "") -> None:
        reason = {
            200: "OK",
            307: "Temporary Redirect",
            429: "Too Many Requests",
            503: "Service Unavailable",
        }.get(status, "X")
        ka = f"Keep-Alive: {self.keep_alive_header}\r\n" if self.keep_alive_header else ""
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: text/plain\r\n{ka}{extra}\r\n"
        )
        # a HEAD response has the headers of the GET response and no body
        sock.sendall(head.encode() + (b"" if getattr(self._local, "head", False) else body))

    def _handle(
        self, sock: socket.socket, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> bool:
        self._local.head = method == "HEAD"
        url = urlsplit(target)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        n = self._count(headers.get("x-req-id", ""), method)
        if headers.get("x-req-id"):
            with self._lock:
                self.bodies[headers["x-req-id"]].append(body)
        times = int(q.get("times", "1"))
        if self.rst_rate:
            with self._lock:
                hit = self._random.random() < self.rst_rate
            if hit:
                self._close(sock, rst=True)
                return False
        path = url.path
        if path == "/ok":
            self._send(sock, 200, b"ok")
        elif path == "/echo":
            self._send(sock, 200, str(len(body)).encode())
        elif path == "/slow":
            time.sleep(int(q.get("ms", "100")) / 1000)
            self._send(sock, 200, b"slow")
        elif path == "/status":
            if n <= times:
                ra = q.get("retry_after")
                extra = f"Retry-After: {ra}\r\n" if ra is not None else ""
                self._send(sock, int(q.get("code", "503")), b"busy", extra)
            else:
                self._send(sock, 200, b"ok")
        elif path == "/midbody":
            if n <= times:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
                time.sleep(0.01)
                self._close(sock, rst=True)
                return False
            self._send(sock, 200, b"y" * 100000)
        elif path == "/rst":
            if n <= times:
                self._close(sock, rst=True)
                return False
            self._send(sock, 200, b"ok")
        elif path == "/redirect":
            location = q.get("to", "/ok")
            self._send(sock, int(q.get("code", "307")), b"", f"Location: {location}\r\n")
        elif path == "/big":
            self._send(sock, 200, b"z" * int(q.get("size", "100000")))
        else:  # any other path: a plain success, for the documentation examples
            self._send(sock, 200, b"{}")
        return headers.get("connection", "").lower() != "close"
