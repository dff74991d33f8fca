"""CancelOnDisconnect under real servers (uvicorn h11/httptools/uvloop, hypercorn, granian)
with real Starlette and FastAPI apps and real sockets closed by FIN and by RST."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import logging
import os
import socket
import statistics
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from resetguard import ClientDisconnected
from resetguard._monitor import Monitor
from resetguard.asgi import CancelOnDisconnect, DisconnectSignal, current_disconnect, stream

from ._apps import RECORDS, STEPS, Record, fastapi_app, starlette_app
from ._servers import SERVERS, ServerThread

# The target is 5 ms; the bound asserted here holds on a loaded 2-core machine and
# is still 4x shorter than the 2 s the handlers run when nothing stops them.
STOP_BOUND = 0.5
LATENCIES: dict[str, list[float]] = {}


class Served:
    def __init__(self, srv: ServerThread, events: list[ClientDisconnected]) -> None:
        self.srv = srv
        self.events = events
        self.port = srv.port
        self.kind = srv.kind


def _serve(kind: str, app: Any) -> Iterator[Served]:
    events: list[ClientDisconnected] = []
    wrapped = CancelOnDisconnect(app, on_disconnect=events.append)
    with ServerThread(kind, wrapped) as srv:
        yield Served(srv, events)


@pytest.fixture(scope="module", params=SERVERS)
def starlette_server(request: pytest.FixtureRequest) -> Iterator[Served]:
    yield from _serve(request.param, starlette_app())


@pytest.fixture(scope="module", params=["uvicorn-httptools", "hypercorn", "granian"])
def fastapi_server(request: pytest.FixtureRequest) -> Iterator[Served]:
    yield from _serve(request.param, fastapi_app())


def _start(port: int, path: str) -> tuple[socket.socket, Record, str]:
    key = uuid.uuid4().hex
    rec = RECORDS.get(key)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sep = "&" if "?" in path else "?"
    sock.sendall(f"GET {path}{sep}id={key} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    assert rec.started.wait(10), "the handler never started"
    time.sleep(0.1)  # let it work a few steps
    return sock, rec, key


_HALF_CLOSED: list[socket.socket] = []


def _hang_up(sock: socket.socket, how: str) -> float:
    """FIN: shut down the sending side (a close() with unread response bytes in the buffer
    would make the kernel send an RST instead). RST: SO_LINGER 0, then close."""
    if how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t0 = time.monotonic()
        sock.close()
        return t0
    t0 = time.monotonic()
    sock.shutdown(socket.SHUT_WR)
    _HALF_CLOSED.append(sock)
    return t0


@pytest.fixture(autouse=True)
def _close_half_closed() -> Iterator[None]:
    yield
    while _HALF_CLOSED:
        _HALF_CLOSED.pop().close()


def _ping(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b"pong"
    finally:
        conn.close()


def _wait_event(events: list[ClientDisconnected], key: str) -> ClientDisconnected:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for event in list(events):
            if key in event.path or key in event.peer:
                return event
        time.sleep(0.005)
    raise AssertionError("no ClientDisconnected event")


def _check_stopped(
    served: Served,
    sock: socket.socket,
    rec: Record,
    how: str,
    label: str,
    *,
    socket_seen: bool = True,
) -> None:
    port = sock.getsockname()[1]
    t0 = _hang_up(sock, how)
    assert rec.cleaned.wait(10), "cleanup never ran"
    latency = rec.cleaned_at - t0
    LATENCIES.setdefault(f"{label}/{how}", []).append(latency)
    assert latency < STOP_BOUND, f"stopped {latency * 1000:.1f} ms after the hang-up"
    assert rec.steps < STEPS // 2, f"{rec.steps} steps ran"  # 200 / 1000 steps when not stopped
    event = _wait_event(served.events, f":{port}")
    assert event.name == "asgi"
    assert event.reason == "disconnect"
    assert event.cancelled is True
    assert event.elapsed is not None
    assert 0.05 < event.elapsed < 5
    if served.kind.startswith("uvicorn") and socket_seen:
        assert event.how == how  # uvicorn lets the middleware see the socket
    else:
        assert event.how == ""  # unknown, and not guessed
    _ping(served.port)  # the server keeps serving


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("path", ["/async", "/sync", "/stream", "/astream"])
def test_starlette_handler_stops_when_client_leaves(
    starlette_server: Served, path: str, how: str
) -> None:
    sock, rec, _ = _start(starlette_server.port, path)
    _check_stopped(starlette_server, sock, rec, how, f"{starlette_server.kind}{path}")
    if path != "/astream":
        assert rec.saw_signal  # the handler's own code saw the disconnect signal


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("path", ["/async", "/sync", "/stream", "/opted"])
def test_fastapi_handler_stops_when_client_leaves(
    fastapi_server: Served, path: str, how: str
) -> None:
    sock, rec, _ = _start(fastapi_server.port, path)
    _check_stopped(fastapi_server, sock, rec, how, f"fastapi-{fastapi_server.kind}{path}")


def test_without_the_middleware_the_work_runs_for_nobody() -> None:
    # The fact the middleware exists for: the server does not stop the handler itself.
    with ServerThread("uvicorn-httptools", starlette_app()) as srv:
        key = uuid.uuid4().hex
        rec = RECORDS.get(key)
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        sock.sendall(f"GET /short?id={key} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert rec.started.wait(10)
        _hang_up(sock, "rst")
        assert rec.cleaned.wait(10)
        assert rec.steps == 30


def _post(port: int, body: bytes, *, chunked: bool) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        if chunked:
            pieces = iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
            conn.request("POST", "/echo", body=pieces, encode_chunked=True)
        else:
            conn.request("POST", "/echo", body=body)
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())  # type: ignore[no-any-return]
    finally:
        conn.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_request_body_reaches_the_app_untouched(starlette_server: Served, chunked: bool) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)  # larger than max_buffer: read-ahead pauses
    answer = _post(starlette_server.port, body, chunked=chunked)
    assert answer == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}


def test_fastapi_body_untouched(fastapi_server: Served) -> None:
    body = os.urandom(200_000)
    answer = _post(fastapi_server.port, body, chunked=False)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()


def test_completed_requests_emit_nothing(starlette_server: Served) -> None:
    before = len(starlette_server.events)
    for _ in range(5):
        _ping(starlette_server.port)
    assert len(starlette_server.events) == before


# --------------------------------------------------------------------- BaseHTTPMiddleware


class _Passthrough:
    """A BaseHTTPMiddleware subclass that does nothing but call the next app."""

    @staticmethod
    def make() -> Any:
        from starlette.middleware import Middleware
        from starlette.middleware.base import BaseHTTPMiddleware

        class Pass(BaseHTTPMiddleware):
            async def dispatch(self, request: Any, call_next: Any) -> Any:
                return await call_next(request)

        return Middleware(Pass)


@pytest.mark.parametrize("position", ["outside", "inside"])
@pytest.mark.parametrize("path", ["/async", "/sync", "/stream"])
def test_works_with_base_http_middleware(position: str, path: str) -> None:
    from starlette.middleware import Middleware

    events: list[ClientDisconnected] = []
    if position == "outside":  # ours wraps an app that uses BaseHTTPMiddleware
        app = CancelOnDisconnect(starlette_app([_Passthrough.make()]), on_disconnect=events.append)
    else:  # ours is registered inside the app, behind a BaseHTTPMiddleware
        app = starlette_app(
            [
                _Passthrough.make(),
                Middleware(CancelOnDisconnect, on_disconnect=events.append),
            ]
        )
    with ServerThread("uvicorn-httptools", app) as srv:
        served = Served(srv, events)
        sock, rec, _ = _start(srv.port, path)
        _check_stopped(
            served,
            sock,
            rec,
            "rst",
            f"basehttp-{position}{path}",
            socket_seen=position == "outside",  # a wrapped receive hides the socket
        )


# --------------------------------------------------------------------- per-route opt-in


def test_per_route_opt_in_cancels_only_marked_routes() -> None:
    events: list[ClientDisconnected] = []
    sent: list[tuple[str, str]] = []
    inner = CancelOnDisconnect(starlette_app(), cancel=False, on_disconnect=events.append)

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        # Between the server and the middleware: what reaches the server after a disconnect.
        async def spy_send(message: Any) -> None:
            sent.append((scope.get("query_string", b"").decode(), message["type"]))
            await send(message)

        await inner(scope, receive, spy_send)

    with ServerThread("uvicorn-httptools", spy) as srv:
        sock, opted, _ = _start(srv.port, "/opted")
        t0 = _hang_up(sock, "fin")
        assert opted.cleaned.wait(10)
        assert opted.cleaned_at - t0 < STOP_BOUND
        assert opted.steps < STEPS // 2

        sock, plain, key = _start(srv.port, "/short")
        _hang_up(sock, "fin")
        assert plain.cleaned.wait(10)
        assert plain.steps == 30  # not opted in: it ran to the end…
        assert plain.saw_signal  # …but it could see that its client had left
        time.sleep(0.1)
        # …and its late answer was dropped, not sent to a closed connection.
        assert [t for q, t in sent if key in q] == []
        _ping(srv.port)
    assert [e.cancelled for e in events] == [True, False]


def test_opted_in_sync_handler_sees_the_flag() -> None:
    with ServerThread("uvicorn-h11", CancelOnDisconnect(starlette_app(), cancel=False)) as srv:
        sock, rec, _ = _start(srv.port, "/opted-sync")
        t0 = _hang_up(sock, "rst")
        assert rec.cleaned.wait(10)
        assert rec.cleaned_at - t0 < STOP_BOUND
        assert rec.saw_signal


# --------------------------------------------------------------------- other scopes, misuse


def test_websocket_scope_passes_through() -> None:
    import websockets.sync.client
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    async def ws_echo(websocket: Any) -> None:
        await websocket.accept()
        seen = current_disconnect()
        text = await websocket.receive_text()
        await websocket.send_text(f"{text}:{seen is None}")
        await websocket.close()

    app = CancelOnDisconnect(Starlette(routes=[WebSocketRoute("/ws", ws_echo)]))
    with (
        ServerThread("uvicorn-httptools", app) as srv,
        websockets.sync.client.connect(f"ws://127.0.0.1:{srv.port}/ws") as ws,
    ):
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi:True"


def test_lifespan_scope_gets_the_servers_own_callables() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        return None

    scope = {"type": "lifespan"}
    asyncio.run(CancelOnDisconnect(app)(scope, receive, send))
    assert seen == [(scope, receive, send)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cancel": "yes"}, "cancel must be True or False, got 'yes'"),
        ({"max_buffer": -1}, "max_buffer must be an int >= 0, got -1"),
        ({"on_disconnect": 3}, "on_disconnect must be callable, got 3"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, Any], message: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    with pytest.raises((TypeError, ValueError), match=message):
        CancelOnDisconnect(app, **kwargs)


def test_stream_outside_a_request_is_the_plain_iterator() -> None:
    body = stream([b"a", b"b"])
    assert list(body) == [b"a", b"b"]  # type: ignore[arg-type]
    assert current_disconnect() is None


def test_signal_wakes_async_and_thread_waiters() -> None:
    import threading

    signal = DisconnectSignal()
    woke: list[str] = []

    def in_thread() -> None:
        if signal.wait_sync(10):
            woke.append("thread")

    async def main() -> None:
        thread = threading.Thread(target=in_thread)
        thread.start()
        waiter = asyncio.ensure_future(signal.wait())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        signal.set()
        await asyncio.wait_for(waiter, 10)
        woke.append("task")
        await asyncio.to_thread(thread.join, 10)

    asyncio.run(main())
    assert sorted(woke) == ["task", "thread"]
    assert signal.wait_sync(0) is True
    with pytest.raises(ValueError, match="timeout must be a number >= 0 or None, got -1"):
        signal.wait_sync(-1)


def test_monitor_counts_disconnects_by_reason_and_how() -> None:
    monitor = Monitor()
    app = CancelOnDisconnect(starlette_app(), on_disconnect=monitor)
    with ServerThread("uvicorn-uvloop", app) as srv:
        for how in ("fin", "rst", "rst"):
            sock, rec, _ = _start(srv.port, "/async")
            _hang_up(sock, how)
            assert rec.cleaned.wait(10)
        deadline = time.monotonic() + 5
        while monitor.report().client_disconnects < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    report = monitor.report()
    assert report.client_disconnects == 3
    assert report.cancelled_handlers == 3
    assert dict(report.disconnect_reasons) == {"asgi:disconnect": 3, "how:fin": 1, "how:rst": 2}


def test_zz_report_latencies(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the measured stop latencies (run with -s); asserts they were measured."""
    assert LATENCIES, "no latency measured"
    with capsys.disabled():
        print("\nstop latency after the client hung up (ms): median / max")
        for label, values in sorted(LATENCIES.items()):
            print(
                f"  {label:40s} {statistics.median(values) * 1000:7.2f} {max(values) * 1000:7.2f}"
            )


