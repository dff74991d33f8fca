"""Compose a deadline, a retry budget, a circuit breaker and retries into one policy.

The order is fixed, outermost first, because each layer must see what the next one does:

1. **deadline** — bounds the whole logical call: no attempt starts after it, waits are
   clamped to it;
2. **budget** — counts every logical call and must grant every *retry*, so a fleet's
   retries stay a fraction of its traffic;
3. **breaker** — is asked before *every attempt* and told each attempt's outcome: when it
   opens mid-call, the remaining retries are skipped and the caller gets its own last error;
4. **retry** — the attempt loop with backoff and the safety rules (`idempotent`).

A :class:`Pipeline` is immutable: every ``with_*`` returns a new one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, ParamSpec, TypeVar

from ._api import Decorates
from ._policy import BreakerLike, BudgetLike
from ._retry import Retry, merge
from ._validate import check_positive

__all__ = ["Pipeline"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Pipeline(Decorates):
    """deadline → budget → breaker → retry, built step by step, immutable once built.

    Example::

        >>> import resetguard
        >>> breaker = resetguard.CircuitBreaker("inventory")
        >>> budget = resetguard.RetryBudget("inventory")
        >>> pipe = (
        ...     resetguard.Pipeline()
        ...     .with_deadline(5)
        ...     .with_budget(budget)
        ...     .with_breaker(breaker)
        ...     .with_retry(attempts=4)
        ... )
        >>> pipe.call(sum, [1, 2])
        3
        >>> print(pipe.describe())
        deadline 5 s → budget 'inventory' → breaker 'inventory' → retry (4 attempts)
    """

    policy: Retry = field(default_factory=Retry)

    def with_deadline(self, seconds: float | None) -> Pipeline:
        """Bound the whole call (all attempts and waits) to ``seconds``; ``None`` removes it."""
        if seconds is not None:
            check_positive("deadline", seconds, allow_inf=True)
        return Pipeline(replace(self.policy, deadline=seconds))

    def with_budget(self, budget: BudgetLike | None) -> Pipeline:
        """Make every retry ask ``budget`` (a :class:`~resetguard.RetryBudget`) first."""
        return Pipeline(replace(self.policy, budget=budget))

    def with_breaker(self, breaker: BreakerLike | None) -> Pipeline:
        """Guard every attempt with ``breaker`` (a :class:`~resetguard.CircuitBreaker`)."""
        return Pipeline(replace(self.policy, breaker=breaker))

    def with_retry(self, policy: Retry | None = None, /, **options: Any) -> Pipeline:
        """Set the retry options (``attempts=``, ``backoff=``, ``idempotent=`` …).

        A ``policy`` given here replaces the retry settings but keeps this pipeline's
        deadline, budget and breaker unless ``options`` name them.
        """
        keep = {
            "deadline": self.policy.deadline,
            "budget": self.policy.budget,
            "breaker": self.policy.breaker,
        }
        base = merge(policy, {}) if policy is not None else self.policy
        return Pipeline(merge(base, {**keep, **options}))

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` through the pipeline."""
        return self.policy.call(fn, *args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` through the pipeline (asyncio or trio)."""
        return await self.policy.acall(fn, *args, **kwargs)

    def describe(self) -> str:
        """One line naming each layer in order."""
        p = self.policy
        parts = []
        if p.deadline is not None:
            parts.append(f"deadline {p.deadline:g} s")
        if p.budget is not None:
            parts.append(f"budget {p.budget.name!r}")
        if p.breaker is not None:
            parts.append(f"breaker {p.breaker.name!r}")
        parts.append(f"retry ({p.attempts} attempt{'s' if p.attempts != 1 else ''})")
        return " → ".join(parts)
