"""The engine's drivers and the public retry API.

``call()`` and ``acall()`` are the only sync/async twins: each runs the attempt loop and
hands every failure to the sans-I/O :class:`~resetguard._retry._Run`. The decorator and
``retrying()`` are thin shapes over them.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from . import _clock, _guard
from ._retry import Retry, _Run

__all__ = ["AttemptContext", "acall", "call", "retry", "retrying"]

P = ParamSpec("P")
R = TypeVar("R")

_DEFAULT = Retry()


def _policy(policy: Retry | None, overrides: dict[str, Any]) -> Retry:
    if policy is not None and not isinstance(policy, Retry):
        raise TypeError(f"policy must be a resetguard.Retry, got {policy!r}")
    base = policy or _DEFAULT
    if not overrides:
        return base
    try:
        return base.__class__(**{**_fields(base), **overrides})
    except TypeError as exc:
        unknown = sorted(set(overrides) - set(_fields(base)))
        if unknown:
            raise TypeError(f"unknown retry option(s): {', '.join(unknown)}") from None
        raise exc


def _fields(policy: Retry) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in policy.__dataclass_fields__}


def call(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Call ``fn(*args, **kwargs)`` under the default :class:`Retry` policy.

    For a policy of your own, call through it: ``Retry(attempts=5).call(fn, *args)``.

    Example::

        >>> import resetguard
        >>> resetguard.call(int, "42")
        42
    """
    return _drive(_DEFAULT, fn, args, kwargs)


