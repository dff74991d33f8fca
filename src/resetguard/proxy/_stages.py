"""Per-connection toxic stages: what a toxic *does* to one direction of one connection.

A direction of a connection is a chain::

    source socket -> stage -> stage -> ... -> sink (writes to the destination socket)

Items flow down the chain through two calls: ``feed(chunk)`` for bytes and
``end(kind)`` for the end of the stream, where ``kind`` is ``"eof"`` (the source sent
FIN: half-close the destination), ``"close"`` (close the whole connection, FIN both
ways) or ``"reset"`` (reset both sides with RST). Stages never block: a stage that
delays data keeps a queue of ``(due, item)`` and one timer on the event loop.

A stage sees only its host, declared here as :class:`StageHost` (the proxy's link
implements it): ``now()``, ``discard(n)`` (bytes dropped, for flow control), ``loop``,
``random`` and ``conn`` (:class:`ConnHost`: ``close()``, ``reset()``, ``expire()``,
``blame()``, ``last_activity``). The engine imports this module, never the reverse.
"""

from __future__ import annotations

import asyncio
from collections import deque
from random import Random
from typing import Protocol

from . import _toxics as tx

__all__ = ["ConnHost", "Stage", "StageHost", "make_stage"]

_TIMER_SLACK = 0.0005  # seconds: items due this close to "now" are sent in the same pass


class _Next(Protocol):
    def feed(self, chunk: bytes) -> None: ...
    def end(self, kind: str) -> None: ...


class ConnHost(Protocol):
    """The connection a stage acts on. ``why`` texts only feed the connection log."""

    @property
    def last_activity(self) -> float: ...

    def close(self, why: str | None = None) -> None:
        """Close both sides with FIN."""

    def reset(self, why: str | None = None) -> None:
        """Close both sides with RST."""

    def expire(self, why: str) -> None:
        """Close both sides with FIN because a timeout ran out."""

    def blame(self, why: str) -> None:
        """Name the cause of an end that is on its way down the chain."""


