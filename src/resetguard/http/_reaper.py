"""Retire idle pooled connections when they pass their limit, not when they are next taken.

Checking the limit only when a connection is taken out of the pool closes it *at the next
request*: if that request comes just before the server's own idle close, the client's FIN
arrives as the server times the connection out, and the server sees one more connection
torn down under a race it was about to win. Closing the connection as soon as it passes
its limit keeps the client's close well clear of the server's timer.

One daemon thread per process (started on first use, gone when nothing is scheduled)
calls ``owner._reap() -> float | None`` at the time the owner asked for; the owner closes
what has expired (under its pool's lock, so a connection is never taken and closed at
once) and returns when it wants to be called again. Owners are held weakly: a client that
is dropped without ``close()`` is not kept alive.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
import weakref
from typing import Protocol

__all__ = ["Reapable", "schedule"]


class Reapable(Protocol):
    _reap_due: float | None

    def _reap(self) -> float | None: ...


_lock = threading.Condition(threading.Lock())
_heap: list[tuple[float, int, weakref.ref[Reapable]]] = []
_seq = itertools.count()
_thread: threading.Thread | None = None
_pid = os.getpid()


def schedule(owner: Reapable, when: float) -> None:
    """Call ``owner._reap()`` at ``when`` (``time.monotonic()``), unless already due earlier."""
    global _thread, _pid
    due = owner._reap_due
    if due is not None and due <= when:
        # Read without the lock (the common case: every request returns a connection):
        # even if the reaper is just taking that entry, its sweep runs after this and
        # sees the connection the caller returned, and reschedules for it.
        return
    with _lock:
        due = owner._reap_due
        if due is not None and due <= when:
            return  # the earlier call reschedules itself while anything is left
        owner._reap_due = when
        heapq.heappush(_heap, (when, next(_seq), weakref.ref(owner)))
        if os.getpid() != _pid:  # forked: the parent's thread does not exist here
            _pid, _thread = os.getpid(), None
        if _thread is None:
            _thread = threading.Thread(target=_run, name="resetguard-idle-reaper", daemon=True)
            _thread.start()
        elif _heap[0][0] == when:
            _lock.notify()


def _run() -> None:
    global _thread
    while True:
        with _lock:
            while True:
                if not _heap:
                    _thread = None  # nothing left to watch: a later schedule() starts anew
                    return
                when, _, ref = _heap[0]
                wait = when - time.monotonic()
                if wait <= 0:
                    heapq.heappop(_heap)
                    break
                _lock.wait(wait)
            owner = ref()
            if owner is None or owner._reap_due != when:
                continue  # dropped, or superseded by an earlier entry
            owner._reap_due = None
        try:
            again = owner._reap()
        except Exception:  # a sweep must never kill the thread other clients rely on
            again = None
        if again is not None:
            schedule(owner, again)
        del owner
