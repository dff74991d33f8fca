"""The HTTP(S) probe: a minimal HTTP/1.1 client on a raw socket (stdlib only).

A raw socket (not http.client) because the probe must see exactly what the server does
with the connection: whether it keeps it, when and how (FIN or RST) it drops it while idle,
and what a request written after that close runs into.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Literal

from ._net import (
    Clock,
    IdleWatch,
    ProbeError,
    WriteAfterClose,
    connect,
    describe_error,
    resolve,
    watch_idle,
    write_after_close,
)
from ._progress import NullProgress, Progress
from ._target import Target

__all__ = ["HttpObservation", "TlsInfo", "parse_keep_alive", "probe_http"]

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 16 * 1024 * 1024
# A close that arrives this soon after a "Connection: close" response is part of the response.
_CLOSE_WATCH_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsInfo:
    """The TLS handshake as the probe saw it."""

    version: str | None
    cipher: str | None
    alpn: str | None
    verified: bool
    verify_error: str | None
    not_after: str | None
    days_left: float | None
    handshake_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class _Response:
    version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    framing: Literal["length", "chunked", "close", "none"]

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpObservation:
    """Raw observations of one HTTP target, before any judgement."""

    addresses: tuple[str, ...]
    peer: str
    dns_s: float
    connect_s: float
    tls: TlsInfo | None
    http_version: str
    status: int
    reason: str
    first_byte_s: float
    server: str | None
    connection_header: str | None
    keep_alive_header: str | None
    keep_alive_timeout_s: float | None
    keep_alive_max: int | None
    keepalive: Literal["honoured", "refused", "broken"]
    reuse_error: str | None
    close_after_response: IdleWatch | None
    idle: IdleWatch | None
    write_after_close: WriteAfterClose | None


def parse_keep_alive(value: str | None) -> tuple[float | None, int | None]:
    """``(timeout, max)`` from a ``Keep-Alive: timeout=5, max=100`` header; ``None`` if absent."""
    timeout: float | None = None
    max_requests: int | None = None
    for part in (value or "").split(","):
        key, _, raw = part.strip().partition("=")
        raw = raw.strip().strip('"')
        try:
            if key.strip().lower() == "timeout":
                timeout = float(raw)
            elif key.strip().lower() == "max":
                max_requests = int(raw)
        except ValueError:
            continue
    return timeout, max_requests


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf.extend(data)
        return True

    def readline(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            if len(self.buf) > _MAX_HEADER_BYTES:
                raise ProbeError("http", "response header line longer than 64 KiB")
            if not self._fill():
                raise EOFError("connection closed by the server")

    def skip(self, count: int) -> None:
        while len(self.buf) < count:
            if not self._fill():
                raise EOFError("connection closed in the middle of the body")
        del self.buf[:count]

    def skip_to_close(self) -> None:
        total = len(self.buf)
        self.buf.clear()
        while total <= _MAX_BODY_BYTES:
            data = self.sock.recv(65536)
            if not data:
                return
            total += len(data)
        raise ProbeError(
            "http", "response body larger than 16 MiB: use a smaller URL or --method HEAD"
        )


def _read_response(reader: _Reader, method: str) -> _Response:
    while True:
        status_line = reader.readline().decode("latin-1").rstrip("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ProbeError("http", f"not an HTTP response: {status_line[:80]!r}")
        headers: list[tuple[str, str]] = []
        size = 0
        while True:
            line = reader.readline()
            size += len(line)
            if size > _MAX_HEADER_BYTES:
                raise ProbeError("http", "response headers larger than 64 KiB")
            text = line.decode("latin-1").rstrip("\r\n")
            if not text:
                break
            name, _, value = text.partition(":")
            headers.append((name.strip(), value.strip()))
        status = int(parts[1])
        if 100 <= status < 200 and status != 101:
            continue  # interim response; the real one follows
        break
    response_headers = tuple(headers)
    lower = {k.lower(): v for k, v in response_headers}
    framing: Literal["length", "chunked", "close", "none"]
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        framing = "none"
    elif "chunked" in lower.get("transfer-encoding", "").lower():
        framing = "chunked"
        _skip_chunked(reader)
    elif "content-length" in lower:
        length_text = lower["content-length"].split(",")[0].strip()
        if not length_text.isdigit():
            raise ProbeError("http", f"invalid Content-Length {lower['content-length']!r}")
        if int(length_text) > _MAX_BODY_BYTES:
            raise ProbeError(
                "http", "response body larger than 16 MiB: use a smaller URL or --method HEAD"
            )
        framing = "length"
        reader.skip(int(length_text))
    else:
        framing = "close"
        reader.skip_to_close()
    return _Response(
        version=parts[0],
        status=status,
        reason=parts[2] if len(parts) > 2 else "",
        headers=response_headers,
        framing=framing,
    )


def _skip_chunked(reader: _Reader) -> None:
    total = 0
    while True:
        size_text = reader.readline().split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProbeError("http", f"invalid chunk size {size_text[:20]!r}") from None
        if size == 0:
            while reader.readline().strip():  # trailers
                pass
            return
        total += size
        if total > _MAX_BODY_BYTES:
            raise ProbeError(
                "http", "response body larger than 16 MiB: use a smaller URL or --method HEAD"
            )
        reader.skip(size + 2)


def _build_request(target: Target, method: str, version: str) -> bytes:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default_port = 443 if target.tls else 80
    if target.port != default_port:
        host = f"{host}:{target.port}"
    lines = [
        f"{method} {target.path} HTTP/1.1",
        f"Host: {host}",
        f"User-Agent: resetguard-doctor/{version}",
        "Accept: */*",
        "Connection: keep-alive",
    ]
    if target.username is not None:
        # Like curl: credentials in the URL are sent as Basic auth (and never printed).
        token = f"{target.username}:{target.password or ''}".encode()
        lines.append(f"Authorization: Basic {base64.b64encode(token).decode()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _tls_wrap(
    sock: socket.socket, target: Target, cafile: str | None, verify: bool, clock: Clock
) -> tuple[ssl.SSLSocket, float]:
    if verify:
        context = ssl.create_default_context(cafile=cafile)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    started = clock()
    wrapped = context.wrap_socket(sock, server_hostname=target.host)
    return wrapped, clock() - started


def _tls_info(sock: ssl.SSLSocket, handshake_s: float, verify_error: str | None) -> TlsInfo:
    cert = sock.getpeercert() if verify_error is None else None
    not_after = None
    days_left = None
    if cert and isinstance(cert.get("notAfter"), str):
        not_after = str(cert["notAfter"])
        days_left = (ssl.cert_time_to_seconds(not_after) - time.time()) / 86400
    cipher = sock.cipher()
    return TlsInfo(
        version=sock.version(),
        cipher=cipher[0] if cipher else None,
        alpn=sock.selected_alpn_protocol(),
        verified=verify_error is None,
        verify_error=verify_error,
        not_after=not_after,
        days_left=days_left,
        handshake_s=handshake_s,
    )


def probe_http(
    target: Target,
    *,
    idle_limit: float,
    timeout: float,
    cafile: str | None = None,
    method: str = "GET",
    version: str = "",
    clock: Clock = time.monotonic,
    progress: Progress | None = None,
) -> HttpObservation:
    """Probe ``target`` (kind ``http``); raises :class:`ProbeError` when it cannot be reached."""
    progress = progress or NullProgress()
    progress.step(f"resolving {target.host}")
    started = clock()
    addresses = resolve(target.host, target.port, timeout)
    dns_s = clock() - started
    progress.step(f"connecting to port {target.port}")
    sock, (_family, sockaddr), connect_s = connect(addresses, timeout, clock=clock)
    tls: TlsInfo | None = None
    try:
        if target.tls:
            progress.step("TLS handshake")
            sock, tls = _handshake(sock, sockaddr, target, cafile, timeout, clock)
        return _exchange(
            sock,
            target=target,
            addresses=tuple(str(a[1][0]) for a in addresses),
            peer=f"{sockaddr[0]}:{sockaddr[1]}",
            dns_s=dns_s,
            connect_s=connect_s,
            tls=tls,
            idle_limit=idle_limit,
            timeout=timeout,
            method=method,
            version=version,
            clock=clock,
            progress=progress,
        )
    finally:
        sock.close()


def _handshake(
    sock: socket.socket,
    sockaddr: tuple[object, ...],
    target: Target,
    cafile: str | None,
    timeout: float,
    clock: Clock,
) -> tuple[ssl.SSLSocket, TlsInfo]:
    try:
        wrapped, handshake_s = _tls_wrap(sock, target, cafile, True, clock)
        return wrapped, _tls_info(wrapped, handshake_s, None)
    except ssl.SSLCertVerificationError as exc:
        verify_error = str(exc.verify_message or exc)
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise ProbeError("tls", f"TLS handshake failed: {describe_error(exc)}") from None
    # Certificate rejected: keep measuring over an unverified connection (the finding says so).
    sock.close()
    fresh = socket.socket(socket.AF_INET6 if ":" in str(sockaddr[0]) else socket.AF_INET)
    fresh.settimeout(timeout)
    try:
        fresh.connect(sockaddr)
        wrapped, handshake_s = _tls_wrap(fresh, target, cafile, False, clock)
    except (ssl.SSLError, OSError) as exc:
        fresh.close()
        raise ProbeError("tls", f"TLS handshake failed: {describe_error(exc)}") from None
    return wrapped, _tls_info(wrapped, handshake_s, verify_error)


def _exchange(
    sock: socket.socket,
    *,
    target: Target,
    addresses: tuple[str, ...],
    peer: str,
    dns_s: float,
    connect_s: float,
    tls: TlsInfo | None,
    idle_limit: float,
    timeout: float,
    method: str,
    version: str,
    clock: Clock,
    progress: Progress,
) -> HttpObservation:
    request = _build_request(target, method, version)
    reader = _Reader(sock)
    sock.settimeout(timeout)
    progress.step(f"{method} {target.path}")
    sent_at = clock()
    try:
        sock.sendall(request)
        reader._fill() or _raise_eof()
        first_byte_s = clock() - sent_at
        response = _read_response(reader, method)
    except (OSError, EOFError) as exc:
        raise ProbeError("http", f"no HTTP response: {describe_error(exc)}") from None
    connection = response.header("connection")
    tokens = {t.strip().lower() for t in (connection or "").split(",")}
    will_close = (
        "close" in tokens
        or (response.version == "HTTP/1.0" and "keep-alive" not in tokens)
        or response.framing == "close"
    )
    keep_alive_header = response.header("keep-alive")
    ka_timeout, ka_max = parse_keep_alive(keep_alive_header)
    keepalive: Literal["honoured", "refused", "broken"] = "refused"
    reuse_error = None
    close_after = idle = None
    wac = None
    if will_close:
        progress.step("server closes after each response; watching how")
        if response.framing != "close":
            close_after = watch_idle(sock, limit=min(_CLOSE_WATCH_S, idle_limit), clock=clock)
    else:
        progress.step("second request on the same connection (keep-alive)")
        try:
            sock.sendall(request)
            _read_response(reader, method)
            keepalive = "honoured"
        except (OSError, EOFError) as exc:
            keepalive = "broken"
            reuse_error = describe_error(exc) if isinstance(exc, OSError) else str(exc)
        if keepalive == "honoured":
            idle_from = clock()
            progress.step(
                f"waiting for the server to close the idle connection (up to {idle_limit:g} s)"
            )
            idle = watch_idle(
                sock, limit=idle_limit, clock=clock, progress=progress, started=idle_from
            )
            if idle.outcome != "open":
                progress.step("writing a request on the connection the server just closed")
                settle = min(max(4 * connect_s, 0.05), 1.0)
                wac = write_after_close(sock, request, settle=settle)
    return HttpObservation(
        addresses=addresses,
        peer=peer,
        dns_s=dns_s,
        connect_s=connect_s,
        tls=tls,
        http_version=response.version,
        status=response.status,
        reason=response.reason,
        first_byte_s=first_byte_s,
        server=response.header("server"),
        connection_header=connection,
        keep_alive_header=keep_alive_header,
        keep_alive_timeout_s=ka_timeout,
        keep_alive_max=ka_max,
        keepalive=keepalive,
        reuse_error=reuse_error,
        close_after_response=close_after,
        idle=idle,
        write_after_close=wac,
    )


def _raise_eof() -> bool:
    raise EOFError("connection closed before any response byte")