class StageHost(_Next, Protocol):
    """One direction of one connection, as a stage sees it; also the chain's sink."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def random(self) -> Random: ...

    @property
    def conn(self) -> ConnHost: ...

    def now(self) -> float: ...

    def discard(self, n: int) -> None: ...


class Stage:
    """A toxic attached to one direction of one connection. The base passes items on."""

    __slots__ = ("counter", "link", "nxt", "spec")

    def __init__(self, spec: tx.Toxic, link: StageHost, counter: list[int]) -> None:
        self.spec = spec
        self.link = link
        self.nxt: _Next = link
        self.counter = counter  # [connections, bytes] shared with the proxy's metrics

    def attach(self) -> None:
        """Called once the stage is in the chain (start timers here)."""

    def feed(self, chunk: bytes) -> None:
        self.counter[1] += len(chunk)
        self.data(chunk)

    def data(self, chunk: bytes) -> None:
        self.nxt.feed(chunk)

    def end(self, kind: str) -> None:
        self.nxt.end(kind)

    def detach(self) -> None:
        """The toxic is being removed: hand anything held back to the next stage."""

    def cancel(self) -> None:
        """The connection is closing: drop timers and held items."""


class _Timed(Stage):
    """A stage that releases items at due times, in order, with one loop timer."""

    __slots__ = ("last_due", "queue", "timer")

    def __init__(self, spec: tx.Toxic, link: StageHost, counter: list[int]) -> None:
        Stage.__init__(self, spec, link, counter)
        self.queue: deque[tuple[float, bytes | str]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.last_due = 0.0

    def push(self, due: float, item: bytes | str) -> None:
        if due > self.last_due:
            self.last_due = due
        if not self.queue and due <= self.link.now() + _TIMER_SLACK:
            self._forward(item)
            return
        self.queue.append((due, item))
        if self.timer is None:
            self.timer = self.link.loop.call_at(self.queue[0][0], self._fire)

    def _forward(self, item: bytes | str) -> None:
        if isinstance(item, str):
            self.nxt.end(item)
        else:
            self.nxt.feed(item)

    def _fire(self) -> None:
        self.timer = None
        horizon = self.link.now() + _TIMER_SLACK
        queue = self.queue
        while queue and queue[0][0] <= horizon:
            self._forward(queue.popleft()[1])
        if queue and self.timer is None:
            self.timer = self.link.loop.call_at(queue[0][0], self._fire)

    def after_last(self) -> float:
        """The earliest time a new item may leave without overtaking queued ones."""
        now = self.link.now()
        return self.last_due if self.last_due > now else now

    def end(self, kind: str) -> None:
        self.push(self.after_last(), kind)

    def detach(self) -> None:
        self._cancel_timer()
        while self.queue:
            self._forward(self.queue.popleft()[1])

    def cancel(self) -> None:
        self._cancel_timer()
        self.queue.clear()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _LatencyStage(_Timed):
    __slots__ = ()
    spec: tx.Latency

    def data(self, chunk: bytes) -> None:
        spec = self.spec
        delay: float = spec.latency
        if spec.jitter:
            delay += self.link.random.uniform(-spec.jitter, spec.jitter)
        due = self.link.now() + max(delay, 0) / 1000.0
        self.push(max(due, self.last_due), chunk)


class _BandwidthStage(_Timed):
    __slots__ = ("free_at",)
    spec: tx.Bandwidth

    def __init__(self, spec: tx.Toxic, link: StageHost, counter: list[int]) -> None:
        _Timed.__init__(self, spec, link, counter)
        self.free_at = 0.0

    def data(self, chunk: bytes) -> None:
        rate = self.spec.rate * 1000.0  # bytes per second
        piece = max(int(rate / 10), 1)  # 100 ms worth, as Toxiproxy slices
        now = self.link.now()
        for i in range(0, len(chunk), piece):
            part = chunk[i : i + piece]
            start = self.free_at if self.free_at > now else now
            self.free_at = start + len(part) / rate
            self.push(self.free_at, part)


class _SlowCloseStage(_Timed):
    __slots__ = ()
    spec: tx.SlowClose

    def data(self, chunk: bytes) -> None:
        self.push(self.after_last(), chunk)

    def end(self, kind: str) -> None:
        due = self.link.now() + self.spec.delay / 1000.0
        self.push(max(due, self.last_due), kind)


class _SlicerStage(_Timed):
    __slots__ = ()
    spec: tx.Slicer

    def data(self, chunk: bytes) -> None:
        spec = self.spec
        step = spec.delay / 1e6
        due = self.after_last()
        cuts = _slice_points(len(chunk), spec.average_size, spec.size_variation, self.link.random)
        for i in range(1, len(cuts)):
            self.push(due, chunk[cuts[i - 1] : cuts[i]])
            due += step


def _slice_points(size: int, average: int, variation: int, rnd: Random) -> list[int]:
    """Offsets cutting ``size`` bytes into pieces of ``average`` ± ``variation`` bytes,
    halving recursively as Toxiproxy's slicer does (no small piece at either end)."""
    points = [0]
    stack = [(0, size)]
    while stack:
        start, end = stack.pop()
        if (end - start) - average <= variation:
            points.append(end)
            continue
        mid = start + (end - start) // 2
        if variation > 0:
            mid += rnd.randrange(-variation, variation)
        stack.append((mid, end))
        stack.append((start, mid))
    return points


