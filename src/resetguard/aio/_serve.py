"""``serve()``: an asyncio TCP server that classifies how every client left and cleans up.

Built on the same pieces as :func:`asyncio.start_server` (a ``StreamReaderProtocol`` per
connection), with a reader that stamps the time of every received chunk so an idle client
can be told from a busy one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import ssl as _ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, SupportsIndex

from .._classify import Failure, Kind, classify
from .._events import ClientDisconnected, emit, hooks_active
from ._noise import NOISE_KINDS

__all__ = ["OUTCOMES", "TCPServer", "serve"]

_log = logging.getLogger("resetguard.aio.serve")

#: How a client's session can end, as counted in :attr:`TCPServer.outcomes`.
OUTCOMES: Final = (
    "clean",  # the handler returned
    "reset",  # the peer reset the connection (RST, EPIPE, ECONNABORTED)
    "closed",  # the peer closed while the handler still expected data (IncompleteReadError)
    "idle_timeout",  # nothing received for idle_timeout seconds
    "timeout",  # the session outlived total_timeout
    "shutdown",  # cancelled by a shutdown whose grace period ran out
    "error",  # the handler raised something else: logged with its traceback
)
_RESETS: Final = frozenset({Kind.RESET, Kind.BROKEN_PIPE, Kind.ABORTED})

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[Any]]


class _StampedReader(asyncio.StreamReader):
    """A StreamReader that remembers when data last arrived (for the idle timeout)."""

    last_data: float = 0.0

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self.last_data = time.monotonic()
        super().feed_data(data)


class _Session:
    __slots__ = ("ended_by", "peer", "reader", "started", "task", "timer", "writer")

    def __init__(self, reader: _StampedReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.started = time.monotonic()
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self.timer: asyncio.TimerHandle | None = None
        self.ended_by = ""  # set when we cancel the task: idle_timeout / timeout / shutdown
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")


class TCPServer:
    """A running :func:`serve` server. Use ``async with`` or call :meth:`shutdown`.

    Attributes:
        port: the port it listens on (useful with ``port=0``).
        outcomes: how many sessions ended each way (keys from :data:`OUTCOMES`).
        active: sessions still running.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        idle_timeout: float | None,
        total_timeout: float | None,
        name: str,
    ) -> None:
        self._handler = handler
        self.idle_timeout = idle_timeout
        self.total_timeout = total_timeout
        self.name = name
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self._sessions: set[_Session] = set()
        self._server: asyncio.Server | None = None
        self._port = 0
        self._closing = False
        self.peak_active = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def active(self) -> int:
        return len(self._sessions)

    async def __aenter__(self) -> TCPServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    async def serve_forever(self) -> None:
        """Serve until cancelled, then shut down gracefully."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.shutdown()

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting, give running sessions ``grace`` seconds, then cancel the rest.

        Every connection is closed when this returns (idempotent).
        """
        if not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace < 0:
            raise ValueError(f"grace must be a number of seconds >= 0, got {grace!r}")
        self._closing = True
        server = self._server
        if server is not None:
            server.close()
        tasks = [s.task for s in self._sessions if s.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for session in list(self._sessions):
                if session.task in pending:
                    session.ended_by = "shutdown"
                    session.task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=max(grace, 1.0))
        if server is not None:
            await server.wait_closed()

    # -- one client

    async def _client(self, reader: _StampedReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(reader, writer)
        if self._closing:
            writer.transport.abort()
            return
        self._sessions.add(session)
        self.peak_active = max(self.peak_active, len(self._sessions))
        self._arm(session)
        outcome = "clean"
        failure: Failure | None = None
        try:
            await self._handler(reader, writer)
        except asyncio.CancelledError:
            if not session.ended_by:
                raise  # not ours: the loop is going down
            outcome = session.ended_by
        except Exception as exc:
            failure = classify(exc)
            if failure is not None and failure.kind in NOISE_KINDS:
                outcome = "reset" if failure.kind in _RESETS else "closed"
            elif failure is not None and failure.kind is Kind.TIMEOUT:
                outcome = "timeout"
            else:
                outcome = "error"
                _log.error("%s: handler failed for %s", self.name, session.peer, exc_info=exc)
        finally:
            if session.timer is not None:
                session.timer.cancel()
            self._sessions.discard(session)
            await _close(writer, abort=outcome not in ("clean", "error"))
        self.outcomes[outcome] += 1
        if outcome != "clean" and outcome != "error" and hooks_active():
            emit(
                ClientDisconnected(
                    name=self.name,
                    peer=session.peer,
                    elapsed=time.monotonic() - session.started,
                    reason=outcome,
                    how="rst" if outcome == "reset" else "",
                    cancelled=bool(session.ended_by),
                    failure=failure,
                )
            )

    def _arm(self, session: _Session) -> None:
        """Schedule the next timeout check for ``session`` (no task per client)."""
        deadlines = []
        now = time.monotonic()
        if self.total_timeout is not None:
            deadlines.append((session.started + self.total_timeout, "timeout"))
        if self.idle_timeout is not None:
            last = max(session.reader.last_data, session.started)
            deadlines.append((last + self.idle_timeout, "idle_timeout"))
        if not deadlines:
            return
        when, why = min(deadlines)
        loop = asyncio.get_running_loop()
        if when <= now:
            session.ended_by = why
            if session.task is not None:
                session.task.cancel()
            return
        session.timer = loop.call_at(loop.time() + (when - now), self._arm, session)


async def _close(writer: asyncio.StreamWriter, *, abort: bool) -> None:
    transport = writer.transport
    if abort:
        transport.abort()  # nothing useful can be flushed to a peer that is gone
    else:
        writer.close()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(writer.wait_closed(), 5.0)


async def serve(
    handler: Handler,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    idle_timeout: float | None = None,
    total_timeout: float | None = None,
    ssl: _ssl.SSLContext | None = None,
    backlog: int = 100,
    limit: int = 2**16,
    name: str = "tcp",
) -> TCPServer:
    """Start a TCP server that runs ``handler(reader, writer)`` for each client.

    Each session ends in one of :data:`OUTCOMES`, counted in ``server.outcomes``; a reset is
    never printed as a traceback, any other exception is logged with its traceback. The
    connection is always closed (aborted after a reset or a timeout). Ends other than
    ``clean`` and ``error`` are emitted as :class:`~resetguard.ClientDisconnected` events.

    Args:
        handler: ``async def handler(reader, writer)``.
        host, port: where to listen (``port=0``: any free port, see ``server.port``).
        idle_timeout: close a client that sent nothing for this many seconds.
        total_timeout: close a session that lasted this many seconds.
        ssl, backlog, limit: as for :func:`asyncio.start_server`.
        name: ``name`` of the emitted events.

    Example::

        import asyncio
        from resetguard.aio import serve

        async def echo(reader, writer):
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()

        async def main():
            async with await serve(echo, "127.0.0.1", 0, idle_timeout=30) as server:
                ...  # server.port, server.outcomes

        asyncio.run(main())
    """
    call = getattr(handler, "__call__", None)  # noqa: B004 - an object with async __call__
    if not (inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)):
        raise TypeError(f"handler must be an async function (reader, writer), got {handler!r}")
    for label, value in (("idle_timeout", idle_timeout), ("total_timeout", total_timeout)):
        if value is not None and (
            not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0
        ):
            raise ValueError(f"{label} must be a number of seconds > 0 or None, got {value!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    server = TCPServer(handler, idle_timeout=idle_timeout, total_timeout=total_timeout, name=name)
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = _StampedReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, server._client, loop=loop)  # type: ignore[arg-type]

    server._server = await loop.create_server(factory, host, port, ssl=ssl, backlog=backlog)
    server._port = int(server._server.sockets[0].getsockname()[1])
    return server
