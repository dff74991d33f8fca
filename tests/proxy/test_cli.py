"""``resetguard proxy``: usage errors (exit 2), running, stopping, and no fd leak."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_helpers import AsyncEchoServer, TcpServer

CMD = [sys.executable, "-m", "resetguard.cli", "proxy"]


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CMD, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--upstream", "127.0.0.1:1", "--toxic", "latency:sideways"], "'sideways'"),
        (
            ["--upstream", "127.0.0.1:1", "--toxic", "bogus:downstream"],
            "invalid toxic type 'bogus'",
        ),
        (["--upstream", "127.0.0.1:1", "--toxic", "latency:latency=fast"], "'fast'"),
        (
            ["--upstream", "127.0.0.1:1", "--toxic", "slicer:average_size=2:size_variation=9"],
            "size_variation (9) must be smaller than average_size (2)",
        ),
        (
            ["--upstream", "127.0.0.1:1", "--toxic", "latency", "--toxic", "latency"],
            "two toxics named 'latency_downstream'",
        ),
        (["--upstream", "nohost"], "--upstream must be HOST:PORT"),
        (["--upstream", "127.0.0.1:99999"], "port must be a number from 0 to 65535"),
        (["--upstream", "127.0.0.1:1", "--listen", "[::1]"], "--listen must be [IPV6]:PORT"),
        (["--upstream", "127.0.0.1:1", "--api", "8474"], "--api must be HOST:PORT"),
        (["--listen", "127.0.0.1:0"], "need --upstream"),
        (["--no-api"], "nothing to do"),
        (["--config", "/nonexistent.json"], "cannot read"),
    ],
)
def test_usage_errors_exit_2(args: list[str], fragment: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("resetguard proxy: error:")


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ("{", "invalid JSON"),
        ('{"proxies": [{"listen": "127.0.0.1:0"}]}', "proxies[0]: missing required field"),
        ('[{"name": "a", "upstream": "x"}]', "proxies[0]: upstream must be HOST:PORT"),
        (
            '[{"name": "a", "upstream": "127.0.0.1:1", "toxics": ["latency:jiter=1"]}]',
            "proxies[0].toxics[0]: bad toxic spec 'latency:jiter=1': unknown key 'jiter'",
        ),
        (
            '[{"name": "a", "upstream": "127.0.0.1:1", "toxics": [{"type": "nope"}]}]',
            "proxies[0].toxics[0]: invalid toxic type 'nope'",
        ),
        ('[{"name": "a", "upstream": "127.0.0.1:1", "colour": "red"}]', "unknown key 'colour'"),
        (
            '[{"name": "a", "upstream": "127.0.0.1:1"}, {"name": "a", "upstream": "127.0.0.1:1"}]',
            "duplicate proxy name 'a'",
        ),
        ('{"api": 8474}', "api must be HOST:PORT"),
    ],
)
def test_config_errors_exit_2(tmp_path: Path, config: str, fragment: str) -> None:
    path = tmp_path / "proxies.json"
    path.write_text(config)
    result = run_cli("--config", str(path))
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr, result.stderr
    assert str(path) in result.stderr


def test_list_toxics() -> None:
    result = run_cli("--list-toxics")
    assert result.returncode == 0
    for name in ("reset_peer", "latency", "idle_reset", "reset_at", "down"):
        assert f"\n{name}:" in f"\n{result.stdout}"


class Running:
    """A ``resetguard proxy`` child process; parses the lines it prints at start
    (``proxies`` proxy lines, then the API line when ``api``)."""

    def __init__(self, *args: str, proxies: int = 1, api: bool = False) -> None:
        self.proc = subprocess.Popen(
            [*CMD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.proxies: dict[str, str] = {}
        self.api: str | None = None
        assert self.proc.stdout is not None
        watchdog = threading.Timer(20, self.proc.kill)  # bounds the blocking readline()
        watchdog.start()
        try:
            self._read_banner(proxies, api)
        finally:
            watchdog.cancel()

    def _read_banner(self, proxies: int, api: bool) -> None:
        assert self.proc.stdout is not None
        while len(self.proxies) < proxies or (api and self.api is None):
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"proxy exited: {self.proc.communicate()[1]}")
            m = re.match(r"resetguard proxy: (\S+) (\S+) -> ", line)
            if m:
                self.proxies[m.group(1)] = m.group(2)
            m = re.match(r"resetguard proxy: API (http://\S+)", line)
            if m:
                self.api = m.group(1)

    def address(self, name: str = "proxy1") -> tuple[str, int]:
        host, port = self.proxies[name].rsplit(":", 1)
        return host, int(port)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(10)
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        if r.proc.poll() is None:
            r.stop()


def test_runs_with_toxics_and_api_then_stops_cleanly(
    running: list[Running], echo_server: TcpServer
) -> None:
    r = Running(
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        echo_server.address,
        "--toxic",
        "limit_data:downstream:bytes=3",
        "--api",
        "127.0.0.1:0",
        "--seed",
        "1",
        api=True,
    )
    running.append(r)
    with socket.create_connection(r.address(), timeout=5) as s:
        s.sendall(b"hello")
        assert s.recv(100) == b"hel"
        assert s.recv(100) == b""
    assert r.api is not None
    import urllib.request

    req = urllib.request.Request(f"{r.api}/proxies/proxy1/toxics", headers={"User-Agent": "t"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        toxics = json.load(resp)
    assert toxics[0]["type"] == "limit_data"
    address = r.address()
    assert r.stop() == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2)


def test_config_file_with_several_proxies(
    running: list[Running], tmp_path: Path, echo_server: TcpServer
) -> None:
    cfg = tmp_path / "proxies.toml"
    cfg.write_text(
        f"""
