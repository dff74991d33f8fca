"""Connection tracer against real loopback servers and real clients."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import resetguard.trace as trace
from resetguard._classify import Kind, Phase
from resetguard._monitor import Monitor
from resetguard.trace import TraceRecord

from ._servers import KeepAliveHTTPServer, PingServer, rst_close


@pytest.fixture
def records() -> Iterator[list[TraceRecord]]:
    seen: list[TraceRecord] = []
    trace.enable(sink=seen.append)
    try:
        yield seen
    finally:
        trace.disable()
    assert not trace.enabled()


def _steps(records: list[TraceRecord], library: str) -> list[str]:
    return [r.step for r in records if r.library == library]


def test_disabled_by_default_and_disable_restores_every_original() -> None:
    import httpcore
    import urllib3.connection
    import urllib3.connectionpool

    targets = [
        (httpcore.ConnectionPool, "handle_request"),
        (httpcore.AsyncConnectionPool, "handle_async_request"),
        (httpcore.HTTP11Connection, "handle_request"),
        (httpcore.HTTP11Connection, "close"),
        (httpcore.AsyncHTTP11Connection, "aclose"),
        (urllib3.connectionpool.HTTPConnectionPool, "_get_conn"),
        (urllib3.connectionpool.HTTPConnectionPool, "_put_conn"),
        (urllib3.connection.HTTPConnection, "request"),
        (urllib3.connection.HTTPConnection, "getresponse"),
        (urllib3.connection.HTTPSConnection, "connect"),
        (socket, "getaddrinfo"),
    ]
    assert not trace.enabled()
    before = [getattr(owner, name) for owner, name in targets]
    https_own = "connect" in vars(urllib3.connection.HTTPSConnection)
    trace.enable(sink=lambda r: None)
    trace.enable(sink=lambda r: None)  # a second enable re-applies, it does not stack
    assert set(trace.libraries()) == {"httpx", "urllib3", "dns"}
    assert [getattr(owner, name) for owner, name in targets] != before
    trace.disable()
    assert [getattr(owner, name) for owner, name in targets] == before
    assert ("connect" in vars(urllib3.connection.HTTPSConnection)) == https_own
    trace.disable()  # no-op


def test_enable_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="'curl'"):
        trace.enable(libraries=("curl",))
    with pytest.raises(TypeError, match="'httpx'"):
        trace.enable(libraries="httpx")
    with pytest.raises(TypeError, match="sink"):
        trace.enable(sink=42)  # type: ignore[arg-type]
    assert not trace.enabled()


def test_httpx_reset_on_reused_connection(records: list[TraceRecord]) -> None:
    import httpx

    with KeepAliveHTTPServer(reset=lambda c, r: r == 1) as server:
        url = f"http://127.0.0.1:{server.port}/items"
        with httpx.Client() as client:
            assert client.get(url).status_code == 200
            time.sleep(0.05)
            with pytest.raises(httpx.ReadError):
                client.get(url)
    steps = _steps(records, "httpx")
    assert steps == [
        "connect",
        "opened",
        "request_sent",
        "first_byte",
        "response_complete",
        "returned",
        "reused",
        "request_sent",
        "error",
        "closed",
    ]
    by_step = {r.step: r for r in records if r.library == "httpx"}
    assert len({r.conn for r in records if r.library == "httpx"}) == 1
    assert by_step["reused"].idle_age is not None
    assert by_step["reused"].idle_age >= 0.04
    error = by_step["error"]
    assert error.failure is not None
    assert error.failure.kind is Kind.RESET
    assert error.failure.phase is Phase.AWAIT
    assert error.failure.reused is True
    assert error.idle_age is not None
    assert error.idle_age >= 0.04
    assert by_step["connect"].peer == f"127.0.0.1:{server.port}"
    assert "dns" in _steps(records, "dns")


def test_httpx_async_client_is_traced(records: list[TraceRecord]) -> None:
    import httpx

    async def main(port: int) -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(2):
                r = await client.get(f"http://127.0.0.1:{port}/")
                assert r.text == "hello"

    with KeepAliveHTTPServer() as server:
        asyncio.run(main(server.port))
    steps = _steps(records, "httpx")
    assert steps.count("opened") == 1
    assert steps.count("reused") == 1
    assert steps.count("returned") == 2
    assert steps[-1] == "closed"


def test_httpx_user_trace_extension_still_called(records: list[TraceRecord]) -> None:
    import httpx

    mine: list[str] = []
    with KeepAliveHTTPServer() as server, httpx.Client() as client:
        client.get(
            f"http://127.0.0.1:{server.port}/",
            extensions={"trace": lambda name, info: mine.append(name)},
        )
    assert "http11.send_request_headers.started" in mine
    assert "opened" in _steps(records, "httpx")


def test_requests_reset_on_reused_connection(records: list[TraceRecord]) -> None:
    import requests

    with KeepAliveHTTPServer(reset=lambda c, r: r == 1) as server:
        url = f"http://127.0.0.1:{server.port}/items"
        with requests.Session() as session:
            assert session.get(url, timeout=5).status_code == 200
            with pytest.raises(requests.ConnectionError):
                session.get(url, timeout=5)
    steps = _steps(records, "urllib3")
    assert steps == [
        "connect",
        "opened",
        "request_sent",
        "first_byte",
        "returned",
        "reused",
        "request_sent",
        "error",
        "closed",
    ]
    error = next(r for r in records if r.step == "error")
    assert error.failure is not None
    assert (error.failure.kind, error.failure.phase, error.failure.reused) == (
        Kind.RESET,
        Phase.AWAIT,
        True,
    )


def test_requests_connect_refused(records: list[TraceRecord], unused_port: int) -> None:
    import requests

    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{unused_port}/", timeout=5)
    error = next(r for r in records if r.step == "error")
    assert error.failure is not None
    assert error.failure.kind is Kind.REFUSED
    assert error.failure.phase is Phase.CONNECT


def test_raw_socket_wrapper_traces_reset() -> None:
    seen: list[TraceRecord] = []
    trace.enable(sink=seen.append, libraries=())
    try:
        with (
            PingServer(reset=lambda i: True) as server,
            trace.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        ):
            sock.sendall(b"ping\n")
            with pytest.raises(ConnectionResetError):
                sock.recv(10)
    finally:
        trace.disable()
    assert [r.step for r in seen] == ["connect", "request_sent", "error", "closed"]
    error = seen[2]
    assert error.failure is not None
    assert (error.failure.kind, error.failure.phase) == (Kind.RESET, Phase.AWAIT)
    assert error.bytes_sent == 5
    assert seen[-1].bytes_received == 0


def test_raw_socket_wrapper_counts_bytes_and_first_byte() -> None:
    seen: list[TraceRecord] = []
    trace.enable(sink=seen.append, libraries=())
    try:
        with PingServer(reset=lambda i: False) as server:
            raw = socket.socket()
            raw.settimeout(5)
            sock = trace.TracedSocket(raw)
            sock.connect(("127.0.0.1", server.port))
            assert sock.send(b"ping\n") == 5
            assert sock.recv(10) == b"pong\n"
            assert sock.getpeername()[1] == server.port  # passthrough
            sock.close()
    finally:
        trace.disable()
    assert [r.step for r in seen] == ["connect", "first_byte", "closed"]
    assert (seen[-1].bytes_sent, seen[-1].bytes_received) == (5, 5)
    with pytest.raises(TypeError, match="socket"):
        trace.TracedSocket(object())  # type: ignore[arg-type]


def test_monitor_counts_traced_connection_events() -> None:
    import httpx

    monitor = Monitor()
    with (
        monitor,
        trace.tracing(sink=lambda r: None),
        KeepAliveHTTPServer(reset=lambda c, r: r == 1) as server,
        httpx.Client() as client,
    ):
        client.get(f"http://127.0.0.1:{server.port}/")
        with pytest.raises(httpx.ReadError):
            client.get(f"http://127.0.0.1:{server.port}/")
    r = monitor.report()
    assert dict(r.connections) == {
        "opened": 1,
        "returned": 1,
        "reused": 1,
        "failed": 1,
        "closed": 1,
    }
    assert r.reused_faults == 1
    assert r.failure_idle_age.count == 1


def test_default_sink_logs_with_extra(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="resetguard.trace")
    with (
        trace.tracing(libraries=()),
        PingServer(reset=lambda i: False) as server,
        trace.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        sock.sendall(b"ping\n")
        sock.recv(10)
    lines = [r for r in caplog.records if r.name == "resetguard.trace"]
    assert [r.rg_trace_step for r in lines] == [  # type: ignore[attr-defined]
        "connect",
        "request_sent",
        "first_byte",
        "closed",
    ]
    assert f"127.0.0.1:{server.port} connect" in lines[0].getMessage()


def test_env_var_enables_at_import_with_stderr_output() -> None:
    code = (
        "import sys, socket\n"
        "import resetguard.trace as t\n"
        "assert t.enabled(), 'not enabled'\n"
        "socket.getaddrinfo('127.0.0.1', 80)\n"
    )
    env = {**os.environ, "RESETGUARD_TRACE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "resetguard.trace dns 127.0.0.1:80 dns" in out.stderr
    env["RESETGUARD_TRACE"] = "0"
    off = subprocess.run(
        [sys.executable, "-c", "import resetguard.trace as t; print(t.enabled())"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert off.stdout.strip() == "False"


def test_rst_close_helper_really_resets() -> None:
    """Guard for the helper every trace test relies on."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=5)
        peer, _ = server.accept()
        rst_close(peer)
        with pytest.raises(ConnectionResetError):
            client.recv(1)
        client.close()