class _TimeoutStage(Stage):
    __slots__ = ("timer",)
    spec: tx.Timeout

    def __init__(self, spec: tx.Toxic, link: StageHost, counter: list[int]) -> None:
        Stage.__init__(self, spec, link, counter)
        self.timer: asyncio.TimerHandle | None = None

    def attach(self) -> None:
        timeout = self.spec.timeout
        if timeout > 0:
            self.timer = self.link.loop.call_later(
                timeout / 1000.0, self.link.conn.expire, f"toxic {self.spec.name}"
            )

    def data(self, chunk: bytes) -> None:
        self.link.discard(len(chunk))

    def detach(self) -> None:
        # As in Toxiproxy: the stream lost bytes, so removing the toxic ends it.
        self.cancel()
        self.link.conn.close(f"toxic {self.spec.name} removed after dropping bytes")

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _ResetPeerStage(Stage):
    __slots__ = ("timer", "triggered")
    spec: tx.ResetPeer

    def __init__(self, spec: tx.Toxic, link: StageHost, counter: list[int]) -> None:
        Stage.__init__(self, spec, link, counter)
        self.timer: asyncio.TimerHandle | None = None
        self.triggered = False

    def data(self, chunk: bytes) -> None:
        self.link.discard(len(chunk))
        self._trigger()

    def end(self, kind: str) -> None:
        self._trigger()

    def _trigger(self) -> None:
        if self.triggered:
            return
        self.triggered = True
        timeout = self.spec.timeout
        why = f"toxic {self.spec.name}"
        if timeout > 0:
            self.timer = self.link.loop.call_later(timeout / 1000.0, self.link.conn.reset, why)
        else:
            self.link.conn.reset(why)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _LimitStage(Stage):
    """``limit_data`` (then close) and ``reset_at`` (then reset)."""

    __slots__ = ("done", "kind", "passed")
    spec: tx.LimitData | tx.ResetAt

    def __init__(self, spec: tx.Toxic, link: StageHost, counter: list[int]) -> None:
        Stage.__init__(self, spec, link, counter)
        self.passed = 0
        self.done = False
        self.kind = "reset" if isinstance(spec, tx.ResetAt) else "close"

    def data(self, chunk: bytes) -> None:
        if self.done:
            self.link.discard(len(chunk))
            return
        remaining = self.spec.bytes - self.passed
        if len(chunk) < remaining:
            self.passed += len(chunk)
            self.nxt.feed(chunk)
            return
        self.done = True
        self.passed += remaining
        if len(chunk) > remaining:
            self.link.discard(len(chunk) - remaining)
            chunk = chunk[:remaining]
        if chunk:
            self.nxt.feed(chunk)
        self.link.conn.blame(f"toxic {self.spec.name} after {self.passed} B")
        self.nxt.end(self.kind)

    def end(self, kind: str) -> None:
        if not self.done:
            self.nxt.end(kind)


class _IdleResetStage(Stage):
    __slots__ = ("timer",)
    spec: tx.IdleReset

    def __init__(self, spec: tx.Toxic, link: StageHost, counter: list[int]) -> None:
        Stage.__init__(self, spec, link, counter)
        self.timer: asyncio.TimerHandle | None = None

    def _idle_s(self) -> float:
        return self.spec.idle / 1000.0

    def attach(self) -> None:
        if self.spec.trigger == "timer":
            self._arm()

    def _arm(self) -> None:
        due = self.link.conn.last_activity + self._idle_s()
        self.timer = self.link.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self.timer = None
        if self.link.now() - self.link.conn.last_activity >= self._idle_s() - _TIMER_SLACK:
            self._close()
        else:
            self._arm()

    def _close(self) -> None:
        conn = self.link.conn
        why = f"toxic {self.spec.name} after {self.spec.idle} ms idle"
        if self.spec.close == "rst":
            conn.reset(why)
        else:
            conn.close(why)

    def data(self, chunk: bytes) -> None:
        spec = self.spec
        if spec.trigger == "data" and self.link.now() - self.link.conn.last_activity >= (
            self._idle_s()
        ):
            self.link.discard(len(chunk))
            self._close()
            return
        self.nxt.feed(chunk)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def detach(self) -> None:
        self.cancel()


_STAGES: dict[type[tx.Toxic], type[Stage]] = {
    tx.Latency: _LatencyStage,
    tx.Bandwidth: _BandwidthStage,
    tx.SlowClose: _SlowCloseStage,
    tx.Slicer: _SlicerStage,
    tx.Timeout: _TimeoutStage,
    tx.ResetPeer: _ResetPeerStage,
    tx.LimitData: _LimitStage,
    tx.ResetAt: _LimitStage,
    tx.IdleReset: _IdleResetStage,
}


def make_stage(spec: tx.Toxic, link: StageHost, counter: list[int]) -> Stage:
    """The stage that runs ``spec`` on ``link`` (one direction of one connection)."""
    return _STAGES[type(spec)](spec, link, counter)
