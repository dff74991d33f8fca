"""The proxy engine: listening sockets, connections and the byte pumps between them.

Everything here runs on one event loop thread and is driven by plain reader/writer
callbacks (``loop.add_reader`` / ``add_writer``) on non-blocking sockets: no task, no
coroutine and no buffer is kept per idle connection, which keeps an idle connection
at a few hundred bytes of Python objects.

Each connection has two links, ``upstream`` (client -> server) and ``downstream``
(server -> client). A link with no toxic moves bytes with ``os.splice`` through a pipe
borrowed from a small pool (Linux), so the bytes never enter Python; a link with toxics
reads chunks and pushes them down its chain of stages (:mod:`._stages`), whose last
element is the link itself writing to the destination socket. Toxics can be added to
and removed from open connections; a link switches between the two modes without
reordering bytes.

Flow control: a link stops reading its source while its pipe holds bytes the
destination did not take, or while more than ``HIGH_WATER`` bytes it read are still in
its stages or write buffer; it resumes below ``LOW_WATER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import random as _random
import socket
import struct
import sys
from collections import deque
from typing import Any

from .._exceptions import ResetGuardError
from ._stages import Stage, make_stage
from ._toxics import Down, Toxic

__all__ = ["Engine", "Proxy", "ProxyError", "format_address", "parse_address"]

_log = logging.getLogger("resetguard.proxy")

SPLICE = sys.platform == "linux" and hasattr(os, "splice")
_SPLICE_FLAGS = (os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK) if SPLICE else 0
_splice: Any = getattr(os, "splice", None)  # bound once: called for every chunk
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux); named in fcntl only from Python 3.10 on Linux
PIPE_SIZE = 1 << 20  # bytes per splice pipe (Linux's default limit for unprivileged users):
# measured against 64 KiB and 256 KiB pipes, it moves the most per system call (bulk, 4 conns)
RECV_SIZE = 1 << 16  # bytes per read on a link with toxics
HIGH_WATER = 1 << 20  # bytes held in a link's stages + write buffer before it stops reading
LOW_WATER = 1 << 18  # ... and resumes reading below this
_SPLICE_ROUNDS = 8  # reads per readiness event while the source keeps filling the pipe
_ACCEPTS_PER_EVENT = 64
_ACCEPT_PAUSE = 0.1  # seconds to stop accepting after EMFILE/ENFILE/ENOBUFS
_RESET_DRAIN_TIMEOUT = 1.0  # seconds reset_at waits for the peer to take the last bytes
_LINGER_RST = struct.pack("ii", 1, 0)
_SIOCOUTQ = 0x5411  # TIOCOUTQ: bytes not yet acknowledged by the peer


class ProxyError(ResetGuardError):
    """A proxy operation failed; ``status`` is the matching Toxiproxy HTTP status
    (400 bad input, 404 not found, 409 name taken, 500 e.g. the port is in use)."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status
        self.populated: list[Proxy] = []  # what a failed populate() did before failing


