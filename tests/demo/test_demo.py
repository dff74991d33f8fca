"""`resetguard demo`: the main job, run for real against its local servers."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from resetguard.cli import main
from resetguard.demo import FlakyServer


def _get(
    port: int, sock: socket.socket | None = None, path: str = "/x"
) -> tuple[socket.socket, bytes]:
    if sock is None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return sock, data


def test_flaky_server_closes_idle_connections() -> None:
    with FlakyServer(idle_close=0.1) as server:
        sock, first = _get(server.port)
        assert first.startswith(b"HTTP/1.1 200")
        time.sleep(0.3)
        sock.settimeout(2)
        assert sock.recv(10) == b""  # FIN after 100 ms idle
        sock.close()
        assert server.stats.idle_closes == 1


def test_flaky_server_makes_the_keepalive_race_happen() -> None:
    """A request sent 80 ms into a 100 ms idle window 'arrives' 30 ms late and loses."""
    with FlakyServer(idle_close=0.1, lateness=0.03) as server:
        sock, _ = _get(server.port)
        time.sleep(0.08)
        sock.sendall(b"GET /y HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(2)
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        sock.close()
        assert data == b""
        assert server.stats.race_hits == 1


def test_flaky_server_dedups_idempotency_keys_and_counts_duplicates() -> None:
    with FlakyServer() as server:
        for key in ("", "", "k1", "k1"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                headers = (
                    "X-Request-Id: r1\r\n"
                    if not key
                    else f"X-Request-Id: {key}\r\nIdempotency-Key: {key}\r\n"
                )
                s.sendall(f"POST /orders HTTP/1.1\r\n{headers}Content-Length: 0\r\n\r\n".encode())
                assert s.recv(100).startswith(b"HTTP/1.1 200")
        assert server.stats.executed["r1"] == 2
        assert server.stats.executed["k1"] == 1
        assert server.stats.duplicates() == 1


def test_flaky_server_restart_refuses_then_serves() -> None:
    with FlakyServer() as server:
        port = server.port
        server.down()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        server.up()
        sock, data = _get(port)
        sock.close()
        assert data.startswith(b"HTTP/1.1 200")
        assert server.port == port


def test_flaky_server_stops_its_threads() -> None:
    before = threading.active_count()
    with FlakyServer(idle_close=5) as server:
        socks = [_get(server.port)[0] for _ in range(3)]
    for s in socks:
        s.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


@pytest.fixture(scope="module")
def demo_json() -> dict[str, Any]:
    pytest.importorskip("httpx")
    out = subprocess.run(
        [sys.executable, "-m", "resetguard.cli", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_demo_numbers(demo_json: dict[str, Any]) -> None:
    scenarios = {s["key"]: {c["client"]: c for c in s["clients"]} for s in demo_json["scenarios"]}
    assert set(scenarios) == {"idle", "rst", "restart", "outage"}
    assert demo_json["elapsed_s"] < 60
    for key, clients in scenarios.items():
        rg, plain, naive = clients["resetguard"], clients["httpx"], clients["httpx + naive retry"]
        assert rg["duplicated_posts"] == 0, key  # never duplicate a write
        assert rg["requests"] == plain["requests"] == naive["requests"]
        assert rg["errors"] <= plain["errors"], key
    # the race really happened against the plain client, and reached its caller
    assert scenarios["idle"]["httpx"]["keepalive_race_hits"] > 0
    assert scenarios["idle"]["httpx"]["errors"] > 0
    assert scenarios["idle"]["resetguard"]["errors"] == 0
    # resets and a restart: the only errors that surface are POSTs without an
    # Idempotency-Key that may have run (outcome unknown): everything else was absorbed
    for key in ("rst", "restart"):
        rg = scenarios[key]["resetguard"]
        assert rg["errors"] == rg["errors_on_unkeyed_posts"], key
        assert rg["errors"] < scenarios[key]["httpx"]["errors"], key
    # a dead dependency: resetguard sends less than one request per call, the naive loop three
    outage = scenarios["outage"]
    assert outage["httpx + naive retry"]["server_attempts_per_request"] == pytest.approx(3.0)
    assert outage["resetguard"]["server_attempts_per_request"] < 1.0


def test_demo_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--scenario", "nope"])
    assert info.value.code == 2
    assert "nope" in capsys.readouterr().err


def test_demo_human_report(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("httpx")
    assert main(["demo", "--scenario", "rst", "--scenario", "outage"]) == 0
    out = capsys.readouterr().out
    assert "dup POSTs" in out
    assert out.count("resetguard ") >= 2  # one row per scenario
    assert "While the servers lived:" in out
    assert "Load sent to the dead dependency per request:" in out
    assert "every server stopped" in out


_README = Path(__file__).resolve().parents[2] / "README.md"
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?: (?:ms|s)\b)?")  # counts, ratios and durations


def _shape(text: str) -> list[str]:
    """Each line with its numbers replaced and spaces collapsed: what stays from run to run."""
    return [" ".join(_NUMBER.sub("N", line).split()) for line in text.rstrip("\n").split("\n")]


def _readme_sample() -> str:
    text = _README.read_text(encoding="utf-8")
    start = text.index("```\n$ resetguard demo\n") + len("```\n$ resetguard demo\n")
    return text[start : text.index("```", start)]


def test_shape_tells_a_changed_line_from_changed_numbers() -> None:
    assert _shape("Done in 22.5 s; every server stopped.") == _shape(
        "Done in 9 s; every server stopped."
    )
    assert _shape("resetguard  0/30  1.12 s") == _shape("resetguard  9/30 982.0 ms")
    assert _shape("- server restart (refuses)") != _shape("- server restart (refused)")
    assert _shape("a\n\nb") != _shape("a\nb")


@pytest.mark.slow
def test_readme_sample_is_shaped_like_a_real_run() -> None:
    pytest.importorskip("httpx")
    # What a terminal shows: stdout and stderr (the scenario lines) in the order written.
    run = subprocess.run(
        [sys.executable, "-m", "resetguard.cli", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=True,
    )
    real = _shape(run.stdout)
    assert any(line.startswith("- stale keep-alive") for line in real)  # stderr was captured
    assert _shape(_readme_sample()) == real
