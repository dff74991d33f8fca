"""Record every Socket.IO disconnect with its reason, and show what the heartbeat implies.

python-socketio is never imported here: a server is recognised by its ``eio`` attribute
(the Engine.IO server) and the ``_trigger_event`` method through which python-socketio 5
(``Server`` and ``AsyncServer``) delivers every handler call.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .._events import ClientDisconnected, emit

__all__ = ["Heartbeat", "REASONS", "SocketIOInstrument", "heartbeat", "instrument"]

_log = logging.getLogger("resetguard.socketio")
# RFC 6455 codes that carry no close status. 1006: the connection dropped without a close
# frame. 1005: a close frame without a status code, and also what some servers (uvicorn's
# sansio websockets) report for a dropped connection, so it cannot prove a clean leave.
_CLOSE_KINDS: Final = {1006: "abnormal", 1005: "no_status"}

#: Engine.IO's disconnect reasons, with what each one can and cannot tell.
REASONS: Final[dict[str, str]] = {
    "client disconnect": "the client said goodbye (disconnect() or a CLOSE packet)",
    "server disconnect": "the server ended the session",
    "ping timeout": "no answer to the heartbeat: a frozen peer, or a path that drops packets",
    "transport close": (
        "the transport closed without a goodbye: a tab closed, a process killed or a network "
        "reset; these look the same to the server"
    ),
    "transport error": "the transport failed (a read or write error on the connection)",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """A server's heartbeat settings and the detection time they imply for a frozen peer.

    Engine.IO pings every ``ping_interval`` seconds and expects the pong within
    ``ping_timeout`` (plus ``grace``); a peer that freezes right after a pong is noticed
    only when nothing has arrived for ``ping_interval + ping_timeout``.

    Example::

        >>> from resetguard.socketio import Heartbeat
        >>> hb = Heartbeat(ping_interval=25.0, ping_timeout=20.0)
        >>> hb.detection_min, hb.detection_max
        (20.0, 45.0)
    """

    ping_interval: float
    ping_timeout: float
    grace: float = 0.0

    @property
    def detection_min(self) -> float:
        """Seconds to notice a peer that froze just before answering a ping."""
        return self.ping_timeout + self.grace

    @property
    def detection_max(self) -> float:
        """Seconds to notice a peer that froze just after answering a ping."""
        return self.ping_interval + self.ping_timeout + self.grace

    def describe(self) -> str:
        """One line, e.g. for a startup log."""
        return (
            f"ping every {self.ping_interval:g}s, timeout {self.ping_timeout:g}s"
            f"{f' (+{self.grace:g}s grace)' if self.grace else ''}: a frozen peer is noticed "
            f"after {self.detection_min:g}-{self.detection_max:g}s"
        )


def heartbeat(server: Any) -> Heartbeat:
    """The heartbeat of a python-socketio (or bare python-engineio) server.

    Example::

        import socketio
        from resetguard.socketio import heartbeat

        print(heartbeat(socketio.AsyncServer()).describe())
    """
    eio = getattr(server, "eio", server)
    try:
        interval = float(eio.ping_interval)
        timeout = float(eio.ping_timeout)
    except (AttributeError, TypeError, ValueError):
        raise TypeError(
            f"expected a python-socketio or python-engineio server, got {server!r}"
        ) from None
    grace = float(getattr(eio, "ping_interval_grace_period", 0) or 0)
    return Heartbeat(ping_interval=interval, ping_timeout=timeout, grace=grace)


class SocketIOInstrument:
    """What :func:`instrument` installed on one server; counts disconnects by reason.

    Attributes:
        reasons: disconnects so far, by Engine.IO reason (a copy).
        heartbeat: the server's :class:`Heartbeat`.
    """

    def __init__(
        self,
        server: Any,
        *,
        name: str,
        on_disconnect: Callable[[ClientDisconnected], None] | None,
        log: bool,
    ) -> None:
        trigger = getattr(server, "_trigger_event", None)
        if getattr(server, "eio", None) is None or not callable(trigger):
            raise TypeError(f"expected a python-socketio server, got {server!r}")
        self.server = server
        self.name = name
        self.on_disconnect = on_disconnect
        self.log = log
        self.heartbeat = heartbeat(server)
        self._lock = threading.Lock()
        self._reasons: dict[str, int] = {}
        self._sessions: dict[tuple[str, str], tuple[float, str]] = {}
        self._close_codes: dict[str, int] = {}  # peer -> websocket close code (see asgi())
        # python-socketio delivers every namespace's connect and disconnect through
        # _trigger_event(event, namespace, sid, ...): the only place that sees the reason
        # per namespace (the Engine.IO-level handler reports "transport close" even after
        # the client said goodbye on its namespace).
        if inspect.iscoroutinefunction(trigger):

            async def async_trigger(event: str, namespace: str, *args: Any, **kw: Any) -> Any:
                self._observe(event, namespace, args)
                return await trigger(event, namespace, *args, **kw)

            server._trigger_event = async_trigger
        else:

            def sync_trigger(event: str, namespace: str, *args: Any, **kw: Any) -> Any:
                self._observe(event, namespace, args)
                return trigger(event, namespace, *args, **kw)

            server._trigger_event = sync_trigger

    @property
    def reasons(self) -> dict[str, int]:
        with self._lock:
            return dict(self._reasons)

    def asgi(self, app: Any) -> Any:
        """Wrap the ``socketio.ASGIApp`` so websocket close codes reach the events.

        Engine.IO reports a client that closed its websocket properly and one whose process
        died the same way, ``transport close``. The ASGI server still knows the difference:
        a close frame with a status (1000, 1001, …) or none at all (1006). With this wrapper
        each websocket session's event carries ``how="close_frame"``, ``how="abnormal"``
        (1006), or ``how="no_status"`` (1005: a close frame without a status, which some
        servers also report for a dropped connection).

        Example::

            app = probe.asgi(socketio.ASGIApp(sio))
        """
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        codes = self._close_codes
        lock = self._lock

        async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
            client = scope.get("client") if scope.get("type") == "websocket" else None
            if not client:
                await app(scope, receive, send)
                return
            peer = f"{client[0]}:{client[1]}"

            async def watched_receive() -> Any:
                message = await receive()
                if message.get("type") == "websocket.disconnect":
                    with lock:
                        if len(codes) >= 4096:  # peers whose session never reported
                            codes.pop(next(iter(codes)))
                        codes[peer] = int(message.get("code", 1005))
                return message

            await app(scope, watched_receive, send)

        return wrapped

    def uninstall(self) -> None:
        """Remove the instrumentation (idempotent)."""
        self.server.__dict__.pop("_trigger_event", None)

    def _observe(self, event: str, namespace: str, args: tuple[Any, ...]) -> None:
        if event == "connect" and len(args) >= 2:
            with self._lock:
                self._sessions[(namespace, str(args[0]))] = (time.monotonic(), _peer(args[1]))
        elif event == "disconnect" and args:
            reason = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            self._disconnected(namespace, str(args[0]), reason)

    def _disconnected(self, namespace: str, sid: str, reason: str) -> None:
        label = reason or "unknown"
        with self._lock:
            start, peer = self._sessions.pop((namespace, sid), (None, ""))
            self._reasons[label] = self._reasons.get(label, 0) + 1
            code = self._close_codes.pop(peer, None) if peer else None
        how = "" if code is None else _CLOSE_KINDS.get(code, "close_frame")
        elapsed = None if start is None else time.monotonic() - start
        event = ClientDisconnected(
            name=self.name, peer=peer, elapsed=elapsed, reason=label, path=namespace, how=how
        )
        if self.log and _log.isEnabledFor(logging.INFO):
            _log.info(
                "socket.io client %s (%s on %s) left after %s: %s%s",
                peer or "?",
                sid,
                namespace,
                "?" if elapsed is None else f"{elapsed:.3f}s",
                label,
                f" ({how})" if how else "",
            )
        emit(event, self.on_disconnect)  # type: ignore[arg-type]


def _peer(environ: Any) -> str:
    if not isinstance(environ, dict):
        return ""
    scope = environ.get("asgi.scope")
    if isinstance(scope, dict) and scope.get("client"):
        host, port = scope["client"][:2]
        return f"{host}:{port}"
    addr = environ.get("REMOTE_ADDR")
    if addr:
        port = environ.get("REMOTE_PORT")
        return f"{addr}:{port}" if port else str(addr)
    return ""


def instrument(
    server: Any,
    *,
    name: str = "socketio",
    on_disconnect: Callable[[ClientDisconnected], None] | None = None,
    log: bool = True,
) -> SocketIOInstrument:
    """Record every disconnect of a python-socketio ``Server`` or ``AsyncServer``.

    The heartbeat and its detection time are logged once at INFO on ``resetguard.socketio``.
    Each disconnect is counted by reason (see :data:`REASONS`), logged at INFO there and
    emitted as a :class:`~resetguard.ClientDisconnected` event (``reason`` as python-socketio
    reports it; ``path`` is the namespace). The server's own ``disconnect`` handlers still
    run and still get the reason.

    Example::

        import socketio
        from resetguard.socketio import instrument

        sio = socketio.AsyncServer(async_mode="asgi")
        probe = instrument(sio)
        print(probe.heartbeat.describe())
    """
    if on_disconnect is not None and not callable(on_disconnect):
        raise TypeError(f"on_disconnect must be callable, got {on_disconnect!r}")
    probe = SocketIOInstrument(server, name=name, on_disconnect=on_disconnect, log=log)
    if log:
        _log.info("socket.io heartbeat: %s", probe.heartbeat.describe())
    return probe
