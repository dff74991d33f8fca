"""The public retry policy: :class:`Retry`, the policy value plus the ways to call through it.

The fields and their checks live one layer down (``_policy``); the methods here hand a
call to the drivers, so the value never imports what drives it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from ._drivers import AttemptContext, adrive, drive
from ._engine import Resolution, Run
from ._policy import RetryPolicy

__all__ = ["Retry", "merge"]

P = ParamSpec("P")
R = TypeVar("R")


class Retry(RetryPolicy):
    """When and how to retry a call. A frozen value: share it freely.

    Args:
        attempts: total attempts including the first (≥ 1).
        deadline: seconds after the first attempt started when no new attempt may start
            (``None``: no deadline). Waits are clamped to what remains.
        backoff: the wait schedule (:class:`Backoff`).
        on: what to retry. ``None`` (default): connection faults of ``kinds`` as decided by
            :func:`resetguard.classify`. Otherwise an exception type, a tuple of types or a
            predicate ``(exc) -> bool``.
        kinds: connection-fault kinds retried when ``on`` is ``None``.
        idempotent: whether running the operation twice has the effect of running it once.
            ``None`` (default, not declared): a fault is retried until the attempt passes its
            point of no return (``attempt.sent()``); after it the outcome is unknown and the
            operation is never rerun blindly (a ``resolve`` hook may settle it). ``True``:
            retried even after the point of no return. ``False``: only failures proven to
            happen before anything was sent (``Phase.CONNECT``) are retried.
        patience: seconds from the call's start during which a dependency that takes no
            request (connection refused, connect timeout: nothing was sent) is waited for:
            such failures do not spend ``attempts``, and an open ``breaker``'s next probe
            is awaited when it falls within the patience and the deadline. ``0`` (default
            here; :mod:`resetguard.http` clients use 5 s): neither.
        retry_after: hook returning a server-requested delay for an exception (e.g. from a
            ``Retry-After`` header) or ``None``; it overrides the backoff, clamped to the deadline.
        breaker, budget: a :class:`~resetguard.CircuitBreaker` / :class:`~resetguard.RetryBudget`.
        name: names the operation in logs and events (defaults to the function's name).
        on_retry, on_giveup: hooks receiving :class:`~resetguard.RetryScheduled` /
            :class:`~resetguard.GaveUp`.
        clock, sleep, async_sleep, random: injectable time and randomness (tests).

    Example::

        >>> from resetguard import Retry
        >>> Retry(attempts=5, deadline=10).attempts
        5
    """

    __slots__ = ()

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` under this policy.

        Example::

            >>> from resetguard import Retry
            >>> Retry(attempts=2).call(divmod, 7, 2)
            (3, 1)
        """
        return drive(Run(self), fn, None, args, kwargs)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` under this policy (asyncio or trio)."""
        return await adrive(Run(self), fn, None, args, kwargs)

    def run(
        self,
        fn: Callable[[AttemptContext], R],
        /,
        *,
        resolve: Callable[[BaseException], Resolution] | None = None,
        raise_unknown: bool = False,
    ) -> R:
        """Call ``fn(attempt)`` under this policy; ``fn`` may mark its point of no return.

        ``fn`` gets the :class:`~resetguard.AttemptContext` and calls ``attempt.sent()`` just
        before the step after which the operation may have taken effect (a ``COMMIT``, a
        write that cannot be undone). A connection fault before it is retried as usual;
        after it, the engine asks ``resolve(exc)`` (when given) whether the operation took
        effect, and otherwise surfaces an unknown outcome: your exception, with
        :func:`resetguard.outcome_unknown` true, or with ``raise_unknown=True`` an
        :class:`~resetguard.OutcomeUnknown` raised from it.

        Example::

            >>> import resetguard
            >>> from resetguard import Backoff, Resolution, Retry
            >>> log = []
            >>> def transfer(attempt):
            ...     log.append(attempt.number)
            ...     attempt.sent()  # the "COMMIT" is on its way
            ...     raise ConnectionResetError(104, "Connection reset by peer")
            >>> Retry(backoff=Backoff.none()).run(
            ...     transfer, resolve=lambda exc: Resolution.done("committed")
            ... )
            'committed'
            >>> log
            [1]
        """
        run = Run(self)
        run.raise_unknown = raise_unknown
        return drive(run, fn, resolve)

    async def arun(
        self,
        fn: Callable[[AttemptContext], Awaitable[R]],
        /,
        *,
        resolve: Callable[[BaseException], Awaitable[Resolution]] | None = None,
        raise_unknown: bool = False,
    ) -> R:
        """The async form of :meth:`run`: ``fn`` and ``resolve`` are coroutine functions."""
        run = Run(self)
        run.raise_unknown = raise_unknown
        return await adrive(run, fn, resolve)


_DEFAULT = Retry()


def merge(policy: Retry | None, options: dict[str, Any]) -> Retry:
    """``policy`` (default ``Retry()``) with ``options`` replacing its fields.

    Example::

        >>> from resetguard._retry import merge
        >>> merge(None, {"attempts": 5}).attempts
        5
    """
    if policy is not None and not isinstance(policy, Retry):
        raise TypeError(f"policy must be a resetguard.Retry, got {policy!r}")
    base = policy or _DEFAULT
    if not options:
        return base
    fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise TypeError(f"unknown retry option(s): {', '.join(unknown)}")
    return Retry(**{**fields, **options})
