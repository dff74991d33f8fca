"""The connection log of ``resetguard proxy -v``: open, toxics, and the end of each
connection (FIN / RST / timeout) with bytes each way and duration, on real sockets."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from proxy_helpers import TcpServer

from resetguard.proxy import FaultProxy

CMD = [sys.executable, "-m", "resetguard.cli", "proxy"]


class _Cli:
    """A ``resetguard proxy`` child with stderr in a file (read while it runs)."""

    def __init__(self, tmp: Path, *args: str, proxies: int) -> None:
        self.err_path = tmp / "stderr.txt"
        self._err = self.err_path.open("w")
        self.proc = subprocess.Popen(
            [*CMD, *args], stdout=subprocess.PIPE, stderr=self._err, text=True
        )
        self.listen: dict[str, tuple[str, int]] = {}
        watchdog = threading.Timer(20, self.proc.kill)  # bounds the blocking readline()
        watchdog.start()
        try:
            assert self.proc.stdout is not None
            while len(self.listen) < proxies:
                line = self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"proxy exited: {self.err_path.read_text()}")
                m = re.match(r"resetguard proxy: (\S+) (\S+):(\d+) -> ", line)
                if m:
                    self.listen[m.group(1)] = (m.group(2), int(m.group(3)))
        finally:
            watchdog.cancel()

    def wait_for(self, pattern: str, timeout: float = 10.0) -> str:
        """The stderr text once ``pattern`` appears in it (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.err_path.read_text()
            if re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not logged within {timeout} s:\n{text}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._err.close()


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Callable[..., _Cli]]:
    started: list[_Cli] = []

    def start(*args: str, proxies: int = 1) -> _Cli:
        c = _Cli(tmp_path, *args, proxies=proxies)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


def _config(tmp_path: Path, upstream: str) -> str:
    path = tmp_path / "proxies.json"
    path.write_text(
        json.dumps(
            {
                "api": None,
                "proxies": [
                    {"name": "clean", "upstream": upstream},
                    {
                        "name": "rst",
                        "upstream": upstream,
                        "toxics": ["reset_peer:downstream:timeout=0"],
                    },
                ],
            }
        )
    )
    return str(path)


def _addr(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_v_logs_a_clean_close_and_an_rst_toxic(
    cli: Callable[..., _Cli], echo_server: TcpServer, tmp_path: Path
) -> None:
    proxy = cli("--config", _config(tmp_path, echo_server.address), "-v", proxies=2)

    with socket.create_connection(proxy.listen["clean"], timeout=5) as s:
        client = _addr(s)
        s.sendall(b"hello")
        assert s.recv(100) == b"hello"
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b""  # the echo server half-closes back
    text = proxy.wait_for(r"clean #1 end:")
    listen = "{}:{}".format(*proxy.listen["clean"])
    assert re.search(
        rf"clean #1 open: client {re.escape(client)} -> {re.escape(listen)} -> upstream "
        rf"{re.escape(echo_server.address)} \(from 127\.0\.0\.1:\d+\)",
        text,
    ), text
    assert re.search(
        r"clean #1 end: FIN \(both sides sent FIN, client first\) after \d+\.\d{3} s; "
        r"client->upstream 5 B, upstream->client 5 B",
        text,
    ), text
    assert "clean #1 toxic" not in text  # no toxic on this proxy, none logged

    with socket.create_connection(proxy.listen["rst"], timeout=5) as s:
        client = _addr(s)
        s.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            s.recv(100)
    text = proxy.wait_for(r"rst #1 end:")
    assert re.search(rf"rst #1 open: client {re.escape(client)} -> ", text), text
    assert "rst #1 toxic reset_peer_downstream acts on it: reset_peer:downstream:timeout=0" in text
    assert re.search(
        r"rst #1 end: RST \(toxic reset_peer_downstream\) after \d+\.\d{3} s; "
        r"client->upstream 5 B, upstream->client 0 B \(of 5 B read\)",
        text,
    ), text


def test_without_v_no_connection_is_logged(
    cli: Callable[..., _Cli], echo_server: TcpServer, tmp_path: Path
) -> None:
    proxy = cli("--config", _config(tmp_path, echo_server.address), proxies=2)
    for name in ("clean", "rst"):
        with socket.create_connection(proxy.listen[name], timeout=5) as s:
            s.sendall(b"hello")
            with contextlib.suppress(ConnectionResetError):
                s.recv(100)
    # A connection that exists proves the earlier two were handled before stopping.
    with socket.create_connection(proxy.listen["clean"], timeout=5) as s:
        s.sendall(b"x")
        assert s.recv(10) == b"x"
    proxy.stop()
    text = proxy.err_path.read_text()
    assert " open:" not in text
    assert " end:" not in text


@pytest.fixture
def proxy_log(caplog: pytest.LogCaptureFixture) -> Callable[[str, float], str]:
    caplog.set_level(logging.INFO, logger="resetguard.proxy")

    def wait_for(pattern: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = "\n".join(r.getMessage() for r in caplog.records)
            if re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not logged within {timeout} s:\n{text}")
            time.sleep(0.02)

    return wait_for


def test_timeout_toxic_end_is_logged_as_timeout(
    echo_server: TcpServer, proxy_log: Callable[[str, float], str]
) -> None:
    with FaultProxy(echo_server.address, name="slow", toxics=["timeout:timeout=200"]) as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as s:
            s.sendall(b"hello")
            assert s.recv(100) == b""  # the timeout toxic drops data, then closes
        text = proxy_log(r"slow #1 end:", 10.0)
    assert "slow #1 toxic timeout_downstream acts on it: timeout:downstream:timeout=200" in text
    m = re.search(r"slow #1 end: timeout \(toxic timeout_downstream\) after (\d+\.\d+) s", text)
    assert m, text
    assert float(m.group(1)) >= 0.19
    assert "client->upstream 5 B, upstream->client 0 B (of 5 B read)" in text


def test_upstream_reset_on_the_splice_path_is_logged_as_rst(
    tcp_server: Callable[..., TcpServer], proxy_log: Callable[[str, float], str]
) -> None:
    def send_then_reset(conn: socket.socket) -> None:
        conn.recv(100)
        conn.sendall(b"abc")
        time.sleep(0.2)  # let the proxy forward the 3 bytes first
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    upstream = tcp_server(send_then_reset)
    with FaultProxy(upstream.address, name="up") as proxy:  # no toxic: the splice path
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as s:
            s.sendall(b"ping")
            assert s.recv(100) == b"abc"  # sent 0.2 s before the reset
            with pytest.raises(ConnectionResetError):
                s.recv(100)
        text = proxy_log(r"up #1 end:", 10.0)
    assert re.search(
        r"up #1 end: RST \(upstream socket error: \[Errno \d+\] Connection reset by peer\) "
        r"after \d+\.\d{3} s; client->upstream 4 B, upstream->client 3 B",
        text,
    ), text
