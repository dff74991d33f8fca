"""Idle expiry: how long a pooled connection to one origin may sit idle before reuse.

The limit for an origin is the lowest of: the configured ``idle_timeout``; the server's
``Keep-Alive: timeout=N`` hint minus :data:`~resetguard.http._rules.KEEPALIVE_MARGIN`; and
a limit **learned** from connections this origin's server closed while they sat idle.

Learning: a connection found closed (or failing on reuse before any response byte) after
``a`` seconds of idleness says the server's idle timeout is at most ``a``. A successful
reuse after ``b`` seconds says it is more than ``b``, so a close seen at ``a <= b`` had
another cause (a restart, a deploy) and is ignored. After :data:`LEARN_AFTER` consistent
observations the origin's limit becomes :data:`LEARN_FACTOR` times the smallest ``a``.
The learned limit only goes down; :meth:`IdleLimits.forget` resets it.

Example::

    >>> from resetguard.http._idle import IdleLimits
    >>> limits = IdleLimits(4.0)
    >>> limits.limit("api:443")
    4.0
    >>> limits.hint("api:443", 3.0)
    >>> limits.limit("api:443")
    2.0
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from .._events import ConnectionEvent, _registry, emit
from ._rules import KEEPALIVE_MARGIN

__all__ = [
    "LEARN_AFTER",
    "LEARN_FACTOR",
    "IdleLimits",
    "OriginIdle",
    "announce",
    "expires_at",
    "origin_of",
]

#: Two observations before acting: one close can be a coincidence, two at similar ages
#: are the server's timer.
LEARN_AFTER = 2
#: Expire at 80 % of the shortest idle age at which the server closed: the other 20 %
#: covers the request's flight time and the server timer's jitter.
LEARN_FACTOR = 0.8
#: Origins remembered (least recently updated forgotten first): bounds memory for
#: clients that talk to many hosts.
MAX_ORIGINS = 1024


def announce(source: str, action: str, peer: str, idle_age: float | None = None) -> None:
    """Emit a :class:`~resetguard.ConnectionEvent` (``source``: the library), if anyone listens.

    Without a hook installed this costs one attribute read.
    """
    if _registry.hooks:
        emit(ConnectionEvent(name=source, action=action, peer=peer, idle_age=idle_age))


def origin_of(url: str) -> str:
    """The ``host:port`` key of a URL's origin, the key of every per-origin state.

    Example::

        >>> from resetguard.http._idle import origin_of
        >>> origin_of("https://api.example/v1"), origin_of("http://[::1]:8080/")
        ('api.example:443', '::1:8080')
    """
    # The origin depends only on what precedes the path: cached by that head, so a client
    # parses each origin once, not once per request (urlsplit is ~10 µs of Python).
    # The authority ends at the first "/" after "scheme://" (index 8 is past "https://",
    # and still inside any http:// host): a shorter scheme only makes the cached head
    # longer, never wrong, since the origin is parsed from it.
    end = url.find("/", 8)
    head = url if end < 0 else url[:end]
    origin = _ORIGINS.get(head)
    if origin is None:
        parts = urlsplit(head)
        port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
        origin = f"{parts.hostname}:{port}"
        if len(_ORIGINS) < _MAX_CACHED_ORIGINS:
            _ORIGINS[head] = origin
    return origin


#: Origins parsed so far, by the URL's head (scheme and authority); bounded, and not
#: evicted: a process that meets more heads than this parses the rest each time.
_ORIGINS: dict[str, str] = {}
_MAX_CACHED_ORIGINS = 1024


def expires_at(
    last_used: float | None, created: float, limit: float | None, max_age: float | None
) -> float | None:
    """When a pooled connection passes its idle ``limit`` or its ``max_age`` (None: never).

    A connection is expired once the clock is past this time.

    Example::

        >>> from resetguard.http._idle import expires_at
        >>> expires_at(last_used=10.0, created=0.0, limit=4.0, max_age=12.0)
        12.0
    """
    due = None if limit is None or last_used is None else last_used + limit
    if max_age is not None:
        aged = created + max_age
        due = aged if due is None else min(due, aged)
    return due


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginIdle:
    """What is known about one origin's idle behaviour (a snapshot).

    ``limit`` is the idle limit in force (``None``: no limit).
    """

    origin: str
    limit: float | None
    hint: float | None
    learned: float | None
    closed_min: float | None
    observations: int
    alive_max: float


class _State:
    __slots__ = ("alive_max", "closed_min", "hint", "learned", "observations")

    def __init__(self) -> None:
        self.hint: float | None = None
        self.learned: float | None = None
        self.closed_min: float | None = None
        self.observations = 0
        self.alive_max = 0.0


class IdleLimits:
    """Per-origin idle limits (thread-safe; reads take no lock).

    Args:
        idle_timeout: the configured limit (``None``: none unless a hint or learning sets one).
        learn: learn limits from connections the server closes while idle.
    """

    __slots__ = ("_lock", "_states", "floor", "idle_timeout", "learn", "overrides")

    def __init__(self, idle_timeout: float | None, *, learn: bool = True) -> None:
        self.idle_timeout = idle_timeout
        self.learn = learn
        self._lock = threading.Lock()
        self._states: OrderedDict[str, _State] = OrderedDict()
        #: origin -> limit in force, for the origins whose limit is not ``idle_timeout``
        #: (read only; ``overrides.get(origin, idle_timeout)`` is :meth:`limit` without
        #: a call, for the checks made on every request)
        self.overrides: dict[str, float | None] = {}
        #: the lowest limit in force for any origin (None: no origin has one): no pooled
        #: connection expires sooner than this after its last use
        self.floor = idle_timeout

    def limit(self, origin: str) -> float | None:
        """The idle limit in force for ``origin``."""
        return self.overrides.get(origin, self.idle_timeout)

    def hint(self, origin: str, keep_alive_timeout: float) -> None:
        """The server announced ``Keep-Alive: timeout=keep_alive_timeout``."""
        state = self._states.get(origin)
        if state is not None and state.hint == keep_alive_timeout:
            return  # the common case: the same header on every response, no lock
        with self._lock:
            state = self._state(origin)
            state.hint = keep_alive_timeout
            self._update(origin, state)

    def alive(self, origin: str, idle_age: float) -> None:
        """A connection idle for ``idle_age`` seconds served a request: the server kept it."""
        state = self._states.get(origin)
        if state is None:
            if not self.learn:
                return
            with self._lock:
                state = self._state(origin)
        if idle_age > state.alive_max:
            state.alive_max = idle_age  # a lost race between threads only loses a maximum

    def closed(self, origin: str, idle_age: float) -> bool:
        """The server closed a connection that was idle for ``idle_age`` seconds.

        Returns True when the observation changed the learned limit.
        """
        if not self.learn or idle_age <= 0:
            return False
        with self._lock:
            state = self._state(origin)
            if idle_age <= state.alive_max:
                return False  # inconsistent with an idle timer: a restart or a deploy
            state.observations += 1
            if state.closed_min is None or idle_age < state.closed_min:
                state.closed_min = idle_age
            if state.observations < LEARN_AFTER:
                return False
            learned = state.closed_min * LEARN_FACTOR
            if state.learned is not None and learned >= state.learned:
                return False
            state.learned = learned
            self._update(origin, state)
            return True

    def forget(self, origin: str | None = None) -> None:
        """Drop what was learned about ``origin`` (or about every origin)."""
        with self._lock:
            if origin is None:
                self._states.clear()
                self.overrides.clear()
            else:
                self._states.pop(origin, None)
                self.overrides.pop(origin, None)
            self._refloor()

    def snapshot(self) -> list[OriginIdle]:
        """What is known about every remembered origin."""
        with self._lock:
            return [
                OriginIdle(
                    origin=o,
                    limit=self.limit(o),
                    hint=s.hint,
                    learned=s.learned,
                    closed_min=s.closed_min,
                    observations=s.observations,
                    alive_max=s.alive_max,
                )
                for o, s in self._states.items()
            ]

    def _state(self, origin: str) -> _State:
        """Caller holds the lock."""
        state = self._states.get(origin)
        if state is None:
            if len(self._states) >= MAX_ORIGINS:
                old, _ = self._states.popitem(last=False)
                if self.overrides.pop(old, None) is not None:
                    self._refloor()
            state = self._states[origin] = _State()
        else:
            self._states.move_to_end(origin)
        return state

    def _update(self, origin: str, state: _State) -> None:
        """Caller holds the lock."""
        candidates = [x for x in (self.idle_timeout, state.learned) if x is not None]
        if state.hint is not None:
            candidates.append(max(0.0, state.hint - KEEPALIVE_MARGIN))
        limit = min(candidates) if candidates else None
        if limit == self.idle_timeout:
            self.overrides.pop(origin, None)
        else:
            self.overrides[origin] = limit
        self._refloor()

    def _refloor(self) -> None:
        """Caller holds the lock."""
        limits = [x for x in (self.idle_timeout, *self.overrides.values()) if x is not None]
        self.floor = min(limits) if limits else None
