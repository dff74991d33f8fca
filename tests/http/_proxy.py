"""A small real HTTP forward proxy on loopback, for tests: absolute-URI requests and CONNECT.

Each absolute-URI request is forwarded on a new upstream connection and answered with
``Connection: close`` (one request per client connection keeps the counts exact).
``rst_first`` resets the client connection of the first N requests after reading them,
without forwarding them: the upstream server never sees those attempts.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

__all__ = ["ForwardProxy"]

_LINGER_RST = struct.pack("ii", 1, 0)
_TIMEOUT = 5.0


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 20:
            return None
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _headers(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        k, _, v = line.partition(":")
        out[k.strip().lower()] = v.strip()
    return out


def _read_body(sock: socket.socket, rest: bytes, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            more = sock.recv(65536)
            if not more:
                break
            rest += more
        return rest
    length = int(headers.get("content-length", "0") or 0)
    while len(rest) < length:
        more = sock.recv(65536)
        if not more:
            break
        rest += more
    return rest[:length]


class ForwardProxy:
    """``with ForwardProxy() as proxy:`` ... ``proxy.url``, ``proxy.requests``."""

    def __init__(self, *, rst_first: int = 0) -> None:
        self.rst_first = rst_first
        #: every request seen, as "METHOD target" (reset ones included)
        self.requests: list[str] = []
        self.resets = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ForwardProxy:
        listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept, listener)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        for t in self._threads:
            t.join(timeout=_TIMEOUT + 1)
        alive = [t for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"{len(alive)} proxy threads did not stop")

    def count(self, text: str) -> int:
        """How many requests seen contain ``text`` (e.g. a path)."""
        with self._lock:
            return sum(1 for r in self.requests if text in r)

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, sock)

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(_TIMEOUT)
        try:
            got = _read_head(client)
            if got is None:
                return
            head, rest = got
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = _headers(lines[1:])
            with self._lock:
                self.requests.append(f"{method} {target}")
                reset = self.resets < self.rst_first
                if reset:
                    self.resets += 1
            if method == "CONNECT":
                self._tunnel(client, target, reset)
                return
            body = _read_body(client, rest, headers)
            if reset:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                return
            self._forward(client, method, target, version, lines[1:], body)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _forward(
        self,
        client: socket.socket,
        method: str,
        target: str,
        version: str,
        header_lines: list[str],
        body: bytes,
    ) -> None:
        url = urlsplit(target)
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        keep = [
            line
            for line in header_lines
            if line.partition(":")[0].strip().lower() not in ("proxy-connection", "connection")
        ]
        request = "\r\n".join([f"{method} {path} {version}", *keep, "Connection: close", "", ""])
        with socket.create_connection((url.hostname, url.port or 80), timeout=_TIMEOUT) as up:
            up.sendall(request.encode("latin-1") + body)
            got = _read_head(up)
            if got is None:
                return
            head, rest = got
            lines = head.decode("latin-1").split("\r\n")
            response_body = _read_body(up, rest, _headers(lines[1:]))
        keep = [ln for ln in lines[1:] if ln.partition(":")[0].strip().lower() != "connection"]
        out = "\r\n".join([lines[0], *keep, "Connection: close", "", ""])
        client.sendall(out.encode("latin-1") + response_body)

    def _tunnel(self, client: socket.socket, target: str, reset: bool) -> None:
        if reset:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            return
        host, _, port = target.rpartition(":")
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_TIMEOUT) as up:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            end = time.monotonic() + 30
            while not self._stop.is_set() and time.monotonic() < end:
                readable, _, _ = select.select([client, up], [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (up if sock is client else client).sendall(data)