def parse_address(text: str, *, what: str = "address") -> tuple[str, int]:
    """Split ``HOST:PORT`` or ``[IPV6]:PORT`` into ``(host, port)``; raise ValueError."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{what} must be HOST:PORT, got {text!r}")
    if text.startswith("["):
        host, sep, port_s = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{what} must be [IPV6]:PORT, got {text!r}")
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{what} must be HOST:PORT (IPv6 as [::1]:PORT), got {text!r}")
    if not host:
        raise ValueError(f"{what} {text!r} has no host (use 127.0.0.1:PORT or [::]:PORT)")
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"{what} {text!r}: port must be a number from 0 to 65535")
    return host, int(port_s)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _PipePool:
    """Spare splice pipes. A link borrows one while bytes are in flight and gives it
    back as soon as it is empty, so idle connections hold no pipe."""

    def __init__(self, keep: int = 32) -> None:
        self.free: list[tuple[int, int]] = []
        self._keep = keep

    def get(self) -> tuple[int, int]:
        return self.free.pop() if self.free else self.new()

    @staticmethod
    def new() -> tuple[int, int]:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # pipe-max-size lowered: the pipe stays smaller
            fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
        return r, w

    def put(self, pipe: tuple[int, int]) -> None:
        if len(self.free) < self._keep:
            self.free.append(pipe)
        else:
            self.discard(pipe)

    @staticmethod
    def discard(pipe: tuple[int, int]) -> None:
        os.close(pipe[0])
        os.close(pipe[1])

    def close(self) -> None:
        while self.free:
            self.discard(self.free.pop())


class Engine:
    """The proxies of one event loop, with what they share: the pipe pool and randomness.

    Its methods are the operations of Toxiproxy's API (create, update, remove, populate,
    reset); they run on the loop thread and raise :class:`ProxyError` with the status.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, rnd: _random.Random | None = None) -> None:
        self.loop = loop
        self.random = rnd if rnd is not None else _random.Random()
        self.pipes = _PipePool() if SPLICE else None
        self.proxies: dict[str, Proxy] = {}
        self._serial = 0

    def close(self) -> None:
        for proxy in list(self.proxies.values()):
            proxy.stop()
        self.proxies.clear()
        if self.pipes is not None:
            self.pipes.close()

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ProxyError("proxy not found", 404)
        return proxy

    def create(
        self,
        name: str | None,
        listen: str,
        upstream: str,
        *,
        enabled: bool = True,
        toxics: tuple[Toxic, ...] = (),
    ) -> Proxy:
        if not name:
            self._serial += 1
            name = f"proxy{self._serial}"
            while name in self.proxies:
                self._serial += 1
                name = f"proxy{self._serial}"
        if name in self.proxies:
            raise ProxyError("proxy already exists", 409)
        listen = listen or "127.0.0.1:0"
        for what, text in (("listen", listen), ("upstream", upstream)):
            try:
                parse_address(text, what=what)
            except ValueError as exc:
                raise ProxyError(str(exc), 400) from None
        proxy = Proxy(self, name, listen, upstream)
        for toxic in toxics:
            proxy.add_toxic(toxic)
        if enabled:
            proxy.start()
        self.proxies[name] = proxy
        return proxy

    def update(
        self,
        name: str,
        *,
        listen: str | None = None,
        upstream: str | None = None,
        enabled: bool | None = None,
    ) -> Proxy:
        """Change a proxy's fields; a new listen or upstream restarts it (drops connections)."""
        proxy = self.get(name)
        new_listen = proxy.listen if listen is None else listen
        new_upstream = proxy.upstream if upstream is None else upstream
        for what, text in (("listen", new_listen), ("upstream", new_upstream)):
            try:
                parse_address(text, what=what)
            except ValueError as exc:
                raise ProxyError(str(exc), 400) from None
        if _norm(new_listen) != _norm(proxy.listen) or new_upstream != proxy.upstream:
            was_enabled = proxy.enabled
            proxy.stop()
            proxy.listen = new_listen
            proxy.upstream = new_upstream
            if was_enabled and enabled is None:
                proxy.start()
        if enabled is True:
            proxy.start()
        elif enabled is False:
            proxy.stop()
        return proxy

    def remove(self, name: str) -> None:
        self.get(name).stop()
        del self.proxies[name]

    def reset(self) -> None:
        """Enable every proxy and remove every toxic (Toxiproxy's ``POST /reset``)."""
        for proxy in list(self.proxies.values()):
            proxy.clear_toxics()
            proxy.start()

    def populate(self, entries: list[dict[str, Any]]) -> list[Proxy]:
        """Create or replace proxies; one whose listen and upstream are unchanged is kept.

        ``entries`` are checked by the caller (``name``, ``upstream`` present). An entry
        with ``toxics`` also replaces that proxy's toxics.
        """
        done: list[Proxy] = []
        try:
            for entry in entries:
                name = entry["name"]
                listen = entry.get("listen") or "127.0.0.1:0"
                enabled = entry.get("enabled", True)
                toxics: tuple[Toxic, ...] | None = entry.get("toxics")
                existing = self.proxies.get(name)
                if existing is not None and not (
                    _norm(listen) == _norm(existing.listen)
                    and entry["upstream"] == existing.upstream
                ):
                    self.remove(name)
                    existing = None
                if existing is None:
                    done.append(
                        self.create(
                            name, listen, entry["upstream"], enabled=enabled, toxics=toxics or ()
                        )
                    )
                    continue
                if toxics is not None:
                    existing.clear_toxics()
                    for toxic in toxics:
                        existing.add_toxic(toxic)
                done.append(existing)
        except ProxyError as exc:
            exc.populated = done
            raise
        return done


def _norm(listen: str) -> str:
    try:
        host, port = parse_address(listen)
    except ValueError:
        return listen
    if host == "localhost":
        host = "127.0.0.1"
    return format_address(host, port)


