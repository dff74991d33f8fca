"""websockets (asyncio and sync clients) against the loopback fault server: each research
record reproduced, then classified."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._records import Record, check_record, records_for
from ._servers import FaultHTTPServer, LoopThread

PATH = {
    "a-rst-before-response": "/ws/rst",
    "b-fin-before-response": "/ws/fin",
    "c-rst-mid-message": "/ws/rst-mid",
    "c2-fin-mid-message": "/ws/fin-mid",
    "f-fin-no-close-frame": "/ws/fin-idle",
}


@pytest.fixture
def server() -> Iterator[FaultHTTPServer]:
    with FaultHTTPServer() as srv:
        yield srv


def asyncio_scenario(url: str, loop: LoopThread) -> BaseException | None:
    from websockets.asyncio.client import connect

    async def scenario() -> BaseException | None:
        try:
            async with connect(url, open_timeout=2, close_timeout=0.5) as ws:
                await ws.recv()
        except Exception as exc:
            return exc
        return None

    return loop.run(scenario())


def sync_scenario(url: str) -> BaseException | None:
    from websockets.sync.client import connect

    try:
        with connect(url, open_timeout=2, close_timeout=0.5) as ws:
            ws.recv(timeout=2)
    except Exception as exc:
        return exc
    return None


@pytest.mark.parametrize(
    "record", records_for("websockets-asyncio-connect", "websockets-sync-connect")
)
def test_websockets_record(
    record: Record, server: FaultHTTPServer, loop_thread: LoopThread
) -> None:
    url = f"ws://127.0.0.1:{server.port}{PATH[record['fault']]}"
    if record["driver_key"] == "websockets-asyncio-connect":
        exc = asyncio_scenario(url, loop_thread)
    else:
        exc = sync_scenario(url)
    check_record(record, exc)
    if record["exception"] == "websockets.exceptions.ConnectionClosedError":
        assert exc is not None
        cause = "ConnectionResetError" if record["errno_name"] == "ECONNRESET" else "EOFError"
        assert type(exc.__cause__).__name__ == cause
