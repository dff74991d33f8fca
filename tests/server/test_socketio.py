"""resetguard.socketio with a real python-socketio server and a real client process that
leaves, is killed (SIGKILL) or freezes (SIGSTOP) in mid-session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from resetguard import ClientDisconnected
from resetguard._monitor import Monitor
from resetguard.socketio import REASONS, Heartbeat, heartbeat, instrument

from ._servers import ServerThread

CLIENT = Path(__file__).with_name("_sio_client.py")
PING_INTERVAL, PING_TIMEOUT = 1.0, 1.0


class Site:
    def __init__(self, url: str, probe: Any, events: list[ClientDisconnected], seen: list[str]):
        self.url = url
        self.probe = probe
        self.events = events
        self.seen = seen  # reasons the app's own disconnect handler received


def _async_site() -> Iterator[Site]:
    import socketio

    sio = socketio.AsyncServer(
        async_mode="asgi", ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT
    )
    seen: list[str] = []

    @sio.event
    async def hello(sid: str, data: str) -> str:
        return data

    @sio.event
    async def disconnect(sid: str, reason: str) -> None:
        seen.append(reason)

    events: list[ClientDisconnected] = []
    probe = instrument(sio, on_disconnect=events.append)
    with ServerThread("uvicorn-httptools", probe.asgi(socketio.ASGIApp(sio))) as srv:
        yield Site(f"http://127.0.0.1:{srv.port}", probe, events, seen)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


def _sync_site() -> Iterator[Site]:
    import socketio

    sio = socketio.Server(
        async_mode="threading", ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT
    )
    seen: list[str] = []

    @sio.event
    def hello(sid: str, data: str) -> str:
        return data

    @sio.event
    def disconnect(sid: str, reason: str) -> None:
        seen.append(reason)

    events: list[ClientDisconnected] = []
    probe = instrument(sio, on_disconnect=events.append)
    httpd = make_server(
        "127.0.0.1", 0, socketio.WSGIApp(sio),
        server_class=_ThreadingWSGIServer, handler_class=_QuietHandler,
    )  # fmt: skip
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{httpd.server_port}", probe, events, seen)
    finally:
        httpd.shutdown()
        thread.join(10)
        httpd.server_close()


@pytest.fixture
def async_site() -> Iterator[Site]:
    yield from _async_site()


@pytest.fixture
def sync_site() -> Iterator[Site]:
    yield from _sync_site()


def _client(url: str, transport: str, mode: str = "stay") -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(CLIENT), url, transport, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"client did not connect: {line!r} {err[-2000:]}")
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    proc.communicate(timeout=10)


def _wait_reason(site: Site, count: int, timeout: float = 15.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if sum(site.probe.reasons.values()) >= count:
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"no disconnect recorded in {timeout}s: {site.probe.reasons}")


def test_killed_websocket_client_is_recorded(async_site: Site) -> None:
    proc = _client(async_site.url, "websocket")
    try:
        proc.kill()  # SIGKILL in mid-session: no goodbye, the kernel closes the socket
        _wait_reason(async_site, 1)
    finally:
        _stop(proc)
    event = async_site.events[0]
    assert event.reason in ("transport close", "transport error")
    assert event.how in ("abnormal", "no_status")  # no close frame: the process died
    assert event.name == "socketio"
    assert event.peer.startswith("127.0.0.1:")
    assert event.elapsed is not None
    assert event.elapsed > 0
    assert async_site.seen == [event.reason]  # the app's handler still got it
    assert async_site.probe.reasons == {event.reason: 1}


def test_clean_leave_is_told_apart_by_its_close_frame(async_site: Site) -> None:
    proc = _client(async_site.url, "websocket", "leave")
    try:
        _wait_reason(async_site, 1)
    finally:
        _stop(proc)
    # python-socketio says "transport close", exactly as for a killed client…
    assert async_site.seen == ["transport close"]
    assert async_site.probe.reasons == {"transport close": 1}
    # …the websocket close frame tells the clean leave apart.
    assert async_site.events[0].how == "close_frame"


def test_frozen_client_is_noticed_once_within_the_implied_time(async_site: Site) -> None:
    proc = _client(async_site.url, "websocket")
    try:
        os.kill(proc.pid, signal.SIGSTOP)  # frozen: the socket stays open, nothing answers
        took = _wait_reason(async_site, 1, timeout=20)
    finally:
        _stop(proc)
    # python-engineio notices a frozen websocket peer twice over, at about the same moment:
    # its heartbeat check ("ping timeout") and its websocket reader, which stops after
    # ping_interval + ping_timeout without a packet and closes ("transport close"). The
    # first to close names the reason; on a slow machine the reader sometimes wins.
    assert async_site.probe.reasons in ({"ping timeout": 1}, {"transport close": 1})
    hb = async_site.probe.heartbeat
    assert hb == Heartbeat(ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT)
    # Generous margin: the loaded machine may be slow to schedule the check.
    assert took < hb.detection_max + 3.0


def test_sync_server_records_a_killed_client(sync_site: Site) -> None:
    proc = _client(sync_site.url, "polling")
    try:
        proc.kill()
        _wait_reason(sync_site, 1, timeout=20)
    finally:
        _stop(proc)
    reason = sync_site.events[0].reason
    # Long-polling has no connection to watch between polls: only the heartbeat notices.
    assert reason in ("ping timeout", "transport close", "transport error")
    assert sync_site.seen == [reason]


def test_monitor_counts_socketio_reasons(async_site: Site) -> None:
    monitor = Monitor()
    async_site.probe.on_disconnect = monitor
    proc = _client(async_site.url, "websocket", "leave")
    try:
        _wait_reason(async_site, 1)
    finally:
        _stop(proc)
    assert dict(monitor.report().disconnect_reasons) == {
        "socketio:transport close": 1,
        "how:close_frame": 1,
    }


def test_heartbeat_of_the_defaults() -> None:
    import socketio

    hb = heartbeat(socketio.AsyncServer())
    assert (hb.ping_interval, hb.ping_timeout) == (25.0, 20.0)
    assert hb.detection_max == 45.0
    assert "a frozen peer is noticed after 20-45s" in hb.describe()


def test_uninstall_restores_the_server() -> None:
    import socketio

    sio = socketio.Server()
    probe = instrument(sio)
    assert "_trigger_event" in vars(sio)
    probe.uninstall()
    assert "_trigger_event" not in vars(sio)


def test_not_a_server_is_named() -> None:
    with pytest.raises(TypeError, match="expected a python-socketio server, got 42"):
        instrument(42)
    with pytest.raises(TypeError, match="expected a python-socketio or python-engineio"):
        heartbeat(object())
    assert set(REASONS) == {
        "client disconnect",
        "server disconnect",
        "ping timeout",
        "transport close",
        "transport error",
    }
