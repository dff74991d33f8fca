"""Toxics seen by real clients: httpx against a keep-alive HTTP server, psycopg against
the local PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from resetguard.proxy import FaultProxy, IdleReset, LimitData, ResetPeer

httpx = pytest.importorskip("httpx")

Factory = Callable[..., FaultProxy]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        body = b"x" * 2000 if self.path == "/big" else b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # resets are what these tests make happen


@pytest.fixture
def http_server() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# -- httpx: the keep-alive race -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("close", "error"),
    [("fin", "RemoteProtocolError"), ("rst", "ReadError")],
)
def test_idle_reset_reproduces_the_keep_alive_race_for_httpx(
    fault_proxy: Factory, http_server: str, close: str, error: str
) -> None:
    proxy = fault_proxy(http_server)
    with httpx.Client(base_url=proxy.url()) as client:
        assert client.get("/").text == "ok"  # the connection goes back to the pool
        # The server side now drops connections idle for 100 ms; httpx keeps them 5 s.
        proxy.add_toxic(IdleReset(idle=100, close=close, stream="upstream"))
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError) as info:
            client.get("/")  # reuses the pooled connection: the stale keep-alive race
        assert type(info.value).__name__ == error
        if close == "fin":
            assert "without sending a response" in str(info.value)
        # a fresh connection works: this is exactly the failure a retry should absorb
        assert client.get("/").text == "ok"


def test_without_the_toxic_the_pooled_connection_is_reused(
    fault_proxy: Factory, http_server: str
) -> None:
    proxy = fault_proxy(http_server)
    with httpx.Client(base_url=proxy.url()) as client:
        assert client.get("/").text == "ok"
        time.sleep(0.3)
        assert client.get("/").text == "ok"
    assert proxy.stats()["connections_total"] == 1


def test_httpx_sees_reset_peer(fault_proxy: Factory, http_server: str) -> None:
    proxy = fault_proxy(http_server, toxics=[ResetPeer()])
    with httpx.Client(base_url=proxy.url()) as client, pytest.raises(httpx.ReadError) as info:
        client.get("/")
    assert (
        isinstance(info.value.__context__, ConnectionResetError)
        or "reset" in str(info.value).lower()
    )


def test_httpx_sees_truncated_body(fault_proxy: Factory, http_server: str) -> None:
    proxy = fault_proxy(http_server, toxics=[LimitData(bytes=500)])
    with httpx.Client(base_url=proxy.url()) as client, pytest.raises(httpx.RemoteProtocolError):
        client.get("/big")


def test_httpx_latency(fault_proxy: Factory, http_server: str) -> None:
    proxy = fault_proxy(http_server, toxics=["latency:latency=150ms"])
    with httpx.Client(base_url=proxy.url()) as client:
        start = time.monotonic()
        assert client.get("/").text == "ok"
        assert time.monotonic() - start >= 0.145


# -- psycopg against the real PostgreSQL ----------------------------------------------------------


@pytest.mark.postgres
def test_psycopg_reset_peer(fault_proxy: Factory, postgres_dsn: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    proxy = fault_proxy("127.0.0.1:5432")
    dsn = postgres_dsn.replace("port=5432", f"port={proxy.port}")
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        with (
            proxy.toxic(ResetPeer(stream="upstream")),
            pytest.raises(psycopg.OperationalError) as info,
        ):
            conn.execute("select 2")
        assert conn.closed
    message = str(info.value).lower()
    assert "reset" in message or "closed the connection" in message


@pytest.mark.postgres
def test_psycopg_latency_and_truncation(fault_proxy: Factory, postgres_dsn: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    proxy = fault_proxy("127.0.0.1:5432")
    dsn = postgres_dsn.replace("port=5432", f"port={proxy.port}")
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        with proxy.toxic("latency:latency=100ms"):
            start = time.monotonic()
            conn.execute("select 1").fetchone()
            assert time.monotonic() - start >= 0.095
        with proxy.toxic(LimitData(bytes=100)), pytest.raises(psycopg.OperationalError):
            conn.execute("select repeat('x', 10000)").fetchone()
