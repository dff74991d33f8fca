"""The public retry shapes: ``@retry``, ``retrying()``, ``call()`` and ``acall()``.

Each is a thin shape over the drivers (``_drivers``) and the engine (``_engine``). The
decorator without a breaker or budget inlines its first attempt, so a call that succeeds
costs one clock read and a ``try``; its first failure hands the call to the driver.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar, overload

from . import _clock
from ._drivers import AttemptContext, Attempts, adrive, drive
from ._engine import Run, first_failed, first_refused, first_ticket, settle
from ._retry import _DEFAULT, Retry, merge

__all__ = ["acall", "call", "retry", "retrying"]

P = ParamSpec("P")
R = TypeVar("R")


def call(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Call ``fn(*args, **kwargs)`` under the default :class:`Retry` policy.

    For a policy of your own, call through it: ``Retry(attempts=5).call(fn, *args)``.

    Example::

        >>> import resetguard
        >>> resetguard.call(int, "42")
        42
    """
    return _DEFAULT.call(fn, *args, **kwargs)


async def acall(fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Await ``fn(*args, **kwargs)`` under the default :class:`Retry` policy (asyncio or trio)."""
    return await _DEFAULT.acall(fn, *args, **kwargs)


def _wrap(p: Retry, fn: Callable[P, R]) -> Callable[P, R]:
    if not callable(fn):
        raise TypeError(f"@retry needs a function, got {fn!r}")
    if not p.name:
        p = merge(p, {"name": getattr(fn, "__qualname__", repr(fn))})
    clock = p.clock or _clock.monotonic
    breaker, budget = p.breaker, p.budget
    guarded = breaker is not None or budget is not None
    if inspect.iscoroutinefunction(fn):
        afn: Callable[..., Awaitable[Any]] = fn
        if guarded:

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                start = clock()
                opened = first_ticket(breaker, budget)
                if not isinstance(opened, tuple):  # refused: wait for the probe, or raise
                    return await adrive(
                        first_refused(Run(p, start), opened), afn, None, args, kwargs
                    )
                try:
                    result = await afn(*args, **kwargs)
                except BaseException as exc:
                    run = first_failed(Run(p, start), opened, exc)
                    if run is None:
                        raise
                    return await adrive(run, afn, None, args, kwargs)
                settle(breaker, opened, None)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        async def async_fast_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return await afn(*args, **kwargs)
            except Exception as exc:
                run = Run(p, start)
                if run.failed(exc) is None:
                    raise
            return await adrive(run, afn, None, args, kwargs)

        return async_fast_wrapper  # type: ignore[return-value]

    if guarded:
        # Inlined too: the budget's deposit and the breaker's ticket around the first
        # attempt, through the engine's own primitives; a run is built only if it fails
        # (or the breaker refuses it: the run then decides whether to wait for a probe).
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = clock()
            opened = first_ticket(breaker, budget)
            if not isinstance(opened, tuple):  # refused: wait for the probe, or raise
                return drive(first_refused(Run(p, start), opened), fn, None, args, kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                run = first_failed(Run(p, start), opened, exc)
                if run is None:
                    raise
                return drive(run, fn, None, args, kwargs)
            settle(breaker, opened, None)
            return result

        return wrapper

    # The success path is one clock read and a try: the engine starts only on failure.
    @functools.wraps(fn)
    def fast_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        start = clock()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            run = Run(p, start)
            if run.failed(exc) is None:
                raise
        return drive(run, fn, None, args, kwargs)

    return fast_wrapper


class Decorates:
    """Anything with a ``policy`` that decorates sync and async functions with it."""

    __slots__ = ()
    policy: Retry

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a sync or async function with the policy."""
        return _wrap(self.policy, fn)


class _Decorator(Decorates):
    """What ``retry(...)`` returns: applies one frozen policy to any function."""

    __slots__ = ("policy",)

    def __init__(self, policy: Retry) -> None:
        self.policy = policy

    def __repr__(self) -> str:
        return f"resetguard.retry({self.policy!r})"


def retry(policy: Retry | None = None, /, **options: Any) -> _Decorator:
    """Decorate a sync or async function so connection faults are retried safely.

    Options are :class:`Retry` fields (``attempts=``, ``deadline=``, ``backoff=``, ``on=``,
    ``idempotent=``, ``breaker=``, ``budget=``, ``on_retry=`` …) and override ``policy``.
    Defaults: connection faults only, 3 attempts, full jitter from 0.1 s doubling to a 10 s
    cap, 30 s deadline. The last exception is re-raised unchanged, with
    :func:`resetguard.history` attached.

    Example::

        >>> import resetguard
        >>> calls = []
        >>> @resetguard.retry(attempts=3, backoff=resetguard.Backoff.none())
        ... def flaky() -> str:
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise ConnectionResetError(104, "Connection reset by peer")
        ...     return "ok"
        >>> flaky(), len(calls)
        ('ok', 3)
    """
    given: object = policy
    if callable(given) and not isinstance(given, Retry):
        raise TypeError(
            "use @resetguard.retry() with parentheses, or pass a resetguard.Retry policy"
        )
    return _Decorator(merge(policy, options))


class retrying:
    """Retry a block of code: ``for attempt in retrying(...): with attempt: ...``.

    Takes the same options as :func:`retry`. Works with ``async for`` too (then waits use
    the running event loop). Breakers and budgets are honoured like in the decorator.
    ``attempt.sent()`` marks the block's point of no return (see :class:`AttemptContext`).

    Example::

        >>> import resetguard
        >>> tries = []
        >>> for attempt in resetguard.retrying(backoff=resetguard.Backoff.none()):
        ...     with attempt:
        ...         tries.append(attempt.number)
        ...         if len(tries) == 1:
        ...             raise BrokenPipeError(32, "Broken pipe")
        >>> tries
        [1, 2]
    """

    __slots__ = ("_policy",)

    def __init__(self, policy: Retry | None = None, /, **options: Any) -> None:
        self._policy = merge(policy, options)

    def __iter__(self) -> Iterator[AttemptContext]:
        attempts = Attempts(Run(self._policy))
        try:
            yield from attempts
        except GeneratorExit as left:  # the caller left the loop
            attempts.abandon(left)
            raise

    async def __aiter__(self) -> AsyncIterator[AttemptContext]:
        attempts = Attempts(Run(self._policy))
        try:
            async for attempt in attempts:
                yield attempt
        except GeneratorExit as left:  # the caller left the loop
            attempts.abandon(left)
            raise
