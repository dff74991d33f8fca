"""Raw-socket tracing: a wrapper that reports connect, first byte, errors and close,
and a ``socket.getaddrinfo`` wrapper that reports DNS time for every library."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from .._classify import Phase
from ._core import ConnState, Patches, TraceRecord, describe_error, fault, now, publish

__all__ = ["TracedSocket", "create_connection"]


def _format_addr(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


class TracedSocket:
    """Wrap a :class:`socket.socket` so its connection events are traced.

    Everything not listed here is passed through to the wrapped socket (``sock``).
    Events are reported whether or not :func:`resetguard.trace.enable` was called:
    wrapping a socket is itself the opt-in.

    Example::

        >>> import socket
        >>> from resetguard.trace import TracedSocket
        >>> s = TracedSocket(socket.socket())
        >>> s.close()
    """

    __slots__ = ("_first_byte", "_state", "bytes_received", "bytes_sent", "sock")

    def __init__(self, sock: socket.socket, *, peer: str = "") -> None:
        if not isinstance(sock, socket.socket):
            raise TypeError(f"TracedSocket wraps a socket.socket, got {sock!r}")
        self.sock = sock
        self._state = ConnState(peer)
        self.bytes_sent = 0
        self.bytes_received = 0
        self._first_byte = False
        try:
            connected_to = sock.getpeername()
        except OSError:
            connected_to = None
        if connected_to:
            self._state.peer = peer or _format_addr(connected_to)
            self._state.phase = Phase.SEND

    @property
    def conn_id(self) -> int:
        """The connection number shown in trace lines."""
        return self._state.id

    def _record(self, step: str, **fields: Any) -> None:
        at = now()
        state = self._state
        publish(
            TraceRecord(
                library="socket",
                step=step,
                conn=state.id,
                peer=state.peer,
                at=at,
                since_start=at - state.created,
                **fields,
            )
        )

    def _error(self, exc: BaseException) -> None:
        self._record(
            "error",
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            failure=fault(exc, self._state.phase, None),
            error=describe_error(exc),
        )

    def connect(self, address: Any) -> None:
        self._state.peer = self._state.peer or _format_addr(address)
        start = now()
        try:
            self.sock.connect(address)
        except BaseException as exc:
            self._error(exc)
            raise
        self._state.phase = Phase.SEND
        self._record("connect", duration=now() - start)

    def _sent(self, n: int) -> None:
        self.bytes_sent += n
        if self._state.phase is Phase.SEND:
            self._state.phase = Phase.AWAIT

    def _received(self, n: int) -> None:
        self.bytes_received += n
        if n and not self._first_byte:
            self._first_byte = True
            self._state.phase = Phase.RECEIVE
            self._record("first_byte", bytes_sent=self.bytes_sent)

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            n = self.sock.send(data, flags)
        except BaseException as exc:
            self._error(exc)
            raise
        self._sent(n)
        return n

    def sendall(self, data: Any, flags: int = 0) -> None:
        try:
            self.sock.sendall(data, flags)
        except BaseException as exc:
            self._error(exc)
            raise
        self._sent(len(memoryview(data)))
        self._record("request_sent", bytes_sent=self.bytes_sent)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        try:
            data = self.sock.recv(bufsize, flags)
        except BaseException as exc:
            self._error(exc)
            raise
        self._received(len(data))
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        try:
            n = self.sock.recv_into(buffer, nbytes, flags)
        except BaseException as exc:
            self._error(exc)
            raise
        self._received(n)
        return n

    def close(self) -> None:
        if not self._state.closed:
            self._state.closed = True
            self._record("closed", bytes_sent=self.bytes_sent, bytes_received=self.bytes_received)
        self.sock.close()

    def __enter__(self) -> TracedSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)

    def __repr__(self) -> str:
        return f"<TracedSocket conn#{self._state.id} {self.sock!r}>"


def create_connection(
    address: tuple[str, int], timeout: float | None = None, **kwargs: Any
) -> TracedSocket:
    """:func:`socket.create_connection`, traced (DNS, connect, then every later event).

    Example::

        sock = create_connection(("example.org", 80), timeout=5)
    """
    start = now()
    peer = _format_addr(address)
    try:
        sock = socket.create_connection(address, timeout, **kwargs)
    except BaseException as exc:
        at = now()
        publish(
            TraceRecord(
                library="socket",
                step="error",
                peer=peer,
                at=at,
                duration=at - start,
                failure=fault(exc, Phase.CONNECT, False),
                error=describe_error(exc),
            )
        )
        raise
    traced = TracedSocket(sock, peer=peer)
    traced._state.created = start
    traced._record("connect", duration=now() - start)
    return traced


def install_dns(patches: Patches) -> None:
    """Report the time of every ``socket.getaddrinfo`` call (all libraries use it)."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            start = now()
            try:
                result = original(host, port, *args, **kwargs)
            except BaseException as exc:
                at = now()
                publish(
                    TraceRecord(
                        library="dns",
                        step="error",
                        peer=_format_addr((host, port)),
                        at=at,
                        duration=at - start,
                        failure=fault(exc, Phase.CONNECT, False),
                        error=describe_error(exc),
                    )
                )
                raise
            at = now()
            publish(
                TraceRecord(
                    library="dns",
                    step="dns",
                    peer=_format_addr((host, port)),
                    at=at,
                    duration=at - start,
                    detail=f"{len(result)} address(es)",
                )
            )
            return result

        return getaddrinfo

    patches.replace(socket, "getaddrinfo", wrap)
