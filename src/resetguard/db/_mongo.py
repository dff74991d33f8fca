"""pymongo: client options from the pool settings, and listeners that feed the monitor.

pymongo retries by itself, and does it right: a read once on a fresh connection; a write
only on a replica set, where the write carries a session and transaction number and the
server applies it once even when it arrives twice. On a standalone server a write that
failed after it was sent is not retried (its outcome is unknown), and resetguard must not
retry it either. So resetguard leaves retries to pymongo and adds what it lacks: every
closed or failed connection and every failed heartbeat becomes a
:class:`~resetguard.ConnectionEvent` (``name="pymongo"``) with pymongo's reason and the
classified fault, which a :class:`~resetguard.Monitor` counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._classify import classify
from .._events import ConnectionEvent, Event, emit
from ._settings import pool_settings

__all__ = ["mongo_client_options", "mongo_listeners"]

# pymongo's failure documents name the exception class; these are connection faults.
_NETWORK_ERRORS = frozenset({"AutoReconnect", "NetworkTimeout", "ConnectionFailure"})
_MAX_REASON = 200


def _peer(address: tuple[str, int | None] | None) -> str:
    if not address:
        return ""
    host, port = address
    return f"{host}:{port}" if port is not None else host


def mongo_listeners(*, hook: Callable[[Event], None] | None = None) -> list[Any]:
    """pymongo monitoring listeners that turn connection loss into resetguard events.

    Events go to every process-wide hook (an installed :class:`~resetguard.Monitor`) and to
    ``hook``. Reported: a pooled connection closed (``action="closed"``, ``reason`` one of
    pymongo's ``"error"``, ``"stale"``, ``"idle"``, ``"poolClosed"``), a checkout that failed
    (``"failed"``, ``"connectionError"`` / ``"timeout"``), a command that failed on the
    network and a failed server heartbeat (``"failed"``, with the classified fault).

    Example::

        from pymongo import MongoClient
        import resetguard
        from resetguard.db import mongo_listeners

        monitor = resetguard.Monitor()
        client = MongoClient("mongodb://127.0.0.1:1/", connect=False,
                             event_listeners=mongo_listeners(hook=monitor))
        client.close()
    """
    from pymongo import monitoring

    def pool_event(action: str, event: Any) -> None:
        reason = str(event.reason)
        emit(
            ConnectionEvent(
                name="pymongo", action=action, peer=_peer(event.address), reason=reason
            ),
            hook,
        )

    class PoolListener(monitoring.ConnectionPoolListener):
        def connection_closed(self, event: monitoring.ConnectionClosedEvent) -> None:
            pool_event("closed", event)

        def connection_check_out_failed(
            self, event: monitoring.ConnectionCheckOutFailedEvent
        ) -> None:
            pool_event("failed", event)

        # pymongo calls every hook of the interface; the rest carry nothing about loss.
        def pool_created(self, event: Any) -> None: ...
        def pool_ready(self, event: Any) -> None: ...
        def pool_cleared(self, event: Any) -> None: ...
        def pool_closed(self, event: Any) -> None: ...
        def connection_created(self, event: Any) -> None: ...
        def connection_ready(self, event: Any) -> None: ...
        def connection_check_out_started(self, event: Any) -> None: ...
        def connection_checked_out(self, event: Any) -> None: ...
        def connection_checked_in(self, event: Any) -> None: ...

    class HeartbeatListener(monitoring.ServerHeartbeatListener):
        def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
            reply = event.reply
            failure = classify(reply) if isinstance(reply, BaseException) else None
            emit(
                ConnectionEvent(
                    name="pymongo",
                    action="failed",
                    peer=_peer(event.connection_id),
                    failure=failure,
                    elapsed=event.duration,
                    reason=f"heartbeat: {reply}"[:_MAX_REASON],
                ),
                hook,
            )

        def started(self, event: Any) -> None: ...
        def succeeded(self, event: Any) -> None: ...

    class CommandListener(monitoring.CommandListener):
        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            doc = event.failure
            errtype = str(doc.get("errtype", "")) if isinstance(doc, dict) else ""
            if errtype not in _NETWORK_ERRORS:
                return  # a server error reply (duplicate key, …): the connection is fine
            from pymongo import errors

            message = str(doc.get("errmsg", ""))
            rebuilt = getattr(errors, errtype)(message)
            emit(
                ConnectionEvent(
                    name="pymongo",
                    action="failed",
                    peer=_peer(event.connection_id),
                    failure=classify(rebuilt),
                    elapsed=event.duration_micros / 1e6,
                    reason=f"{event.command_name}: {errtype}: {message}"[:_MAX_REASON],
                ),
                hook,
            )

        def started(self, event: Any) -> None: ...
        def succeeded(self, event: Any) -> None: ...

    return [PoolListener(), HeartbeatListener(), CommandListener()]


def mongo_client_options(
    *,
    server_idle_timeout: float | None = None,
    hook: Callable[[Event], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``MongoClient``: the pool settings plus the listeners.

    ``server_idle_timeout``: idle timeout of anything between the client and the server
    (a load balancer, a NAT gateway); ``None`` sizes for the common 350 s NAT drop.
    ``overrides`` replace single options (``serverSelectionTimeoutMS=...``); extra
    ``event_listeners`` are kept next to resetguard's.

    Example::

        from pymongo import MongoClient
        from resetguard.db import mongo_client_options

        client = MongoClient("mongodb://127.0.0.1:1/", connect=False,
                             **mongo_client_options(serverSelectionTimeoutMS=2000))
        assert client.options.retry_reads
        client.close()
    """
    options: dict[str, Any] = pool_settings(
        "pymongo", server_idle_timeout=server_idle_timeout
    ).kwargs()
    extra = list(overrides.pop("event_listeners", None) or ())
    options.update(overrides)
    options["event_listeners"] = [*mongo_listeners(hook=hook), *extra]
    return options
