"""Fleet-wide circuit breakers and retry budgets: their state shared through Redis.

One process's breaker cannot see the other replicas retrying the same failing
dependency; give every process's breaker and budget the same backend and the fleet acts
as one (see ``docs/fleet.md``). ``redis`` is imported only when a backend is made.

Example::

    import resetguard
    from resetguard.fleet import RedisBackend

    backend = RedisBackend.from_url("redis://127.0.0.1:6379/0", namespace="shop")
    breaker = resetguard.CircuitBreaker("payments", backend=backend)
    budget = resetguard.RetryBudget("payments", backend=backend)
"""

from __future__ import annotations

from ._redis import RedisBackend

__all__ = ["RedisBackend"]
