"""A client's own retry budget and one circuit breaker per origin.

Every resetguard HTTP client holds an :class:`OriginGuards`: its retry budget caps the
client's retries to a fraction of its requests, and each origin (``host:port``) gets a
breaker of its own, so one dead origin never fails calls to another. Both are built from
the :class:`~resetguard.http.HTTPPolicy`; a breaker or budget named in the policy's
``retry`` replaces them (shared, for instance, by several clients).

Example::

    >>> from resetguard.http import HTTPPolicy
    >>> from resetguard.http._guards import OriginGuards
    >>> guards = OriginGuards(HTTPPolicy())
    >>> guards.breaker("api.example:443").name
    'api.example:443'
    >>> sorted(guards.states())
    ['api.example:443']
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .._breaker import BreakerStatistics, CircuitBreaker, CircuitState
from .._budget import RetryBudget
from ._rules import HTTPPolicy

__all__ = ["MAX_ORIGINS", "OriginGuards"]

#: Breakers kept per client, least recently used dropped first: bounds memory for a
#: client that talks to many hosts (a dropped origin starts afresh, closed).
MAX_ORIGINS = 1024


class OriginGuards:
    """The retry budget and per-origin circuit breakers of one HTTP client.

    ``budget`` is the client's :class:`~resetguard.RetryBudget` (``None`` when switched off
    or replaced by the policy's own). :meth:`breaker` returns the breaker of an origin,
    creating it on first use; :meth:`states` and :meth:`statistics` read them all.
    """

    def __init__(self, policy: HTTPPolicy, *, name: str = "http") -> None:
        retry = policy.retry
        clock: Callable[[], float] = retry.clock or time.monotonic
        self._clock = clock
        #: the client's own retry budget, or None
        self.budget: RetryBudget | None = None
        if policy.budget and retry.budget is None:
            self.budget = RetryBudget(name, clock=clock)
        self._policy = policy.breakers if retry.breaker is None else None
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()
        self._lock = threading.Lock()

    def breaker(self, origin: str) -> CircuitBreaker | None:
        """The breaker guarding ``origin`` (``host:port``); None when switched off."""
        policy = self._policy
        if policy is None:
            return None
        breakers = self._breakers
        found = breakers.get(origin)
        if found is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs an object per request
                breakers.move_to_end(origin)
            except KeyError:  # dropped by another thread meanwhile: it still works here
                pass
            return found
        with self._lock:
            found = breakers.get(origin)
            if found is None:
                found = CircuitBreaker.from_policy(policy, origin, clock=self._clock)
                breakers[origin] = found
                while len(breakers) > MAX_ORIGINS:
                    breakers.popitem(last=False)
            return found

    def states(self) -> dict[str, CircuitState]:
        """Each known origin's breaker state."""
        return {origin: b.state for origin, b in list(self._breakers.items())}

    def statistics(self) -> dict[str, BreakerStatistics]:
        """Each known origin's breaker counters."""
        return {origin: b.statistics() for origin, b in list(self._breakers.items())}
