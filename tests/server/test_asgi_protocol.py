"""CancelOnDisconnect against the ASGI protocol's edge cases, driven by plain ASGI callables:
a server whose send() raises (ASGI 2.4), whose receive() fails, and receive() after the end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from resetguard import ClientDisconnected
from resetguard.asgi import CancelOnDisconnect, current_disconnect

SCOPE = {"type": "http", "method": "GET", "path": "/x", "client": ("127.0.0.1", 5555)}


def test_send_raising_connection_reset_cancels_and_reports() -> None:
    events: list[ClientDisconnected] = []
    ran: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for _ in range(100):
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
                await asyncio.sleep(0.01)
        finally:
            gone = current_disconnect()
            ran.append(f"cleanup {gone is not None and gone.is_set()}")

    async def main() -> None:
        sent = 0

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(30)  # the client never says anything
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            nonlocal sent
            sent += 1
            if sent > 3:  # what an ASGI 2.4 server does on a dead connection
                raise ConnectionResetError(104, "Connection reset by peer")

        mw = CancelOnDisconnect(app, on_disconnect=events.append)
        await asyncio.wait_for(mw(dict(SCOPE), receive, send), 5)

    asyncio.run(main())
    assert ran == ["cleanup True"]
    (event,) = events
    assert event.reason == "send_failed"
    assert event.how == "rst"
    assert event.cancelled is True
    assert event.failure is not None
    assert event.failure.kind.value == "reset"


def test_receive_failure_reaches_the_app_unchanged() -> None:
    seen: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.01)  # the watcher is running by now
        try:
            await receive()
        except RuntimeError as exc:
            seen.append(exc)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            raise RuntimeError("server bug")

        async def send(message: Any) -> None:
            return None

        await asyncio.wait_for(CancelOnDisconnect(app)(dict(SCOPE), receive, send), 5)

    asyncio.run(main())
    assert [str(e) for e in seen] == ["server bug"]


def test_receive_after_the_response_returns_the_servers_disconnect() -> None:
    got: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        await asyncio.sleep(0.01)
        got.append((await receive())["type"])  # must not hang

    async def main() -> None:
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            return {"type": "http.disconnect"}  # uvicorn does this once the response is sent

        async def send(message: Any) -> None:
            return None

        events: list[ClientDisconnected] = []
        mw = CancelOnDisconnect(app, on_disconnect=events.append)
        await asyncio.wait_for(mw(dict(SCOPE), receive, send), 5)
        assert events == []  # a completed response is not a client disconnect

    asyncio.run(main())
    assert got == ["http.disconnect"]


def test_server_cancellation_is_not_swallowed() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(30)

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            await asyncio.sleep(30)
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            return None

        task = asyncio.ensure_future(CancelOnDisconnect(app)(dict(SCOPE), receive, send))
        await asyncio.sleep(0.02)
        task.cancel()  # the server shutting down
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
