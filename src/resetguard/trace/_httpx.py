"""httpx tracing through httpcore's ``trace`` request extension.

The extension gives the timing of each step of a request (connect, TLS, request sent,
response headers, body, close) for sync and async clients alike. It does not say *which*
pooled connection served the request, so the HTTP/1.1 connection's ``handle_request`` is
wrapped too: that is where reuse and idle age are known. Both patches are class attributes
restored by :func:`resetguard.trace.disable`.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from .._classify import Phase
from ._core import ConnState, Patches, TraceRecord, describe_error, fault, now, publish

_LIB = "httpx"
_KEY = "resetguard.trace"
_states: weakref.WeakKeyDictionary[Any, ConnState] = weakref.WeakKeyDictionary()


def _peer(stream: Any) -> str:
    try:
        addr = stream.get_extra_info("server_addr")
    except Exception:
        return ""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return ""


class _RequestTrace:
    """State of one request; receives httpcore trace events (``prefix.step.started`` …)."""

    __slots__ = ("conn", "failed_step", "peer", "request_line", "start", "started", "user")

    def __init__(self, request: Any, user: Any) -> None:
        self.start = now()
        self.started: dict[str, float] = {}
        self.conn: ConnState | None = None
        self.peer = ""
        self.failed_step: str | None = None
        self.user = user
        try:
            target = request.url.target.decode("ascii", "replace")
            self.request_line = f"{request.method.decode()} {target}"
        except Exception:
            self.request_line = ""

    def record(self, step: str, **fields: Any) -> None:
        at = now()
        conn = self.conn
        publish(
            TraceRecord(
                library=_LIB,
                step=step,
                conn=None if conn is None else conn.id,
                peer=conn.peer if conn is not None else self.peer,
                at=at,
                since_start=at - self.start,
                detail=fields.pop("detail", self.request_line),
                **fields,
            )
        )

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        _, _, event = name.partition(".")
        step, _, stage = event.rpartition(".")
        at = now()
        if stage == "started":
            self.started[step] = at
            return
        took = at - self.started.get(step, at)
        if stage == "failed":
            self.failed_step = step
            exc = info.get("exception")
            if not isinstance(exc, BaseException):
                return
            conn = self.conn
            if step in ("connect_tcp", "connect_unix_socket", "start_tls"):
                if conn is not None:
                    conn.failed = True
                self.record(
                    "error",
                    duration=took,
                    failure=fault(exc, Phase.CONNECT, False),
                    error=describe_error(exc),
                )
            elif conn is not None and not conn.failed and step != "response_closed":
                _failed(self, conn, exc)
            return
        if step in ("connect_tcp", "connect_unix_socket"):
            self.peer = _peer(info.get("return_value"))
            self.conn = ConnState(self.peer)
            self.conn.request_start = self.start
            self.record("connect", duration=took)
        elif step == "start_tls":
            self.record("tls", duration=took)
        elif step == "send_request_body":
            if self.conn is not None:
                self.conn.phase = Phase.AWAIT
            self.record("request_sent")
        elif step == "receive_response_headers":
            if self.conn is not None:
                self.conn.phase = Phase.RECEIVE
                self.conn.busy = False
            value = info.get("return_value")
            status = value[1] if isinstance(value, tuple) and len(value) > 1 else "?"
            self.record("first_byte", detail=f"{self.request_line} -> {status}")
        elif step == "receive_response_body":
            self.record("response_complete")
        elif step == "response_closed":
            conn = self.conn
            if conn is None or conn.failed or self.failed_step is not None:
                return
            conn.requests += 1
            conn.last_returned = at
            self.record("returned", requests=conn.requests)


class _AsyncRequestTrace(_RequestTrace):
    __slots__ = ()

    async def acall(self, name: str, info: dict[str, Any]) -> None:
        self(name, info)
        if self.user is not None:
            await self.user(name, info)


def _inject(request: Any, cls: type[_RequestTrace]) -> _RequestTrace:
    extensions = request.extensions
    user = extensions.get("trace")
    rt = cls(request, user)
    extensions[_KEY] = rt
    if isinstance(rt, _AsyncRequestTrace):
        extensions["trace"] = rt.acall
    elif user is None:
        extensions["trace"] = rt
    else:

        def both(name: str, info: dict[str, Any]) -> None:
            rt(name, info)
            user(name, info)

        extensions["trace"] = both
    return rt


def _begin(conn_obj: Any, request: Any) -> tuple[_RequestTrace | None, ConnState | None]:
    rt = request.extensions.get(_KEY)
    if not isinstance(rt, _RequestTrace):
        return None, None
    state = _states.get(conn_obj)
    at = now()
    fresh = state is None
    if state is None:
        # The connection made by this request's connect step, if it was traced.
        state = rt.conn or ConnState(_peer(getattr(conn_obj, "_network_stream", None)))
        _states[conn_obj] = state
    rt.conn = state
    state.request_start = rt.start
    state.phase = Phase.SEND
    idle = state.idle_age(at)
    state.busy = True
    if fresh:
        rt.record("opened", requests=0)
    else:
        rt.record("reused", idle_age=idle, requests=state.requests)
    return rt, state


def _failed(rt: _RequestTrace | None, state: ConnState | None, exc: BaseException) -> None:
    if rt is None or state is None or state.failed:
        return
    state.failed = True
    # Idle age at failure: how long the connection sat in the pool before this request.
    idle = None if state.last_returned is None else rt.start - state.last_returned
    rt.record(
        "error",
        idle_age=idle if state.reused else None,
        requests=state.requests,
        failure=fault(exc, state.phase, state.reused),
        error=describe_error(exc),
    )
    state.busy = False
    if state.pending_close:
        state.pending_close = False
        publish(state.closed_record(_LIB))


def _closed(conn_obj: Any) -> None:
    state = _states.get(conn_obj)
    if state is None or state.closed:
        return
    state.closed = True
    if state.busy:
        state.pending_close = True
        return
    publish(state.closed_record(_LIB))


def install(patches: Patches) -> bool:
    """Patch httpcore (used by httpx) if it is installed; False when it is not."""
    try:
        import httpcore
    except ImportError:
        return False

    def pool_sync(original: Callable[..., Any]) -> Callable[..., Any]:
        def handle_request(self: Any, request: Any) -> Any:
            if _KEY not in request.extensions:
                _inject(request, _RequestTrace)
            return original(self, request)

        return handle_request

    def pool_async(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def handle_async_request(self: Any, request: Any) -> Any:
            if _KEY not in request.extensions:
                _inject(request, _AsyncRequestTrace)
            return await original(self, request)

        return handle_async_request

    def conn_sync(original: Callable[..., Any]) -> Callable[..., Any]:
        def handle_request(self: Any, request: Any) -> Any:
            rt, state = _begin(self, request)
            try:
                return original(self, request)
            except BaseException as exc:
                _failed(rt, state, exc)
                raise

        return handle_request

    def conn_async(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def handle_async_request(self: Any, request: Any) -> Any:
            rt, state = _begin(self, request)
            try:
                return await original(self, request)
            except BaseException as exc:
                _failed(rt, state, exc)
                raise

        return handle_async_request

    def close_sync(original: Callable[..., Any]) -> Callable[..., Any]:
        def close(self: Any) -> Any:
            _closed(self)
            return original(self)

        return close

    def close_async(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def aclose(self: Any) -> Any:
            _closed(self)
            return await original(self)

        return aclose

    patches.replace(httpcore.ConnectionPool, "handle_request", pool_sync)
    patches.replace(httpcore.AsyncConnectionPool, "handle_async_request", pool_async)
    patches.replace(httpcore.HTTP11Connection, "handle_request", conn_sync)
    patches.replace(httpcore.AsyncHTTP11Connection, "handle_async_request", conn_async)
    patches.replace(httpcore.HTTP11Connection, "close", close_sync)
    patches.replace(httpcore.AsyncHTTP11Connection, "aclose", close_async)
    return True
