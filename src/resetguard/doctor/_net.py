"""Socket-level probes shared by every target kind (stdlib only).

The idle-close measurement is passive and takes one pass: after the last exchange the
socket is watched for readability until the limit. Readable + ``recv() == b''`` is a FIN;
``ECONNRESET`` from ``recv`` is an RST (Linux reports an RST on an idle socket that way).
Bytes before the close (a ``408`` page, PostgreSQL's ``57P05`` notice) are kept as a preview.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ._progress import NullProgress, Progress

__all__ = [
    "IdleWatch",
    "ProbeError",
    "WriteAfterClose",
    "connect",
    "describe_error",
    "printable",
    "resolve",
    "watch_fd",
    "watch_idle",
    "write_after_close",
]

Clock = Callable[[], float]
Address = tuple[int, tuple[object, ...]]  # (family, sockaddr)

# How often the waiting loop wakes up to update the progress display.
_TICK_S = 0.25
# Cap on bytes read while waiting for the close after the server started talking.
_GOODBYE_CAP = 64 * 1024


class ProbeError(Exception):
    """A step failed in a way that ends the probe (DNS, connect, TLS without fallback...).

    ``step`` names the step: ``dns``, ``connect``, ``tls``, ``http``, ``driver``, ``auth``...
    """

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


def describe_error(exc: BaseException) -> str:
    """``ECONNREFUSED (Connection refused)``-style text for an OSError, else the class+message."""
    if isinstance(exc, socket.gaierror):
        return f"{exc.strerror or exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name} ({exc.strerror or os.strerror(exc.errno)})"
    return f"{type(exc).__name__}: {exc}"


def printable(data: bytes, limit: int = 160) -> str:
    """A one-line, printable preview of ``data`` (non-printables become ``.``)."""
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in data[:limit])
    return text + ("..." if len(data) > limit else "")


def resolve(host: str, port: int, timeout: float) -> list[Address]:
    """``getaddrinfo`` bounded by ``timeout`` (the resolver's own timeouts can be long)."""
    result: list[Address] = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result.extend((info[0], info[4]) for info in infos)
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    worker = threading.Thread(target=lookup, name="resetguard-doctor-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise ProbeError("dns", f"DNS lookup of {host!r} took longer than {timeout:g} s")
    if failure:
        raise ProbeError("dns", f"DNS lookup of {host!r} failed: {describe_error(failure[0])}")
    if not result:
        raise ProbeError("dns", f"DNS lookup of {host!r} returned no address")
    return result


def connect(
    addresses: list[Address], timeout: float, *, clock: Clock = time.monotonic
) -> tuple[socket.socket, Address, float]:
    """Connect to the first address that accepts; returns (socket, address, seconds taken)."""
    errors: list[str] = []
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        started = clock()
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            errors.append(f"{_format_addr(sockaddr)}: {describe_error(exc)}")
            continue
        return sock, (family, sockaddr), clock() - started
    raise ProbeError("connect", "TCP connect failed: " + "; ".join(errors))


def _format_addr(sockaddr: tuple[object, ...]) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleWatch:
    """How an idle connection ended: ``fin``/``rst`` after ``elapsed_s``, or still ``open``."""

    outcome: Literal["fin", "rst", "open"]
    elapsed_s: float | None
    limit_s: float
    said: str = ""  # preview of what the server sent before closing, if anything


def watch_idle(
    sock: socket.socket,
    *,
    limit: float,
    clock: Clock = time.monotonic,
    progress: Progress | None = None,
    started: float | None = None,
) -> IdleWatch:
    """Watch ``sock`` (idle since ``started``, default now) until the peer closes or ``limit``."""
    progress = progress or NullProgress()
    start = clock() if started is None else started
    deadline = start + limit
    first_activity: float | None = None
    said = bytearray()
    grace_end = deadline
    while True:
        now = clock()
        end = grace_end if first_activity is not None else deadline
        if now >= end:
            # Talked (or nothing happened) but never closed within the bound.
            return IdleWatch(
                outcome="open", elapsed_s=None, limit_s=limit, said=printable(bytes(said))
            )
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if not pending:
            wait = min(end - now, _TICK_S)
            readable, _, _ = select.select([sock], [], [], wait)
            if not readable:
                progress.waiting(clock() - start, limit)
                continue
        if first_activity is None:
            first_activity = clock()
            # Once the server starts talking, give it a moment to finish and close.
            grace_end = max(deadline, first_activity + 2.0)
        sock.settimeout(1.0)
        try:
            data = sock.recv(16384)
        except (ssl.SSLWantReadError, TimeoutError):
            continue
        except ConnectionResetError:
            return IdleWatch(
                outcome="rst",
                elapsed_s=first_activity - start,
                limit_s=limit,
                said=printable(bytes(said)),
            )
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            data = b""
        if not data:
            return IdleWatch(
                outcome="fin",
                elapsed_s=first_activity - start,
                limit_s=limit,
                said=printable(bytes(said)),
            )
        if len(said) < _GOODBYE_CAP:
            said.extend(data)


def watch_fd(
    fd: int,
    *,
    limit: float,
    clock: Clock = time.monotonic,
    progress: Progress | None = None,
    started: float | None = None,
) -> IdleWatch:
    """:func:`watch_idle` on a driver's socket descriptor (watched through a duplicate)."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return watch_idle(sock, limit=limit, clock=clock, progress=progress, started=started)
    finally:
        sock.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteAfterClose:
    """What a client sees when it writes a request on the connection the server just closed.

    Each field is ``ok``, ``eof``, ``data``, ``nothing`` or an errno name such as ``EPIPE``.
    """

    first_write: str
    then_read: str
    second_write: str


def _outcome(exc: OSError) -> str:
    if exc.errno is None:
        return type(exc).__name__
    return errno.errorcode.get(exc.errno, str(exc.errno))


def write_after_close(sock: socket.socket, request: bytes, *, settle: float) -> WriteAfterClose:
    """Write ``request`` on a connection the peer closed, read, write again; record each result.

    ``settle`` is how long to wait for the peer's answer (an RST) before reading.
    """

    def send() -> str:
        try:
            sock.sendall(request)
        except OSError as exc:
            return _outcome(exc)
        return "ok"

    sock.settimeout(1.0)
    first = send()
    time.sleep(settle)
    sock.setblocking(False)
    try:
        data = sock.recv(4096)
        read = "data" if data else "eof"
    except (BlockingIOError, ssl.SSLWantReadError):
        read = "nothing"
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        read = "eof"
    except OSError as exc:
        read = _outcome(exc)
    sock.settimeout(1.0)
    second = send()
    return WriteAfterClose(first_write=first, then_read=read, second_write=second)