async def acall(fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Await ``fn(*args, **kwargs)`` under the default :class:`Retry` policy (asyncio or trio)."""
    return await _adrive(_DEFAULT, fn, args, kwargs)


def _drive(p: Retry, fn: Callable[..., R], args: Any, kwargs: Any) -> R:
    """The sync driver: attempts, breaker, budget, sleeping. Decisions are the _Run's."""
    clock = p.clock or _clock.monotonic
    start = clock()
    breaker, budget = p.breaker, p.budget
    if budget is not None:
        budget._deposit()
    run: _Run | None = None
    ticket, t0 = 0, 0.0
    while True:
        if breaker is not None:
            ticket = _guard.acquire(breaker, run)
            t0 = breaker._clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if breaker is not None:
                _guard.release(breaker, ticket, t0, exc)
            if not isinstance(exc, Exception):
                raise  # cancellation or an interrupt: never retried
            if run is None:
                run = _Run(p, start)
            delay = run.failed(exc)
            if delay is None:
                raise
            if delay > 0:
                (p.sleep or time.sleep)(delay)
            continue
        if breaker is not None:
            _guard.release(breaker, ticket, t0, None)
        if run is not None:
            run.succeeded()
        return result


async def _adrive(p: Retry, fn: Callable[..., Awaitable[R]], args: Any, kwargs: Any) -> R:
    """The async twin of :func:`_drive` (asyncio or trio; cancellation is never caught)."""
    clock = p.clock or _clock.monotonic
    start = clock()
    breaker, budget = p.breaker, p.budget
    if budget is not None:
        budget._deposit()
    run: _Run | None = None
    ticket, t0 = 0, 0.0
    while True:
        if breaker is not None:
            ticket = _guard.acquire(breaker, run)
            t0 = breaker._clock()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if breaker is not None:
                _guard.release(breaker, ticket, t0, exc)
            if not isinstance(exc, Exception):
                raise  # cancellation or an interrupt: never retried
            if run is None:
                run = _Run(p, start)
            delay = run.failed(exc)
            if delay is None:
                raise
            if delay > 0:
                await (p.async_sleep or _clock.async_sleep)(delay)
            continue
        if breaker is not None:
            _guard.release(breaker, ticket, t0, None)
        if run is not None:
            run.succeeded()
        return result


def _wrap(p: Retry, fn: Callable[P, R]) -> Callable[P, R]:
    if not callable(fn):
        raise TypeError(f"@retry needs a function, got {fn!r}")
    if not p.name:
        p = _policy(p, {"name": getattr(fn, "__qualname__", repr(fn))})
    if inspect.iscoroutinefunction(fn):
        afn: Callable[..., Awaitable[Any]] = fn
        if p.breaker is not None or p.budget is not None:

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await _adrive(p, afn, args, kwargs)

            return async_wrapper  # type: ignore[return-value]

        aclock = p.clock or _clock.monotonic

        @functools.wraps(fn)
        async def async_fast_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = aclock()
            try:
                return await afn(*args, **kwargs)
            except Exception as exc:
                run = _Run(p, start)
                delay = run.failed(exc)
                if delay is None:
                    raise
            return await _aresume(p, run, delay, afn, args, kwargs)

        return async_fast_wrapper  # type: ignore[return-value]

    if p.breaker is None and p.budget is None:
        clock = p.clock or _clock.monotonic

        # The success path is one clock read and a try: the loop starts only on failure.
        @functools.wraps(fn)
        def fast_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = clock()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                run = _Run(p, start)
                delay = run.failed(exc)
                if delay is None:
                    raise
            return _resume(p, run, delay, fn, args, kwargs)

        return fast_wrapper

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return _drive(p, fn, args, kwargs)

    return wrapper


def _resume(p: Retry, run: _Run, delay: float, fn: Callable[..., R], args: Any, kwargs: Any) -> R:
    """Continue the sync loop of the fast wrapper after its first attempt failed."""
    sleep = p.sleep or time.sleep
    while True:
        if delay > 0:
            sleep(delay)
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            next_delay = run.failed(exc)
            if next_delay is None:
                raise
            delay = next_delay
            continue
        run.succeeded()
        return result


async def _aresume(
    p: Retry, run: _Run, delay: float, fn: Callable[..., Awaitable[R]], args: Any, kwargs: Any
) -> R:
    """Continue the async loop of the fast wrapper after its first attempt failed."""
    sleep = p.async_sleep or _clock.async_sleep
    while True:
        if delay > 0:
            await sleep(delay)
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            next_delay = run.failed(exc)
            if next_delay is None:
                raise
            delay = next_delay
            continue
        run.succeeded()
        return result


class _Decorator:
    """What ``retry(...)`` returns: applies one frozen policy to any function."""

    __slots__ = ("policy",)

    def __init__(self, policy: Retry) -> None:
        self.policy = policy

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        return _wrap(self.policy, fn)

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
    return _Decorator(_policy(policy, options))


class AttemptContext:
    """One attempt of a :func:`retrying` loop; use it as ``with attempt:`` (or ``async with``)."""

    __slots__ = ("_loop", "number")

    def __init__(self, loop: retrying, number: int) -> None:
        self._loop = loop
        self.number = number

    def __enter__(self) -> AttemptContext:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._loop._exit(exc)

    async def __aenter__(self) -> AttemptContext:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._loop._exit(exc)


class retrying:
    """Retry a block of code: ``for attempt in retrying(...): with attempt: ...``.

    Takes the same options as :func:`retry`. Works with ``async for`` too (then waits use
    the running event loop). Breakers and budgets are honoured like in the decorator.

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

    __slots__ = ("_delay", "_done", "_exited", "_policy", "_run", "_start", "_t0", "_ticket")

    def __init__(self, policy: Retry | None = None, /, **options: Any) -> None:
        self._policy = _policy(policy, options)
        self._run: _Run | None = None
        self._done = False
        self._exited = False
        self._delay = 0.0
        self._start = 0.0
        self._ticket = 0
        self._t0 = 0.0

    def _begin(self) -> None:
        p = self._policy
        self._start = (p.clock or _clock.monotonic)()
        if p.budget is not None:
            p.budget._deposit()

    def _acquire(self) -> None:
        self._exited = False
        breaker = self._policy.breaker
        if breaker is not None:
            self._ticket = _guard.acquire(breaker, self._run)
            self._t0 = breaker._clock()

    def _exit(self, exc: BaseException | None) -> bool:
        self._exited = True
        breaker = self._policy.breaker
        if breaker is not None:
            _guard.release(breaker, self._ticket, self._t0, exc)
        if exc is None:
            self._done = True
            if self._run is not None:
                self._run.succeeded()
            return False
        if not isinstance(exc, Exception):
            return False  # cancellation, KeyboardInterrupt: never retried or swallowed
        if self._run is None:
            self._run = _Run(self._policy, self._start)
        delay = self._run.failed(exc)
        if delay is None:
            return False
        self._delay = delay
        return True

    def _abandon(self, exc: BaseException) -> None:
        """The loop was left before ``with attempt:`` ended: give the breaker its ticket back."""
        breaker = self._policy.breaker
        if breaker is not None and not self._exited:
            self._exited = True
            _guard.release(breaker, self._ticket, self._t0, exc)

    def _attempt_ended(self) -> bool:
        """After the body of one attempt: True when the loop is over (it succeeded)."""
        if self._done:
            return True
        if not self._exited:
            raise RuntimeError(
                "each attempt of resetguard.retrying() must be used as `with attempt:`"
            )
        return False

    def __iter__(self) -> Iterator[AttemptContext]:
        self._begin()
        number = 1
        while not self._done:
            self._acquire()
            try:
                yield AttemptContext(self, number)
            except GeneratorExit as exc:
                self._abandon(exc)
                raise
            if self._attempt_ended():
                return
            number += 1
            if self._delay > 0:
                (self._policy.sleep or time.sleep)(self._delay)

    async def __aiter__(self) -> AsyncIterator[AttemptContext]:
        self._begin()
        number = 1
        while not self._done:
            self._acquire()
            try:
                yield AttemptContext(self, number)
            except GeneratorExit as exc:
                self._abandon(exc)
                raise
            if self._attempt_ended():
                return
            number += 1
            if self._delay > 0:
                await (self._policy.async_sleep or _clock.async_sleep)(self._delay)