class _Link:
    """One direction of one connection; also the sink at the end of its stage chain."""

    __slots__ = (
        "clock",
        "conn",
        "dfd",
        "dst",
        "ending",
        "eof_seen",
        "head",
        "inflight",
        "loop",
        "nin",
        "nout",
        "other",
        "pipe",
        "pipe_len",
        "pool",
        "random",
        "reading",
        "sfd",
        "shut",
        "src",
        "stages",
        "wbuf",
        "writing",
    )

    def __init__(self, conn: _Conn, src: socket.socket, dst: socket.socket) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.clock = conn.loop.time
        self.pool = conn.proxy.engine.pipes
        self.random = conn.proxy.engine.random
        self.src = src
        self.dst = dst
        self.sfd = src.fileno()
        self.dfd = dst.fileno()
        self.nin = 0  # bytes read from the source
        self.nout = 0  # bytes written to the destination
        self.stages: tuple[tuple[str, Stage], ...] = ()
        self.head: Stage | None = None
        self.wbuf: deque[bytes | memoryview] | None = None  # made when first needed
        self.inflight = 0
        self.pipe: tuple[int, int] | None = None
        self.pipe_len = 0
        self.reading = False
        self.writing = False
        self.eof_seen = False
        self.shut = False
        self.ending: str | None = None
        self.other: _Link = self

    # -- helpers for stages -------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def discard(self, n: int) -> None:
        self.inflight -= n
        self._maybe_resume()

    # -- registration ---------------------------------------------------------------------

    def start_reading(self) -> None:
        if not self.reading:
            self.reading = True
            self.loop.add_reader(self.sfd, self.on_readable)

    def stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.sfd)

    def _start_writing(self) -> None:
        if not self.writing:
            self.writing = True
            self.loop.add_writer(self.dfd, self.on_writable)

    def _stop_writing(self) -> None:
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.dfd)

    def _maybe_resume(self) -> None:
        if (
            not self.reading
            and not self.eof_seen
            and not self.pipe_len
            and self.inflight <= LOW_WATER
            and not self.conn.closed
        ):
            self.start_reading()

    # -- reading --------------------------------------------------------------------------

    def on_readable(self) -> None:
        """Readiness of the source. The splice path is written out flat: it runs for
        every chunk of every connection without toxics."""
        pool = self.pool
        if self.head is not None or pool is None:
            self._copy_in()
            return
        pipe = self.pipe
        if pipe is None:
            free = pool.free
            pipe = self.pipe = free.pop() if free else pool.new()
        sfd = self.sfd
        w = pipe[1]
        for _ in range(_SPLICE_ROUNDS):
            try:
                n = _splice(sfd, w, PIPE_SIZE, None, None, _SPLICE_FLAGS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.conn.abort(exc, self.src)
                return
            if n == 0:
                self._release_pipe()
                self._source_ended()
                return
            self.nin += n
            self.conn.last_activity = self.clock()
            if self.wbuf:  # older bytes are queued: these wait behind them
                self.pipe_len = n
                self.stop_reading()
                return
            try:
                m = _splice(pipe[0], self.dfd, n, None, None, _SPLICE_FLAGS)
            except (BlockingIOError, InterruptedError):
                m = 0
            except OSError as exc:
                self.pipe_len = n  # the pipe holds stale bytes: teardown must not reuse it
                self.conn.abort(exc, self.dst)
                return
            self.nout += m
            if m < n:
                self.pipe_len = n - m
                self.stop_reading()
                self._start_writing()
                return
            if n < PIPE_SIZE:
                break
        self.pipe = None
        pool.put(pipe)

    def _copy_in(self) -> None:
        try:
            data = self.src.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.conn.abort(exc, self.src)
            return
        conn = self.conn
        if not data:
            self._source_ended()
            return
        n = len(data)
        self.nin += n
        self.inflight += n
        if self.head is not None:
            self.head.feed(data)
        else:
            self.feed(data)
        conn.last_activity = self.clock()  # after the chain: idle_reset reads the old one
        if self.inflight > HIGH_WATER and not conn.closed:
            self.stop_reading()

    def _splice_out(self) -> bool:
        """Move the pipe's bytes to the destination; False if some are left (or error)."""
        assert self.pipe is not None
        r = self.pipe[0]
        while self.pipe_len:
            try:
                n = _splice(r, self.dfd, self.pipe_len, None, None, _SPLICE_FLAGS)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                self.conn.abort(exc, self.dst)
                return False
            self.pipe_len -= n
            self.nout += n
        return True

    def _release_pipe(self) -> None:
        pipe = self.pipe
        if pipe is not None and not self.pipe_len:
            self.pipe = None
            assert self.pool is not None
            self.pool.put(pipe)

    def _source_ended(self) -> None:
        self.eof_seen = True
        self.stop_reading()
        if self.head is not None:
            self.head.end("eof")
        else:
            self.end("eof")

    # -- sink: the end of the chain -----------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        if self.conn.closed:
            return
        if self.wbuf or self.pipe_len:
            self._queue(chunk)
            return
        try:
            n = self.dst.send(chunk)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self.conn.abort(exc, self.dst)
            return
        self.nout += n
        self.inflight -= n
        if n < len(chunk):
            self._queue(memoryview(chunk)[n:])
            self._start_writing()
        elif not self.reading:
            self._maybe_resume()  # a stage released held bytes: room to read again

    def _queue(self, chunk: bytes | memoryview) -> None:
        if self.wbuf is None:
            self.wbuf = deque()
        self.wbuf.append(chunk)

    def end(self, kind: str) -> None:
        if self.conn.closed:
            return
        if self.wbuf or self.pipe_len:
            self.ending = kind
            return
        self._finish(kind)

    def _finish(self, kind: str) -> None:
        conn = self.conn
        if kind == "eof":
            self.shut = True
            with contextlib.suppress(OSError):
                self.dst.shutdown(socket.SHUT_WR)
            if self.other.shut:
                first = "upstream" if self.other is conn.down else "client"
                conn.close(f"both sides sent FIN, {first} first")
        elif kind == "close":
            conn.close()
        else:
            conn.reset_when_sent(self.dst)

    def on_writable(self) -> None:
        wbuf = self.wbuf
        while wbuf:  # None or empty: nothing queued
            chunk = wbuf[0]
            try:
                n = self.dst.send(chunk)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.conn.abort(exc, self.dst)
                return
            self.nout += n
            self.inflight -= n
            if n < len(chunk):
                wbuf[0] = memoryview(chunk)[n:]
                return
            wbuf.popleft()
        if self.pipe_len:
            if not self._splice_out():
                return
            self._release_pipe()
        self._stop_writing()
        if self.ending is not None:
            kind, self.ending = self.ending, None
            self._finish(kind)
            return
        self._maybe_resume()

    # -- toxics ---------------------------------------------------------------------------

    def _relink(self) -> None:
        stages = self.stages
        for i, (_name, stage) in enumerate(stages):
            stage.nxt = stages[i + 1][1] if i + 1 < len(stages) else self
        self.head = stages[0][1] if stages else None

    def add_stage(self, name: str, stage: Stage) -> None:
        self.stages = (*self.stages, (name, stage))
        self._relink()
        stage.attach()

    def remove_stage(self, name: str) -> None:
        for i, (n, stage) in enumerate(self.stages):
            if n == name:
                self.stages = self.stages[:i] + self.stages[i + 1 :]
                stage.detach()  # hands held-back bytes to the stage after it
                self._relink()
                return

    def stage(self, name: str) -> Stage | None:
        for n, stage in self.stages:
            if n == name:
                return stage
        return None

    def teardown(self) -> None:
        self.stop_reading()
        self._stop_writing()
        for _name, stage in self.stages:
            stage.cancel()
        self.stages = ()
        self.head = None
        self.wbuf = None
        if self.pipe is not None:
            if self.pipe_len:
                _PipePool.discard(self.pipe)  # holds stale bytes: never reuse it
            else:
                assert self.pool is not None
                self.pool.put(self.pipe)
            self.pipe = None
            self.pipe_len = 0


class _ConnLog:
    """What the connection log needs about one connection; made only when it is on."""

    __slots__ = ("client", "serial", "started", "why")

    def __init__(self, serial: int, client: str, started: float) -> None:
        self.serial = serial
        self.client = client
        self.started = started
        self.why: str | None = None


def _peer(sock: socket.socket, *, local: bool = False) -> str:
    try:
        addr = sock.getsockname() if local else sock.getpeername()
    except OSError:
        return "?"
    return format_address(addr[0], addr[1])


class _Conn:
    """A client connection and its upstream connection."""

    __slots__ = (
        "addr_index",
        "client",
        "closed",
        "down",
        "last_activity",
        "log",
        "loop",
        "proxy",
        "up",
        "upstream",
    )

    def __init__(self, proxy: Proxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.loop = proxy.engine.loop
        self.client = client
        self.upstream: socket.socket | None = None
        self.up: _Link | None = None
        self.down: _Link | None = None
        self.closed = False
        self.addr_index = 0
        self.last_activity = self.loop.time()
        # Asked once per connection, so a proxy without -v pays nothing per chunk.
        self.log: _ConnLog | None = None
        if _log.isEnabledFor(logging.INFO):
            self.log = _ConnLog(proxy.connections_total, _peer(client), self.last_activity)

    def say(self, level: int, message: str, *args: object) -> None:
        assert self.log is not None
        _log.log(level, "%s #%d " + message, self.proxy.name, self.log.serial, *args)

    # -- connecting -----------------------------------------------------------------------

    def connect(self) -> None:
        addrs = self.proxy.upstream_addrs
        if self.addr_index >= len(addrs):
            _log.warning("proxy %s: cannot connect to %s", self.proxy.name, self.proxy.upstream)
            self.reset(f"cannot connect to upstream {self.proxy.upstream}")
            return
        family, sockaddr = addrs[self.addr_index]
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            _log.warning("proxy %s: cannot open upstream socket: %s", self.proxy.name, exc)
            self.reset(f"cannot open upstream socket: {exc}")
            return
        self.upstream = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(sockaddr)
        if err in (0, errno.EINPROGRESS):
            self.loop.add_writer(sock.fileno(), self._on_connected)
        else:
            self._connect_failed(err)

    def _on_connected(self) -> None:
        sock = self.upstream
        assert sock is not None
        self.loop.remove_writer(sock.fileno())
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._connect_failed(err)
            return
        if self.closed:  # pragma: no cover - closed while connecting
            return
        client = self.client
        self.up = up = _Link(self, client, sock)
        self.down = down = _Link(self, sock, client)
        up.other = down
        down.other = up
        self.last_activity = self.loop.time()
        proxy = self.proxy
        if self.log is not None:
            self.say(
                logging.INFO,
                "open: client %s -> %s -> upstream %s (from %s)",
                self.log.client,
                proxy.listen,
                _peer(sock),
                _peer(sock, local=True),
            )
        for toxic in proxy.chain_toxics():
            proxy.attach(self, toxic)
        if not self.closed:
            up.start_reading()
            down.start_reading()

    def _connect_failed(self, err: int) -> None:
        _log.debug(
            "proxy %s: connect to %s failed: %s",
            self.proxy.name,
            self.proxy.upstream,
            os.strerror(err),
        )
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self.addr_index += 1
        if self.closed:
            return
        self.connect()

    def link(self, stream: str) -> _Link | None:
        return self.up if stream == "upstream" else self.down

    # -- ending ---------------------------------------------------------------------------

    def close(self, why: str | None = None) -> None:
        """Orderly close of both sides (FIN)."""
        self._teardown(rst=False, kind="FIN", why=why)

    def reset(self, why: str | None = None) -> None:
        """Abortive close of both sides (RST via ``SO_LINGER`` 0)."""
        self._teardown(rst=True, kind="RST", why=why)

    def expire(self, why: str) -> None:
        """Orderly close of both sides because a timeout ran out."""
        self._teardown(rst=False, kind="timeout", why=why)

    def blame(self, why: str) -> None:
        """Record the cause of an end still on its way through the stages (for the log)."""
        log = self.log
        if log is not None and log.why is None:
            log.why = why

    def abort(self, exc: OSError, sock: socket.socket | None = None) -> None:
        """A socket error: the peer vanished. Pass it on as a reset to the other side."""
        _log.debug("proxy %s: connection aborted: %s", self.proxy.name, exc)
        side = "client" if sock is self.client else "upstream"
        self._teardown(rst=True, kind="RST", why=f"{side} socket error: {exc}")

    def reset_when_sent(self, sock: socket.socket) -> None:
        """Reset once ``sock``'s peer has acknowledged every byte (bounded wait)."""
        deadline = self.loop.time() + _RESET_DRAIN_TIMEOUT

        def check() -> None:
            if self.closed:
                return
            try:
                pending = struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0" * 4))[0]
            except OSError:
                pending = 0
            if pending and self.loop.time() < deadline:
                self.loop.call_later(0.001, check)
            else:
                self.reset()

        for link in (self.up, self.down):
            if link is not None:
                link.stop_reading()
        check()

    def _teardown(self, *, rst: bool, kind: str, why: str | None) -> None:
        if self.closed:
            return
        self.closed = True
        for link in (self.up, self.down):
            if link is not None:
                link.teardown()
        for sock, reader in ((self.client, self.up), (self.upstream, self.down)):
            if sock is None:
                continue
            if rst:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            elif reader is None or not reader.eof_seen:
                _drain(sock)
            if sock is self.upstream and self.up is None:
                # still connecting: the writer callback is registered
                self.loop.remove_writer(sock.fileno())
            sock.close()
        self.proxy.forget(self)
        if self.log is not None:
            self._log_end(kind, why or self.log.why or "no cause recorded")

    def _log_end(self, kind: str, why: str) -> None:
        assert self.log is not None
        up, down = self.up, self.down
        if up is None or down is None:
            self.say(logging.INFO, "end: %s (%s), client %s", kind, why, self.log.client)
            return
        self.say(
            logging.INFO,
            "end: %s (%s) after %.3f s; client->upstream %s, upstream->client %s",
            kind,
            why,
            self.loop.time() - self.log.started,
            _bytes(up),
            _bytes(down),
        )


def _bytes(link: _Link) -> str:
    if link.nin == link.nout:
        return f"{link.nout} B"
    return f"{link.nout} B (of {link.nin} B read)"


def _drain(sock: socket.socket) -> None:
    """Read and drop what the peer sent but nobody read, so that close() sends FIN, not RST."""
    for _ in range(16):
        try:
            if not sock.recv(RECV_SIZE):
                return
        except OSError:
            return


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
    )
    family, _type, proto, _canon, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Proxy:
    """One listening address forwarding to one upstream, with its toxics (loop thread only)."""

    def __init__(self, engine: Engine, name: str, listen: str, upstream: str) -> None:
        self.engine = engine
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: dict[str, Toxic] = {}
        self.upstream_addrs: list[tuple[int, Any]] = []
        self.conns: set[_Conn] = set()
        # [upstream, downstream] x [received, sent] of closed connections; open ones count
        # in their links, so the data path adds to one object, not two.
        self._closed_stats = [[0, 0], [0, 0]]
        self.connections_total = 0
        self.toxic_stats: dict[str, list[int]] = {}  # name -> [connections, bytes]
        self._lsock: socket.socket | None = None
        self._chains: tuple[list[Toxic], list[Toxic]] = ([], [])
        self._accept_timer: asyncio.TimerHandle | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Resolve the upstream and bind the listening socket (raises ProxyError)."""
        if self.enabled:
            return
        host, port = parse_address(self.upstream, what="upstream")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ProxyError(f"cannot resolve upstream {self.upstream}: {exc}", 500) from None
        self.upstream_addrs = [(fam, addr) for fam, _t, _p, _c, addr in infos]
        self._listen()
        self.enabled = True

    def _listen(self) -> None:
        host, port = parse_address(self.listen, what="listen")
        try:
            sock = _bind(host, port)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ProxyError(f"listen tcp {self.listen}: {reason}", 500) from None
        bound = sock.getsockname()
        self.listen = format_address(bound[0], bound[1])
        if self.is_down():
            sock.close()  # the port is now known; stay refusing until `down` goes
            return
        self._lsock = sock
        self.engine.loop.add_reader(sock.fileno(), self._on_accept)

    def _unlisten(self) -> None:
        if self._accept_timer is not None:
            self._accept_timer.cancel()
            self._accept_timer = None
        if self._lsock is not None:
            self.engine.loop.remove_reader(self._lsock.fileno())
            self._lsock.close()
            self._lsock = None

    def stop(self) -> None:
        """Stop listening and close every connection."""
        self._unlisten()
        self.enabled = False
        for conn in list(self.conns):
            conn.close("proxy stopped")

    def is_down(self) -> bool:
        return any(isinstance(t, Down) for t in self.toxics.values())

    # -- connections ---------------------------------------------------------------------------

    def _on_accept(self) -> None:
        lsock = self._lsock
        for _ in range(_ACCEPTS_PER_EVENT):
            if lsock is None:
                return
            try:
                sock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                _log.warning("proxy %s: accept failed: %s", self.name, exc)
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting()
                return
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - the client is already gone
                sock.close()
                continue
            self.connections_total += 1  # first: it numbers the connection in the log
            conn = _Conn(self, sock)
            self.conns.add(conn)
            conn.connect()

    def _pause_accepting(self) -> None:
        lsock = self._lsock
        if lsock is None or self._accept_timer is not None:
            return
        self.engine.loop.remove_reader(lsock.fileno())

        def resume() -> None:
            self._accept_timer = None
            if self._lsock is not None:
                self.engine.loop.add_reader(self._lsock.fileno(), self._on_accept)

        self._accept_timer = self.engine.loop.call_later(_ACCEPT_PAUSE, resume)

    def forget(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        closed = self._closed_stats
        for i, link in enumerate((conn.up, conn.down)):
            if link is not None:
                closed[i][0] += link.nin
                closed[i][1] += link.nout

    @property
    def stats(self) -> list[list[int]]:
        """Bytes ``[[upstream received, sent], [downstream received, sent]]`` so far."""
        out = [list(self._closed_stats[0]), list(self._closed_stats[1])]
        for conn in self.conns:
            for i, link in enumerate((conn.up, conn.down)):
                if link is not None:
                    out[i][0] += link.nin
                    out[i][1] += link.nout
        return out

    def close_connections(self, *, rst: bool = False) -> int:
        conns = list(self.conns)
        for conn in conns:
            if rst:
                conn.reset("reset_connections() called")
            else:
                conn.close("close_connections() called")
        return len(conns)

    # -- toxics ------------------------------------------------------------------------------

    def chain_toxics(self) -> list[Toxic]:
        return [*self._chains[0], *self._chains[1]]

    def _rebuild_chains(self) -> None:
        up: list[Toxic] = []
        down: list[Toxic] = []
        for toxic in self.toxics.values():
            if toxic.byte_level:
                (up if toxic.stream == "upstream" else down).append(toxic)
        self._chains = (up, down)

    def attach(self, conn: _Conn, toxic: Toxic) -> None:
        """Roll the toxic's toxicity for ``conn`` and put its stage on the link if it hits."""
        link = conn.link(toxic.stream)
        if link is None or conn.closed:
            return
        if toxic.toxicity < 1.0 and not self.engine.random.random() < toxic.toxicity:
            if conn.log is not None:
                conn.say(
                    logging.DEBUG, "toxic %s: missed (toxicity %g)", toxic.name, toxic.toxicity
                )
            return
        counter = self.toxic_stats[toxic.name]
        counter[0] += 1
        if conn.log is not None:
            conn.say(logging.INFO, "toxic %s acts on it: %s", toxic.name, toxic.to_spec())
        link.add_stage(toxic.name, make_stage(toxic, link, counter))

    def add_toxic(self, toxic: Toxic) -> Toxic:
        if toxic.name in self.toxics:
            raise ProxyError("toxic already exists", 409)
        self.toxics[toxic.name] = toxic
        self.toxic_stats[toxic.name] = [0, 0]
        self._rebuild_chains()
        if isinstance(toxic, Down):
            self._unlisten()
            return toxic
        for conn in list(self.conns):
            self.attach(conn, toxic)
        return toxic

    def update_toxic(self, toxic: Toxic) -> Toxic:
        old = self.toxics.get(toxic.name)
        if old is None:
            raise ProxyError("toxic not found", 404)
        self.toxics[toxic.name] = toxic
        self._rebuild_chains()
        if not toxic.byte_level:
            return toxic
        for conn in list(self.conns):
            link = conn.link(toxic.stream)
            if link is None:
                continue
            stage = link.stage(toxic.name)
            if toxic.toxicity != old.toxicity:  # roll again, as Toxiproxy does
                if stage is not None:
                    link.remove_stage(toxic.name)
                self.attach(conn, toxic)
            elif stage is not None:
                stage.spec = toxic
        return toxic

    def remove_toxic(self, name: str) -> None:
        toxic = self.toxics.pop(name, None)
        if toxic is None:
            raise ProxyError("toxic not found", 404)
        self.toxic_stats.pop(name, None)
        self._rebuild_chains()
        if isinstance(toxic, Down):
            if self.enabled and not self.is_down() and self._lsock is None:
                self._listen()
            return
        for conn in list(self.conns):
            link = conn.link(toxic.stream)
            if link is not None:
                link.remove_stage(name)

    def clear_toxics(self) -> None:
        for name in list(self.toxics):
            self.remove_toxic(name)

    # -- views -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics.values()],
        }
