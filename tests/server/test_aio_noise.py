"""quiet_resets(): real resets from real loops are counted, not printed; other errors are."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

import resetguard
from resetguard import NoiseSuppressed
from resetguard._classify import Kind, classify
from resetguard.aio import AsyncioLogFilter, ThreadResetHook, quiet_resets, reset_noise

DEAD_WRITE_LINES = ("socket.send() raised exception.", "SSL connection is closed")


@pytest.fixture
def asyncio_log() -> Iterator[io.StringIO]:
    """Everything the ``asyncio`` logger prints, tracebacks included."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate made with the openssl CLI, for a loopback TLS server."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    client.check_hostname = False
    return server, client


def _rst_client(port: int, tls: ssl.SSLContext | None = None, read_first: bool = True) -> None:
    """Connect, read a little, then leave with an RST (SO_LINGER 0)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock: socket.socket = tls.wrap_socket(raw) if tls is not None else raw
    if read_first:
        sock.recv(100)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _run(main: Callable[[], Coroutine[Any, Any, None]], loop_kind: str) -> None:
    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


async def _writer_server(
    tls: ssl.SSLContext | None, tls_client: ssl.SSLContext | None, writes: int = 300
) -> None:
    """A server that keeps writing to a client that has reset: the classic log flood."""
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(writes):
                writer.write(b"x" * 1000)
                await asyncio.sleep(0.001)
        finally:
            done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    await asyncio.to_thread(_rst_client, port, tls_client)
    await asyncio.wait_for(done.wait(), 30)
    server.close()
    await server.wait_closed()


def _dead_lines(log: io.StringIO) -> int:
    return sum(log.getvalue().count(line) for line in DEAD_WRITE_LINES)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_writes_to_a_dead_connection_print_nothing(
    asyncio_log: io.StringIO, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext], tls: bool
) -> None:
    server_ctx, client_ctx = tls_contexts if tls else (None, None)
    # Control: without resetguard the loop floods the log.
    asyncio.run(_writer_server(server_ctx, client_ctx))
    flood = _dead_lines(asyncio_log)
    assert flood > 50
    asyncio_log.truncate(0)
    asyncio_log.seek(0)

    quiet = quiet_resets()

    async def main() -> None:
        with quiet:
            await _writer_server(server_ctx, client_ctx)

    asyncio.run(main())
    assert _dead_lines(asyncio_log) == 0
    assert quiet.counter.counts.get("asyncio.log", 0) > 50


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_reset_in_client_connected_cb_is_counted_not_printed(
    asyncio_log: io.StringIO, loop_kind: str
) -> None:
    seen: list[resetguard.Event] = []
    quiet = quiet_resets()

    async def main() -> None:
        done = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(b"hello")
                await writer.drain()
                await asyncio.sleep(0.2)  # the client resets meanwhile
                for _ in range(50):  # asyncio: ConnectionResetError; uvloop: RuntimeError
                    writer.write(b"x" * 1000)
                    await writer.drain()
                    await reader.read(100)
            finally:
                done.set()

        with quiet:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            await asyncio.to_thread(_rst_client, port)
            await asyncio.wait_for(done.wait(), 10)
            await asyncio.sleep(0.05)  # the handler's task ends and reports
            server.close()
            await server.wait_closed()

    resetguard.add_hook(seen.append)
    try:
        _run(main, loop_kind)
    finally:
        resetguard.remove_hook(seen.append)
    assert "Unhandled exception" not in asyncio_log.getvalue()
    assert "Traceback" not in asyncio_log.getvalue()
    assert quiet.counter.counts.get("asyncio.handler") == 1
    noise = [e for e in seen if isinstance(e, NoiseSuppressed)]
    assert [e.name for e in noise] == ["asyncio.handler"]
    assert noise[0].message == "Unhandled exception in client_connected_cb"
    assert noise[0].failure is not None
    assert noise[0].failure.kind in (Kind.RESET, Kind.BROKEN_PIPE, Kind.CLOSED)


def test_reset_task_never_retrieved_is_counted(asyncio_log: io.StringIO) -> None:
    quiet = quiet_resets()

    async def main() -> None:
        with quiet:
            accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

            async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await accepted.put(writer)

            server = await asyncio.start_server(keep, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            server_writer = await asyncio.wait_for(accepted.get(), 10)

            async def read_it() -> bytes:
                return await reader.read(100)

            task = asyncio.ensure_future(read_it())
            await asyncio.sleep(0.02)
            # The server resets the connection: the client's pending read raises.
            ssock = server_writer.get_extra_info("socket")
            ssock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            server_writer.transport.abort()
            await asyncio.wait([task], timeout=10)
            assert task.done()
            del task  # nobody retrieves its ConnectionResetError
            gc.collect()
            writer.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    assert "Task exception was never retrieved" not in asyncio_log.getvalue()
    assert "Traceback" not in asyncio_log.getvalue()
    assert quiet.counter.counts == {"asyncio.handler": 1}


def test_a_non_reset_error_is_still_printed(asyncio_log: io.StringIO) -> None:
    quiet = quiet_resets()

    async def main() -> None:
        done = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                raise ValueError("a real bug")
            finally:
                done.set()

        with quiet:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(done.wait(), 10)
            await asyncio.sleep(0.05)
            writer.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    text = asyncio_log.getvalue()
    assert "Unhandled exception in client_connected_cb" in text
    assert "ValueError: a real bug" in text
    assert quiet.counter.total == 0


def test_a_custom_handler_still_gets_other_errors() -> None:
    got: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: got.append(context))
        with quiet_resets():
            loop.call_exception_handler({"message": "x", "exception": KeyError("k")})
            loop.call_exception_handler(
                {"message": "y", "exception": ConnectionResetError(104, "Connection reset by peer")}
            )
        assert loop.get_exception_handler() is not None  # the user's handler is back
        loop.call_exception_handler({"message": "z", "exception": BrokenPipeError(32, "x")})

    asyncio.run(main())
    assert [c["message"] for c in got] == ["x", "z"]


def _peer_reset_socket() -> tuple[socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=10)
    server, _ = listener.accept()
    listener.close()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()  # RST to the client
    return client, server


def test_thread_dying_of_a_reset_is_counted_others_are_printed() -> None:
    client, _ = _peer_reset_socket()

    def dies_of_reset() -> None:
        import time

        time.sleep(0.05)
        client.recv(100)  # ConnectionResetError, from the kernel

    def dies_of_bug() -> None:
        raise KeyError("real bug")

    printed: list[str] = []
    before = threading.excepthook
    # The hook in place before quiet_resets() (the default one prints the traceback).
    threading.excepthook = lambda args: printed.append(f"{args.thread.name}: {args.exc_value!r}")
    try:
        with quiet_resets() as quiet:
            for target in (dies_of_reset, dies_of_bug):
                thread = threading.Thread(target=target, name=target.__name__)
                thread.start()
                thread.join(10)
    finally:
        threading.excepthook = before
    client.close()
    assert printed == ["dies_of_bug: KeyError('real bug')"]
    assert quiet.counter.counts == {"threading": 1}


def test_everything_is_restored_on_exit() -> None:
    before_hook = threading.excepthook
    filters_before = list(logging.getLogger("asyncio").filters)
    with quiet_resets():
        assert isinstance(threading.excepthook, ThreadResetHook)
        assert any(isinstance(f, AsyncioLogFilter) for f in logging.getLogger("asyncio").filters)
    assert threading.excepthook is before_hook
    assert logging.getLogger("asyncio").filters == filters_before


def test_filter_keeps_unrelated_records() -> None:
    flt = AsyncioLogFilter()
    keep = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "boom %s", ("x",), None)
    assert flt.filter(keep) is True
    odd = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, {"a": 1}, None, None)
    assert flt.filter(odd) is True  # a non-string message does not break the filter
    try:
        raise TimeoutError("slow")
    except TimeoutError:
        info = sys.exc_info()
    timeout = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "t", None, info)
    assert flt.filter(timeout) is True  # timeouts are real problems: never hidden
    assert flt.counter.total == 0


@pytest.mark.parametrize("bad", [{"handler": 1}, {"loop": "loop"}])
def test_bad_arguments_are_named(bad: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="must be"):
        quiet_resets(**bad)


# --------------------------------------------------------------------- classify additions

UVLOOP_TEXT = (
    "unable to perform operation on <TCPTransport closed=True reading=False 0x7f>; "
    "the handler is closed"
)


def test_uvloop_closed_handler_runtime_error_is_a_closed_connection() -> None:
    failure = classify(RuntimeError(UVLOOP_TEXT))
    assert failure is not None
    assert failure.kind is Kind.CLOSED
    assert failure.source == "uvloop"
    assert reset_noise(RuntimeError(UVLOOP_TEXT)) is not None


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("boom"),
        RuntimeError(),
        RuntimeError("the handler is closed"),
        RuntimeError(UVLOOP_TEXT, "extra"),
        RuntimeError(UVLOOP_TEXT + " and more"),
        type("MyError", (RuntimeError,), {})(UVLOOP_TEXT),  # a subclass: not uvloop's
    ],
)
def test_other_runtime_errors_are_still_none(exc: RuntimeError) -> None:
    assert classify(exc) is None
    assert reset_noise(exc) is None


def test_incomplete_read_error_is_a_closed_connection() -> None:
    failure = reset_noise(asyncio.IncompleteReadError(b"ab", 10))
    assert failure is not None
    assert failure.kind is Kind.CLOSED


def test_real_uvloop_error_text_matches(tmp_path: Path) -> None:
    """The wording comes from uvloop itself: provoke it and classify what it raises."""
    import uvloop

    caught: list[BaseException] = []

    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.abort()
        await asyncio.sleep(0.01)
        try:
            writer.transport.pause_reading()
            writer.transport.get_write_buffer_size()
            writer.transport.set_write_buffer_limits(10)
        except RuntimeError as exc:
            caught.append(exc)
        server.close()

    uvloop.run(main())
    assert caught, "uvloop no longer raises on a closed transport"
    assert classify(caught[0]) is not None
