"""Every ```python block of docs/server.md runs; the apps it defines are served by a real
uvicorn and do what the page says when a real client hangs up."""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import resetguard
from resetguard import ClientDisconnected

from ._servers import ServerThread

PAGE = Path(__file__).resolve().parents[2] / "docs" / "server.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


@pytest.fixture
def events() -> Iterator[list[ClientDisconnected]]:
    seen: list[Any] = []
    resetguard.add_hook(seen.append)
    try:
        yield seen  # type: ignore[misc]
    finally:
        resetguard.remove_hook(seen.append)


def _run_block(index: int) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"docs_server_{index}"}
    exec(compile(BLOCKS[index], f"docs/server.md[{index}]", "exec"), namespace)
    return namespace


def _block_with(text: str) -> int:
    return next(i for i, block in enumerate(BLOCKS) if text in block)


def _hang_up_during(port: int, path: str, after: float = 0.15) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"{path} HTTP/1.1\r\nHost: docs\r\n\r\n".encode())
    time.sleep(after)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _disconnects(events: list[Any], path: str) -> list[ClientDisconnected]:
    return [e for e in events if isinstance(e, ClientDisconnected) and e.path == path]


def test_the_page_has_every_recipe() -> None:
    assert len(BLOCKS) >= 8
    for name in ("CancelOnDisconnect", "quiet_resets", "serve(", "instrument(", "stream("):
        assert any(name in block for block in BLOCKS), name


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_block_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    _run_block(index)


def test_report_example_stops_and_cleans_up(events: list[Any]) -> None:
    ns = _run_block(_block_with("/report"))
    with ServerThread("uvicorn-httptools", ns["app"]) as srv:
        _hang_up_during(srv.port, "GET /report")
        assert _wait(lambda: ns["done"] == ["cleaned up"], 2.0)
    (event,) = _disconnects(events, "GET /report")
    assert event.cancelled is True
    assert event.how == "rst"


def test_sync_export_example_sees_the_flag(events: list[Any]) -> None:
    ns = _run_block(_block_with("/export"))
    with ServerThread("uvicorn-httptools", ns["app"]) as srv:
        _hang_up_during(srv.port, "GET /export")
        assert _wait(lambda: bool(_disconnects(events, "GET /export")))
    assert _disconnects(events, "GET /export")[0].cancelled is True


def test_download_example_closes_the_generator() -> None:
    ns = _run_block(_block_with("/download"))
    with ServerThread("uvicorn-h11", ns["app"]) as srv:
        _hang_up_during(srv.port, "GET /download")
        assert _wait(lambda: ns["closed"] == ["cursor closed"], 2.0)


def test_opt_in_example_cancels_only_search(events: list[Any]) -> None:
    ns = _run_block(_block_with("@cancel_on_disconnect"))
    with ServerThread("uvicorn-httptools", ns["app"]) as srv:
        _hang_up_during(srv.port, "GET /search?q=x", after=0.1)
        _hang_up_during(srv.port, "POST /payments", after=0.02)
        assert _wait(
            lambda: (
                bool(_disconnects(events, "GET /search"))
                and bool(_disconnects(events, "POST /payments"))
            )
        )
    assert _disconnects(events, "GET /search")[0].cancelled is True
    assert _disconnects(events, "POST /payments")[0].cancelled is False


def test_quiet_resets_example_counts_instead_of_printing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _run_block(_block_with("quiet_resets() as quiet"))
    out = capsys.readouterr()
    assert "'asyncio.log'" in out.out
    assert "socket.send() raised exception." not in out.err


def test_serve_example_counts_a_clean_session(capsys: pytest.CaptureFixture[str]) -> None:
    _run_block(_block_with("await serve(echo"))
    assert capsys.readouterr().out.splitlines() == ["b'ping\\n'", "1"]


def test_socketio_example_describes_the_heartbeat(capsys: pytest.CaptureFixture[str]) -> None:
    ns = _run_block(_block_with("instrument(sio)"))
    out = capsys.readouterr().out
    assert "a frozen peer is noticed after 5-15s" in out
    assert ns["probe"].reasons == {}
