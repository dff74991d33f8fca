"""resetguard.aio.serve(): real clients, real resets, every outcome counted, nothing leaked."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import struct
from typing import Any

import pytest

import resetguard
from resetguard import ClientDisconnected
from resetguard.aio import OUTCOMES, serve


def _open_sockets() -> int:
    return sum(1 for fd in os.listdir("/proc/self/fd") if _link(fd).startswith("socket:"))


def _link(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def test_200_concurrent_clients_a_third_reset() -> None:
    events: list[resetguard.Event] = []

    async def main() -> dict[str, Any]:
        sockets_before = _open_sockets()
        tasks_before = len(asyncio.all_tasks())
        all_echoed = asyncio.Event()
        echoed = 0

        async def client(i: int, port: int) -> None:
            nonlocal echoed
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"hello {i}\n".encode())
            await writer.drain()
            assert await reader.readline() == f"hello {i}\n".encode()
            echoed += 1
            if echoed == 200:
                all_echoed.set()
            await asyncio.wait_for(all_echoed.wait(), 30)  # all 200 are connected at once
            if i % 3 == 0:
                _rst(writer)
            else:
                writer.close()
            await writer.wait_closed()

        server = await serve(echo, "127.0.0.1", 0, backlog=256)
        async with server:
            await asyncio.wait_for(
                asyncio.gather(*(client(i, server.port) for i in range(200))), 60
            )
            for _ in range(500):  # the server sees the last ends a moment later
                if sum(server.outcomes.values()) == 200:
                    break
                await asyncio.sleep(0.01)
            peak = server.peak_active
        await asyncio.sleep(0)
        gc.collect()
        return {
            "outcomes": dict(server.outcomes),
            "peak": peak,
            "active": server.active,
            "leaked_tasks": len(asyncio.all_tasks()) - tasks_before,
            "leaked_sockets": _open_sockets() - sockets_before,
        }

    resetguard.add_hook(events.append)
    try:
        result = asyncio.run(main())
    finally:
        resetguard.remove_hook(events.append)
    assert result["peak"] == 200
    assert result["outcomes"] == {**dict.fromkeys(OUTCOMES, 0), "clean": 133, "reset": 67}
    assert result["active"] == 0
    assert result["leaked_tasks"] == 0
    assert result["leaked_sockets"] == 0
    ends = [e for e in events if isinstance(e, ClientDisconnected)]
    assert len(ends) == 67
    assert {(e.name, e.reason, e.how) for e in ends} == {("tcp", "reset", "rst")}


def test_idle_and_total_timeouts() -> None:
    async def main() -> dict[str, int]:
        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await echo(reader, writer)

        async with await serve(slow, idle_timeout=0.3, total_timeout=1.5) as server:

            async def silent() -> bytes:
                r, w = await asyncio.open_connection("127.0.0.1", server.port)
                try:
                    return await asyncio.wait_for(r.read(), 5)  # b"": closed by the server
                finally:
                    w.close()

            async def chatty() -> int:
                # Talks every 0.1 s, never idle, but outlives total_timeout.
                r, w = await asyncio.open_connection("127.0.0.1", server.port)
                answered = 0
                try:
                    for _ in range(40):
                        w.write(b"tick\n")
                        await w.drain()
                        if not await asyncio.wait_for(r.readline(), 5):
                            break
                        answered += 1
                        await asyncio.sleep(0.1)
                except ConnectionError:
                    pass
                finally:
                    w.close()
                return answered

            silent_got, answered = await asyncio.gather(silent(), chatty())
            assert silent_got == b""
            assert 5 < answered < 40
            for _ in range(300):
                if sum(server.outcomes.values()) == 2:
                    break
                await asyncio.sleep(0.01)
            return dict(server.outcomes)

    outcomes = asyncio.run(main())
    assert outcomes["idle_timeout"] == 1
    assert outcomes["timeout"] == 1


def test_peer_closing_mid_message_and_handler_errors(caplog: pytest.LogCaptureFixture) -> None:
    async def needs_ten(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(10)
        if data == b"0123456789":
            raise ValueError("a real bug")

    async def main() -> dict[str, int]:
        async with await serve(needs_ten) as server:
            for payload in (b"01234", b"0123456789"):
                _, w = await asyncio.open_connection("127.0.0.1", server.port)
                w.write(payload)
                await w.drain()
                w.close()  # FIN after 5 bytes: IncompleteReadError on the server
                await w.wait_closed()
            for _ in range(300):
                if sum(server.outcomes.values()) == 2:
                    break
                await asyncio.sleep(0.01)
            return dict(server.outcomes)

    with caplog.at_level(logging.ERROR, logger="resetguard.aio.serve"):
        outcomes = asyncio.run(main())
    assert outcomes["closed"] == 1
    assert outcomes["error"] == 1
    errors = [r for r in caplog.records if r.name == "resetguard.aio.serve"]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "a real bug" in str(errors[0].exc_info[1])


def test_graceful_shutdown_waits_then_cancels() -> None:
    async def main() -> tuple[dict[str, int], list[str]]:
        log: list[str] = []

        async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            what = await reader.readline()
            try:
                await asyncio.sleep(0.1 if what == b"quick\n" else 30)
                writer.write(b"done\n")
                await writer.drain()
            finally:
                log.append(what.decode().strip())

        server = await serve(worker)
        clients = []
        for what in (b"quick\n", b"stuck\n"):
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(what)
            await w.drain()
            clients.append((r, w))
        await asyncio.sleep(0.05)
        await server.shutdown(grace=0.5)
        assert await clients[0][0].readline() == b"done\n"  # finished within the grace
        assert await clients[1][0].read() == b""  # closed after it
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
        for _, w in clients:
            w.close()
        return dict(server.outcomes), log

    outcomes, log = asyncio.run(main())
    assert outcomes["clean"] == 1
    assert outcomes["shutdown"] == 1
    assert sorted(log) == ["quick", "stuck"]  # the cancelled one ran its cleanup


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"idle_timeout": 0}, "idle_timeout must be a number of seconds > 0 or None, got 0"),
        ({"total_timeout": -1}, "total_timeout must be a number of seconds > 0 or None, got -1"),
        ({"port": 70000}, "port must be an int from 0 to 65535, got 70000"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        asyncio.run(serve(echo, **kwargs))


def test_sync_handler_is_refused() -> None:
    def not_async(reader: Any, writer: Any) -> None:
        return None

    with pytest.raises(TypeError, match="handler must be an async function"):
        asyncio.run(serve(not_async))  # type: ignore[arg-type]