def _polling_app(with_guard: bool) -> tuple[Any, list[bool]]:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    saw: list[bool] = []

    async def poll(request: Any) -> PlainTextResponse:
        rec = RECORDS.get(str(request.query_params["id"]))
        rec.started.set()
        gone = False
        for _ in range(100):  # 1 s at most
            if await request.is_disconnected():
                gone = True
                break
            await asyncio.sleep(0.01)
        saw.append(gone)
        rec.cleaned.set()
        return PlainTextResponse("done")

    middleware = [_Passthrough.make()]
    if with_guard:
        middleware.append(Middleware(CancelOnDisconnect, cancel=False))
    return Starlette(routes=[Route("/poll", poll)], middleware=middleware), saw


@pytest.mark.parametrize("with_guard", [False, True])
def test_is_disconnected_behind_base_http_middleware(with_guard: bool) -> None:
    app, saw = _polling_app(with_guard)
    with ServerThread("uvicorn-httptools", app) as srv:
        sock, rec, _ = _start(srv.port, "/poll")
        _hang_up(sock, "rst")
        assert rec.cleaned.wait(10)
    # Without resetguard, Starlette's is_disconnected() never turns true behind a
    # BaseHTTPMiddleware; with the middleware between them, it does.
    assert saw == [with_guard]


def test_an_aborted_request_leaves_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="resetguard.asgi"),
        ServerThread("uvicorn-httptools", CancelOnDisconnect(starlette_app())) as srv,
    ):
        sock, rec, _ = _start(srv.port, "/async")
        _hang_up(sock, "rst")
        assert rec.cleaned.wait(10)
    lines = [r.getMessage() for r in caplog.records if r.name == "resetguard.asgi"]
    assert len(lines) == 1
    assert "left GET /async after" in lines[0]
    assert lines[0].endswith("(disconnect, RST), handler cancelled")