api = false
[[proxies]]
name = "plain"
upstream = "{echo_server.address}"
[[proxies]]
name = "cut"
upstream = "{echo_server.address}"
toxics = ["limit_data:bytes=2", {{type = "latency", attributes = {{latency = 1}}}}]
"""
    )
    r = Running("--config", str(cfg), proxies=2)
    running.append(r)
    assert set(r.proxies) == {"plain", "cut"}
    for name, expected in (("plain", b"hello"), ("cut", b"he")):
        with socket.create_connection(r.address(name), timeout=5) as s:
            s.sendall(b"hello")
            got = b""
            while len(got) < 5:
                data = s.recv(100)
                if not data:
                    break
                got += data
            assert got == expected


def test_port_in_use_exits_1(echo_server: TcpServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "--listen", f"127.0.0.1:{port}", "--upstream", echo_server.address, "--no-api"
        )
        assert result.returncode == 1
        assert f"listen tcp 127.0.0.1:{port}" in result.stderr
        result = run_cli("--upstream", echo_server.address, "--api", f"127.0.0.1:{port}")
        assert result.returncode == 1
        assert "cannot listen for the API" in result.stderr


def _fds(pid: int) -> tuple[int, int]:
    sockets = pipes = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        sockets += target.startswith("socket:")
        pipes += target.startswith("pipe:")
    return sockets, pipes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_fd_leak_after_10000_connections(running: list[Running]) -> None:
    """10,000 connections, closed politely, reset by the client, or abandoned with
    unread data; the proxy keeps working and holds no socket afterwards."""
    rst = struct.pack("ii", 1, 0)
    with AsyncEchoServer() as upstream:
        r = Running("--listen", "127.0.0.1:0", "--upstream", upstream.address, "--no-api")
        running.append(r)
        address = r.address()
        pid = r.proc.pid
        base_sockets, _ = _fds(pid)
        deadline = time.monotonic() + 60  # bound; normally a few seconds
        total = 0
        batch = 250
        while total < 10_000:
            assert time.monotonic() < deadline, f"only {total} connections in 60 s"
            socks = [socket.create_connection(address, timeout=10) for _ in range(batch)]
            for i, s in enumerate(socks):
                if i % 5:
                    s.sendall(b"ping")
            for i, s in enumerate(socks):
                kind = i % 5
                if kind in (1, 2):
                    assert s.recv(16) == b"ping"
                if kind in (2, 3):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, rst)
                s.close()  # kind 0: no data; 1: polite; 2, 3: RST; 4: unread reply
            total += batch
        while time.monotonic() < deadline and _fds(pid)[0] > base_sockets:
            time.sleep(0.05)
        sockets, pipes = _fds(pid)
        assert sockets == base_sockets, f"{sockets - base_sockets} sockets leaked"
        assert pipes <= 64  # the splice pipe pool is bounded
        with socket.create_connection(address, timeout=5) as s:
            s.sendall(b"still alive")
            assert s.recv(100) == b"still alive"
        assert r.stop() == 0
