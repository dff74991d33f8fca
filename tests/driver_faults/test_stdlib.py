"""The standard library's own connection faults, produced for real on loopback, classified."""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from resetguard._classify import Failure, Kind, Phase, classify

from ._servers import FaultHTTPServer, RawListener, rst_close


def _classified(exc: BaseException) -> Failure:
    failure = classify(exc)
    assert failure is not None, f"{exc!r} not recognised"
    assert failure.source == "stdlib"
    return failure


@pytest.fixture
def http_server() -> Iterator[FaultHTTPServer]:
    with FaultHTTPServer() as srv:
        yield srv


def test_connect_refused(unused_port: int) -> None:
    with pytest.raises(ConnectionRefusedError) as info:
        socket.create_connection(("127.0.0.1", unused_port), timeout=1)
    f = _classified(info.value)
    assert (f.kind, f.phase, f.code, f.errno) == (Kind.REFUSED, Phase.CONNECT, "ECONNREFUSED", 111)
    assert f.nothing_sent


def test_recv_after_rst() -> None:
    with RawListener("read-rst") as listener:
        sock = socket.create_connection(("127.0.0.1", listener.port), timeout=1)
        sock.sendall(b"hello")
        with sock, pytest.raises(ConnectionResetError) as info:
            sock.recv(10)
    f = _classified(info.value)
    assert (f.kind, f.code, f.errno) == (Kind.RESET, "ECONNRESET", 104)
    assert f.phase is Phase.UNKNOWN


def test_send_after_rst_is_broken_pipe() -> None:
    with RawListener("read-rst") as listener:
        sock = socket.create_connection(("127.0.0.1", listener.port), timeout=1)
        sock.sendall(b"hello")
        time.sleep(0.05)  # the RST arrives
        errors: list[OSError] = []
        with sock:
            for _ in range(5):  # ECONNRESET is reported once, then EPIPE
                try:
                    sock.send(b"more")
                except OSError as exc:
                    errors.append(exc)
                    if isinstance(exc, BrokenPipeError):
                        break
    assert errors, "send never failed"
    assert isinstance(errors[-1], BrokenPipeError), errors
    f = _classified(errors[-1])
    assert (f.kind, f.code, f.errno) == (Kind.BROKEN_PIPE, "EPIPE", 32)


def test_http_client_remote_disconnected(http_server: FaultHTTPServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=2)
    conn.request("GET", "/fin")
    with pytest.raises(http.client.RemoteDisconnected) as info:
        conn.getresponse()
    conn.close()
    # RemoteDisconnected subclasses ConnectionResetError, yet nothing was reset: a FIN.
    f = _classified(info.value)
    assert (f.kind, f.phase) == (Kind.CLOSED, Phase.AWAIT)


def test_http_client_incomplete_read(http_server: FaultHTTPServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=2)
    conn.request("GET", "/finbody")
    resp = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    conn.close()
    f = _classified(info.value)
    assert (f.kind, f.phase) == (Kind.CLOSED, Phase.RECEIVE)


def test_urllib_refused_and_reset(unused_port: int, http_server: FaultHTTPServer) -> None:
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{unused_port}/", timeout=1)
    f = classify(refused.value)
    assert f is not None
    assert (f.kind, f.phase) == (Kind.REFUSED, Phase.CONNECT)
    with pytest.raises(ConnectionResetError) as reset:
        urllib.request.urlopen(f"{http_server.url}/rst", timeout=1)
    f = _classified(reset.value)
    assert f.kind is Kind.RESET


def test_socket_timeout() -> None:
    with RawListener("read-fin") as listener:
        # The listener reads and waits; nothing is sent, so recv times out.
        sock = socket.create_connection(("127.0.0.1", listener.port), timeout=1)
        sock.settimeout(0.05)
        with sock, pytest.raises(TimeoutError) as info:
            sock.recv(10)
    f = _classified(info.value)
    assert f.kind is Kind.TIMEOUT


def test_gaierror() -> None:
    # A service name that does not exist fails in getaddrinfo without any network.
    with pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo("127.0.0.1", "rg-no-such-service")
    f = _classified(info.value)
    assert (f.kind, f.phase) == (Kind.DNS, Phase.CONNECT)
    assert f.code is not None
    assert f.code.startswith("EAI")


def test_asyncio_incomplete_read_and_timeout() -> None:
    async def scenario() -> tuple[BaseException, BaseException]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"abc")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                await reader.readexactly(10)
            except asyncio.IncompleteReadError as exc:
                incomplete: BaseException = exc
            writer.close()
            try:
                await asyncio.wait_for(asyncio.sleep(1), 0.01)
            except TimeoutError as exc:
                timeout: BaseException = exc
        finally:
            server.close()
            await server.wait_closed()
        return incomplete, timeout

    incomplete, timeout = asyncio.run(scenario())
    f = _classified(incomplete)
    assert (f.kind, f.phase) == (Kind.CLOSED, Phase.RECEIVE)
    assert _classified(timeout).kind is Kind.TIMEOUT


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    return cert, key


def test_tls_certificate_and_eof(self_signed: tuple[Path, Path]) -> None:
    import threading

    cert, key = self_signed
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(2)
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with server_ctx.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        # 1. The client does not trust the self-signed certificate.
        client_ctx = ssl.create_default_context()
        raw = socket.create_connection(("127.0.0.1", port), timeout=2)
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            client_ctx.wrap_socket(raw, server_hostname="localhost")
        raw.close()
        f = _classified(info.value)
        assert (f.kind, f.phase, f.code) == (Kind.TLS, Phase.CONNECT, "CERTIFICATE_VERIFY_FAILED")
    finally:
        thread.join(3)
        listener.close()

    # 2. The peer closes in the middle of the handshake (a plain TCP server that FINs).
    with RawListener("read-fin") as fin:
        raw = socket.create_connection(("127.0.0.1", fin.port), timeout=2)
        ctx = ssl.create_default_context()
        with pytest.raises((ssl.SSLEOFError, ConnectionResetError)) as eof:
            ctx.wrap_socket(raw, server_hostname="localhost")
        raw.close()
    f = _classified(eof.value)
    assert f.kind in (Kind.CLOSED, Kind.RESET)


def test_rst_helper_really_resets() -> None:
    """The fault servers rely on rst_close() producing an RST, not a FIN."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    with listener:
        client = socket.create_connection(listener.getsockname(), timeout=1)
        conn, _ = listener.accept()
        rst_close(conn)
        with client, pytest.raises(ConnectionResetError):
            client.recv(1)
