"""Loopback servers that fail on purpose, for producing real driver exceptions.

Everything here binds 127.0.0.1 only, runs on a background thread the caller stops (each
class is a context manager), and bounds every wait. Nothing is mocked: the clients under
test talk TCP to these servers, which send a TCP RST (``SO_LINGER`` on, timeout 0, then
close) or a FIN (plain close) at the moment a test chooses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
WAIT = 5.0  # upper bound for any wait on a helper; the tests use much shorter fault timings


def rst_close(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of a FIN (linger on, timeout 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_until(predicate: Callable[[], bool], *, timeout: float = WAIT, what: str = "") -> None:
    """Poll ``predicate`` every 20 ms until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


# --------------------------------------------------------------------------- event loop


class LoopThread:
    """An asyncio loop running on its own thread, so background callbacks (a driver's
    ``connection_lost``) keep running while a test waits, as they would in an app."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rg-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def _cancel_rest() -> None:
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):
            self.run(_cancel_rest(), timeout=WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- TCP proxy


class _Pair:
    __slots__ = ("client", "drop_replies", "last_activity", "upstream")

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.last_activity = time.monotonic()
        self.drop_replies = False


class FaultProxy:
    """An asyncio TCP proxy on loopback that can reset its client connections.

    * :meth:`reset_all` sends a TCP RST to every client connection (``SO_LINGER(1, 0)``
      then abort) and closes the upstream side normally, like the research's ``RstProxy``.
    * ``idle_close=T`` closes (FIN, both sides) any connection idle for more than ``T``
      seconds: a server-side idle timeout on demand.
    * :meth:`arm_reply_loss` drops the next reply from upstream, then RSTs that client
      connection ``rst_after`` seconds later: "the server executed it, the reply was lost".
    """

    def __init__(self, upstream: tuple[str, int], *, idle_close: float | None = None) -> None:
        self.upstream = upstream
        self.idle_close = idle_close
        self.pairs: list[_Pair] = []
        self.accepted = 0
        self._reply_loss_rst_after: float | None = None
        self._runner = LoopThread()
        self._server: asyncio.Server | None = None
        self.port = self._runner.run(self._start())

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        if self.idle_close is not None:
            self._reaper = asyncio.ensure_future(self._reap())
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            u_reader, u_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            c_writer.close()
            return
        pair = _Pair(c_writer, u_writer)
        self.pairs.append(pair)
        self.accepted += 1
        await asyncio.gather(
            self._pump(c_reader, u_writer, pair, upstream_bound=True),
            self._pump(u_reader, c_writer, pair, upstream_bound=False),
            return_exceptions=True,
        )

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: _Pair,
        *,
        upstream_bound: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                pair.last_activity = time.monotonic()
                if not upstream_bound and self._reply_loss_rst_after is not None:
                    pair.drop_replies = True
                    delay, self._reply_loss_rst_after = self._reply_loss_rst_after, None
                    asyncio.get_running_loop().call_later(delay, self._rst_pair, pair)
                if not upstream_bound and pair.drop_replies:
                    continue
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def _rst_pair(self, pair: _Pair) -> None:
        sock = pair.client.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        pair.client.transport.abort()
        pair.upstream.close()

    async def _reap(self) -> None:
        assert self.idle_close is not None
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            for pair in list(self.pairs):
                if now - pair.last_activity > self.idle_close and not pair.client.is_closing():
                    pair.client.close()
                    pair.upstream.close()

    async def _reset_all(self) -> int:
        live = [p for p in self.pairs if not p.client.is_closing()]
        for pair in live:
            self._rst_pair(pair)
        return len(live)

    def reset_all(self) -> int:
        """RST every open client connection; returns how many were reset."""
        return self._runner.run(self._reset_all())

    def arm_reply_loss(self, rst_after: float) -> None:
        """Drop the next upstream reply and RST its client connection ``rst_after`` s later."""

        async def _arm() -> None:
            self._reply_loss_rst_after = rst_after

        self._runner.run(_arm())

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in self.pairs:
            pair.client.close()
            pair.upstream.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._runner.run(self._close())
        self._runner.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- HTTP


BODY_SIZE = 100_000
BODY_SENT = 1000


def _read_http_request(rfile: Any) -> tuple[str, str, dict[str, str]] | None:
    """Read one request (head + Content-Length body) so a close sends FIN, not RST."""
    line = rfile.readline(65537)
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        h = rfile.readline(65537)
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length:
        rfile.read(length)
    return method, path, headers


def _ws_accept(key: str) -> str:
    magic = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    return base64.b64encode(hashlib.sha1(magic.encode()).digest()).decode()


class FaultHTTPServer:
    """A threaded HTTP/1.1 server on loopback whose paths fail on purpose.

    ``/ok`` and ``/ka`` answer 200 with keep-alive (``/ka`` then FINs the connection after
    0.1 s idle); ``/rst`` and ``/fin`` reset or close before any response byte;
    ``/rstbody`` and ``/finbody`` send the headers and 1000 of 100000 body bytes first;
    ``/404`` answers 404. WebSocket paths: ``/ws/rst`` and ``/ws/fin`` fail before the
    handshake response; ``/ws/rst-mid`` and ``/ws/fin-mid`` complete the handshake, send
    part of a text frame and then RST / FIN; ``/ws/fin-idle`` completes it and then FINs.
    ``seen`` lists ``conn<N>:<path>`` for every request read.
    """

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._conn_ids = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with outer._lock:
                    outer._conn_ids += 1
                    conn_id = outer._conn_ids
                self.request.settimeout(WAIT)
                try:
                    while outer._serve_one(self, conn_id):
                        pass
                except OSError:
                    pass

            def finish(self) -> None:
                with contextlib.suppress(OSError):
                    super().finish()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            block_on_close = False

        self._server = Server((LOOPBACK, 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _serve_one(self, h: socketserver.StreamRequestHandler, conn_id: int) -> bool:
        req = _read_http_request(h.rfile)
        if req is None:
            return False
        _method, path, headers = req
        with self._lock:
            self.seen.append(f"conn{conn_id}:{path}")
        sock: socket.socket = h.request
        if path.startswith("/ws/"):
            return self._serve_ws(h, path, headers)
        if path in ("/ok", "/ka"):
            h.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n"
                b"Connection: keep-alive\r\n\r\nok"
            )
            h.wfile.flush()
            if path == "/ka":
                # Idle keep-alive expiry: wait for a next request for 0.1 s, then FIN.
                sock.settimeout(0.1)
                try:
                    data = sock.recv(1, socket.MSG_PEEK)
                except TimeoutError:
                    sock.shutdown(socket.SHUT_RDWR)
                    return False
                finally:
                    sock.settimeout(WAIT)
                return bool(data)
            return True
        if path == "/404":
            h.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
            h.wfile.flush()
            return True
        if path in ("/rstbody", "/finbody"):
            h.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                + f"Content-Length: {BODY_SIZE}\r\n\r\n".encode()
                + b"x" * BODY_SENT
            )
            h.wfile.flush()
            time.sleep(0.05)  # let the client read the headers and the partial body
        if path in ("/rst", "/rstbody"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return False
        # /fin, /finbody and anything unknown: FIN without (the rest of) a response.
        sock.shutdown(socket.SHUT_RDWR)
        return False

    def _serve_ws(
        self, h: socketserver.StreamRequestHandler, path: str, headers: dict[str, str]
    ) -> bool:
        sock: socket.socket = h.request
        if path == "/ws/rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return False
        if path == "/ws/fin":
            sock.shutdown(socket.SHUT_RDWR)
            return False
        accept = _ws_accept(headers.get("sec-websocket-key", ""))
        h.wfile.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        h.wfile.flush()
        if path in ("/ws/rst-mid", "/ws/fin-mid"):
            # A text frame announcing 100 bytes, of which only 10 arrive.
            h.wfile.write(bytes([0x81, 100]) + b"x" * 10)
            h.wfile.flush()
        time.sleep(0.1)
        if path == "/ws/rst-mid":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        else:
            sock.shutdown(socket.SHUT_RDWR)
        return False

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(WAIT)

    def __enter__(self) -> FaultHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- raw listener


class RawListener:
    """A TCP listener that accepts and then fails every connection.

    ``mode`` is ``"rst"`` / ``"fin"`` (close without reading: RST / plain ``close()``) or
    ``"read-rst"`` / ``"read-fin"`` (after reading the client's first bytes, e.g. a MongoDB
    handshake: RST / FIN).
    """

    MODES = ("rst", "fin", "read-rst", "read-fin")

    def __init__(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.accepted = 0
        self._sock = socket.socket()
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.settimeout(1.0)
            if self.mode.startswith("read-"):
                with contextlib.suppress(OSError):
                    conn.recv(65536)
            else:
                # Let the client's first bytes arrive unread. A plain close() then makes
                # Linux answer with an RST even in "fin" mode: the research's accept-then-FIN
                # listener was seen as [Errno 104] by pymongo for this reason.
                time.sleep(0.05)
            if self.mode.endswith("rst"):
                rst_close(conn)
            elif self.mode == "read-fin":
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            else:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        self._sock.close()

    def __enter__(self) -> RawListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def gather_bounded(*aws: Awaitable[Any], timeout: float = WAIT) -> list[Any]:
    """``asyncio.gather`` with an overall timeout."""
    return await asyncio.wait_for(asyncio.gather(*aws), timeout)


# --------------------------------------------------------------------------- MongoDB wire


_OP_REPLY, _OP_QUERY, _OP_MSG = 1, 2004, 2013
_HANDSHAKE = frozenset({"hello", "ismaster", "isMaster", "endSessions"})


class FakeMongo:
    """Just enough of the MongoDB wire protocol (OP_QUERY handshake, OP_MSG commands) for
    pymongo to connect, with a per-command fault: there is no MongoDB server here.

    ``faults`` maps a command name to ``"hangup"`` (FIN, like mockupdb's ``hangup()``),
    ``"hangup-once"`` (FIN the first time, answer later ones) or ``"delay"`` (answer after
    0.3 s, so a proxy can reset the connection while the command is in flight).
    ``seen`` lists the application commands received (``"insert txnNumber=1"`` style with
    ``show_txn``). ``replica_set`` advertises a one-member replica set primary (retryable
    writes on); ``max_wire_version`` can be set below what pymongo supports.
    """

    def __init__(
        self,
        *,
        faults: dict[str, str] | None = None,
        replica_set: bool = False,
        max_wire_version: int = 21,
        show_txn: bool = False,
    ) -> None:
        import bson  # pymongo's; imported here so this module works without pymongo

        self._bson = bson
        self.faults = dict(faults or {})
        self.replica_set = replica_set
        self.max_wire_version = max_wire_version
        self.show_txn = show_txn
        self.seen: list[str] = []
        self._fired: set[str] = set()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._sock = socket.socket()
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(32)
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _hello(self) -> dict[str, Any]:
        import datetime

        doc: dict[str, Any] = {
            "ismaster": True,
            "isWritablePrimary": True,
            "helloOk": True,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": datetime.datetime.now(datetime.timezone.utc),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": self.max_wire_version,
            "readOnly": False,
            "ok": 1.0,
        }
        if self.replica_set:
            me = f"{LOOPBACK}:{self.port}"
            doc.update(
                setName="rs0",
                setVersion=1,
                hosts=[me],
                me=me,
                primary=me,
                electionId=self._bson.ObjectId("7fffffff0000000000000001"),
            )
        return doc

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _recv_exact(self, conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("client closed")
            buf += chunk
        return buf

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(WAIT)
        try:
            while not self._stop.is_set():
                header = self._recv_exact(conn, 16)
                length, request_id, _, op = struct.unpack("<iiii", header)
                body = self._recv_exact(conn, length - 16)
                if op == _OP_QUERY:
                    self._reply_query(conn, request_id, body)
                elif op == _OP_MSG:
                    if not self._reply_msg(conn, request_id, body):
                        return
                else:
                    return
        except (OSError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _reply_query(self, conn: socket.socket, request_id: int, body: bytes) -> None:
        # flags, fullCollectionName, skip, return, query: only the handshake uses OP_QUERY.
        payload = struct.pack("<iqii", 0, 0, 0, 1) + self._bson.encode(self._hello())
        conn.sendall(struct.pack("<iiii", 16 + len(payload), 0, request_id, _OP_REPLY) + payload)

    def _reply_msg(self, conn: socket.socket, request_id: int, body: bytes) -> bool:
        if body[4] != 0:
            return False
        doc = self._bson.decode(body[5 : 5 + struct.unpack("<i", body[5:9])[0]])
        name = next(iter(doc))
        if name in _HANDSHAKE:
            reply: dict[str, Any] = self._hello() if name != "endSessions" else {"ok": 1.0}
        else:
            label = f"{name} txnNumber={doc.get('txnNumber')}" if self.show_txn else name
            with self._lock:
                self.seen.append(label)
                fault = self.faults.get(name)
                first = name not in self._fired
                self._fired.add(name)
            if fault == "hangup" or (fault == "hangup-once" and first):
                conn.shutdown(socket.SHUT_RDWR)
                return False
            if fault == "delay" and first:
                time.sleep(0.3)
            reply = {"ok": 1.0}
            if name == "find":
                ns = f"{doc.get('$db', 'test')}.{doc[name]}"
                reply["cursor"] = {"id": self._bson.Int64(0), "ns": ns, "firstBatch": []}
            elif name == "insert":
                reply["n"] = 1
        payload = struct.pack("<IB", 0, 0) + self._bson.encode(reply)
        conn.sendall(struct.pack("<iiii", 16 + len(payload), 0, request_id, _OP_MSG) + payload)
        return True

    def arm(self, command: str, action: str) -> None:
        """Set the fault for ``command`` from now on (a ``-once`` fault fires again)."""
        with self._lock:
            self.faults[command] = action
            self._fired.discard(command)
            self.seen.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.close()

    def __enter__(self) -> FakeMongo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
