"""urllib3 (and so requests) tracing by wrapping its connection and pool methods.

urllib3 has no tracing hook, so a handful of methods are wrapped at class level:
``HTTPConnectionPool._get_conn`` / ``_put_conn`` (checkout, reuse and idle age, return to the
pool), ``HTTPConnection._new_conn`` / ``connect`` (TCP connect, then TLS for HTTPS),
``request`` (request sent), ``getresponse`` (first byte: the status line and headers) and
``close``. :func:`resetguard.trace.disable` restores every original.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from .._classify import Phase
from ._core import ConnState, Patches, TraceRecord, describe_error, fault, now, publish

_LIB = "urllib3"
_states: weakref.WeakKeyDictionary[Any, ConnState] = weakref.WeakKeyDictionary()


def _state(conn: Any) -> ConnState:
    state = _states.get(conn)
    if state is None:
        host = str(getattr(conn, "host", ""))
        peer = f"[{host}]:{conn.port}" if ":" in host else f"{host}:{getattr(conn, 'port', '')}"
        state = ConnState(peer)
        _states[conn] = state
    return state


def _record(state: ConnState, step: str, **fields: Any) -> None:
    at = now()
    fields.setdefault("since_start", state.since(at))
    publish(TraceRecord(library=_LIB, step=step, conn=state.id, peer=state.peer, at=at, **fields))


def _connected(conn: Any) -> bool:
    return getattr(conn, "sock", None) is not None


def install(patches: Patches) -> bool:
    """Patch urllib3 if it is installed; False when it is not."""
    try:
        import urllib3.connection
        import urllib3.connectionpool
    except ImportError:
        return False
    pool_cls = urllib3.connectionpool.HTTPConnectionPool
    conn_cls = urllib3.connection.HTTPConnection

    def get_conn(original: Callable[..., Any]) -> Callable[..., Any]:
        def _get_conn(self: Any, timeout: float | None = None) -> Any:
            conn = original(self, timeout)
            state = _state(conn)
            at = now()
            state.request_start = at
            state.failed = False
            state.busy = True
            if _connected(conn) and state.requests:
                state.phase = Phase.SEND
                _record(state, "reused", idle_age=state.idle_age(at), requests=state.requests)
            else:
                state.phase = Phase.CONNECT
            return conn

        return _get_conn

    def put_conn(original: Callable[..., Any]) -> Callable[..., Any]:
        def _put_conn(self: Any, conn: Any) -> Any:
            if conn is not None:
                state = _states.get(conn)
                if state is not None and _connected(conn) and not state.failed:
                    state.requests += 1
                    state.last_returned = now()
                    _record(state, "returned", requests=state.requests)
            return original(self, conn)

        return _put_conn

    def new_conn(original: Callable[..., Any]) -> Callable[..., Any]:
        def _new_conn(self: Any) -> Any:
            state = _state(self)
            start = now()
            if state.request_start is None:
                state.request_start = start
            try:
                sock = original(self)
            except BaseException as exc:
                state.failed = True
                _record(
                    state,
                    "error",
                    duration=now() - start,
                    failure=fault(exc, Phase.CONNECT, False),
                    error=describe_error(exc),
                )
                raise
            _record(state, "connect", duration=now() - start)
            return sock

        return _new_conn

    def connect(original: Callable[..., Any]) -> Callable[..., Any]:
        def connect(self: Any) -> Any:
            state = _state(self)
            start = now()
            if state.request_start is None:
                state.request_start = start
            # A (re)connect makes this a fresh connection again.
            state.requests = 0
            state.last_returned = None
            state.closed = False
            state.pending_close = False
            state.phase = Phase.CONNECT
            original(self)
            if type(self).__name__ == "HTTPSConnection" or hasattr(self, "ssl_context"):
                tls = getattr(self, "sock", None)
                if tls is not None and hasattr(tls, "version"):
                    _record(state, "tls", detail=str(tls.version()))
            state.phase = Phase.SEND
            _record(state, "opened", duration=now() - start, requests=0)

        return connect

    def request(original: Callable[..., Any]) -> Callable[..., Any]:
        def request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            state = _state(self)
            try:
                result = original(self, method, url, *args, **kwargs)
            except BaseException as exc:
                _error(state, exc)
                raise
            state.phase = Phase.AWAIT
            _record(state, "request_sent", detail=f"{method} {url}")
            return result

        return request

    def getresponse(original: Callable[..., Any]) -> Callable[..., Any]:
        def getresponse(self: Any, *args: Any, **kwargs: Any) -> Any:
            state = _state(self)
            try:
                response = original(self, *args, **kwargs)
            except BaseException as exc:
                _error(state, exc)
                raise
            state.phase = Phase.RECEIVE
            state.busy = False
            _record(state, "first_byte", detail=f"status {getattr(response, 'status', '?')}")
            return response

        return getresponse

    def close(original: Callable[..., Any]) -> Callable[..., Any]:
        def close(self: Any) -> Any:
            state = _states.get(self)
            if state is not None and _connected(self) and not state.closed:
                state.closed = True
                if state.busy:
                    state.pending_close = True
                else:
                    publish(state.closed_record(_LIB))
            return original(self)

        return close

    patches.replace(pool_cls, "_get_conn", get_conn)
    patches.replace(pool_cls, "_put_conn", put_conn)
    patches.replace(conn_cls, "_new_conn", new_conn)
    patches.replace(conn_cls, "connect", connect)
    patches.replace(urllib3.connection.HTTPSConnection, "connect", connect)
    patches.replace(conn_cls, "request", request)
    patches.replace(conn_cls, "getresponse", getresponse)
    patches.replace(conn_cls, "close", close)
    return True


def _error(state: ConnState, exc: BaseException) -> None:
    state.failed = True
    reused = state.requests > 0
    idle = None
    if reused and state.last_returned is not None and state.request_start is not None:
        idle = state.request_start - state.last_returned
    _record(
        state,
        "error",
        idle_age=idle,
        requests=state.requests,
        failure=fault(exc, state.phase, reused),
        error=describe_error(exc),
    )
    state.busy = False
    if state.pending_close:
        state.pending_close = False
        publish(state.closed_record(_LIB))
