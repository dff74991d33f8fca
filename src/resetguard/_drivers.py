"""The drivers: the one place attempts are started, slept between and ended.

:class:`Attempts` is the attempt loop, written once as an iterator with a sync side
(``for``, sleeping with ``time.sleep``) and an async side (``async for``, sleeping in the
running event loop, asyncio or trio). Before each attempt it sleeps the engine's delay and
takes the breaker's ticket (waiting for a probe when the engine says so); each
:class:`AttemptContext` it yields is used as ``with`` (or ``async with``), and leaving it
hands the attempt's outcome to the engine's :class:`~resetguard._engine.Run`, which
decides. These are the only sync/async twins of the retry core, a few lines each.

:func:`drive` and :func:`adrive` run a function under that loop; ``retrying()``, the
decorator, ``Retry.call``/``run``, the HTTP transports and the database helpers all go
through them (the decorator inlines only its first attempt, and builds a run only when
that attempt fails). :func:`drive_first` and :func:`adrive_first` do the same for an
adapter: the first attempt runs with only the breaker's ticket and the budget's deposit
around it, and the call's run is built from a :class:`RunPlan` when it is needed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, TypeVar

from . import _clock
from ._engine import NO_VALUE, Run, first_failed, first_refused, first_ticket, settle
from ._policy import BreakerLike, BudgetLike

__all__ = [
    "AttemptContext",
    "Attempts",
    "FirstAttempt",
    "RunPlan",
    "adrive",
    "adrive_first",
    "drive",
    "drive_first",
]

#: No keyword arguments (read-only: ``**`` copies it for each call).
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})

R = TypeVar("R")
_new = object.__new__
Resolve = Callable[[BaseException], Any]


class AttemptContext:
    """One attempt of a retried operation; use it as ``with attempt:`` (or ``async with``).

    ``number`` counts attempts from 1. Call :meth:`sent` at the attempt's point of no
    return. ``facts`` is where an adapter keeps what it learns about the attempt.
    """

    # No __slots__: one is built per attempt, and class-level defaults let the constructor
    # set only the run and the number.
    passed = False
    retrying = False
    _exited = False
    facts: Any = None

    def __init__(self, run: Run, number: int) -> None:
        self._run = run
        self.number = number

    def sent(self) -> None:
        """Mark the point of no return: from here on the operation may take effect.

        A connection fault after it is never retried blindly: it is retried only if the
        policy declares the operation idempotent, or a resolve hook finds out it did not
        take effect; otherwise the caller gets an unknown outcome
        (:func:`resetguard.outcome_unknown`).

        Example::

            >>> import resetguard
            >>> for attempt in resetguard.retrying():
            ...     with attempt:
            ...         attempt.sent()  # e.g. just before COMMIT
            >>> attempt.passed
            True
        """
        self.passed = True

    def retry_result(self, marker: BaseException, retry_after: float | None = None) -> bool:
        """For adapters: the attempt produced a result worth retrying (an HTTP 503).

        ``marker`` stands for the result in the history and events. Returns True when
        the engine schedules another attempt (the adapter then discards the result), False
        when the result goes to the caller.
        """
        if self._run.retry_result(marker, retry_after) is None:
            return False
        self.retrying = True
        return True

    def __enter__(self) -> AttemptContext:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        ended = self._ended(exc)
        if ended is None:  # the resolve hook decides (a hook that raises: unknown)
            try:
                outcome = self._run.resolve(exc)  # type: ignore[misc, arg-type]
            except Exception as error:
                outcome = error
            ended = self._resolved(outcome)
        return ended

    async def __aenter__(self) -> AttemptContext:
        return self

    async def __aexit__(self, *exc_info: Any) -> bool:
        ended = self._ended(exc_info[1])
        if ended is None:  # the resolve hook decides (a hook that raises: unknown)
            try:
                outcome = await self._run.resolve(exc_info[1])  # type: ignore[misc]
            except Exception as error:
                outcome = error
            ended = self._resolved(outcome)
        return ended

    def _ended(self, exc: BaseException | None) -> bool | None:
        """True: swallow ``exc`` (another attempt follows, or a resolve hook settled it);
        False: let it propagate; None: the resolve hook must be asked first."""
        run = self._run
        if exc is None:
            _returned(run, self)
            return False
        self._exited = True
        if run.breaker is not None:
            run.release(exc)
        if not isinstance(exc, Exception):
            return False  # cancellation, KeyboardInterrupt: never retried or swallowed
        if run.failed(exc, self) is not None:
            return True
        return None if run.resolving is not None else False

    def _resolved(self, outcome: object) -> bool:
        """After the resolve hook: True for a rerun or a settled call, False to give up."""
        run = self._run
        return run.resolved(outcome) is not None or run.value is not NO_VALUE


class FirstAttempt(AttemptContext):
    """The first attempt of a call whose run is built only when it is needed.

    :func:`drive_first` hands one out: the call's :class:`~resetguard._engine.Run` is
    built from its :class:`RunPlan` when the attempt fails or offers a retryable result,
    so a call that succeeds at once builds none. Not a context manager.
    """

    number = 1
    _run: Run | None = None  # type: ignore[assignment]
    _plan: RunPlan

    def run(self) -> Run:
        """The call's run, built on first use."""
        run = self._run
        if run is None:
            self._run = run = self._plan.run()
        return run

    def retry_result(self, marker: BaseException, retry_after: float | None = None) -> bool:
        if self.run().retry_result(marker, retry_after) is None:
            return False
        self.retrying = True
        return True


class RunPlan(Protocol):
    """What :func:`drive_first` needs before a call's first attempt: the breaker and budget
    that guard it, and how to build the call's run should the attempt need one."""

    breaker: BreakerLike | None
    budget: BudgetLike | None

    def run(self) -> Run:
        """The call's run (not counted by the budget again: the first attempt was)."""
        ...


class Attempts:
    """The attempt loop: ``for attempt in Attempts(run): with attempt: ...``.

    Also ``async for`` / ``async with``. Before each attempt it sleeps the delay the engine
    chose (never calling sleep for a zero delay) and takes the breaker's ticket, waiting
    for it when the engine says so; it stops once the call succeeded, was settled by a
    resolve hook, or gave up (the error then propagates from ``with``).
    """

    __slots__ = ("_current", "_run")

    def __init__(self, run: Run, resolve: Resolve | None = None) -> None:
        if resolve is not None:
            _resolving(run, resolve)
        self._run = run
        self._current: AttemptContext | None = None

    def advance(self) -> AttemptContext | None:
        """The next attempt, after the engine's wait (None when the call is over).

        What ``for`` calls.
        """
        current = self._current
        if current is not None and not current._exited:
            _not_entered()
        run = self._run
        self._current = attempt = _attempt(run) if _begin(run) else None
        return attempt

    async def aadvance(self) -> AttemptContext | None:
        """The async twin of :meth:`advance`: waits in the running event loop."""
        current = self._current
        if current is not None and not current._exited:
            _not_entered()
        run = self._run
        self._current = attempt = _attempt(run) if await _abegin(run) else None
        return attempt

    def __iter__(self) -> Attempts:
        return self

    def __next__(self) -> AttemptContext:
        attempt = self.advance()
        if attempt is None:
            raise StopIteration
        return attempt

    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> AttemptContext:
        attempt = await self.aadvance()
        if attempt is None:
            raise StopAsyncIteration
        return attempt

    def abandon(self, error: BaseException) -> None:
        """The loop was left after an attempt was handed out but before it was entered:
        give the breaker its ticket back (a ticket kept would hold a probe slot for good)."""
        current = self._current
        if current is not None and not current._exited:
            current._exited = True
            self._run.release(error)


def _begin(run: Run) -> bool:
    """The loop's step: sleep the engine's delay, take the breaker's ticket (waiting for it
    when the engine says so); False once the call is over."""
    if run.done:
        return False
    delay = run.delay
    if delay > 0:
        run.delay = 0.0
        (run.policy.sleep or time.sleep)(delay)
    if run.breaker is not None:
        while (wait := run.admit()) is not None:
            (run.policy.sleep or time.sleep)(wait)
    return True


async def _abegin(run: Run) -> bool:
    """The async twin of :func:`_begin`: waits in the running event loop."""
    if run.done:
        return False
    delay = run.delay
    if delay > 0:
        run.delay = 0.0
        await (run.policy.async_sleep or _clock.async_sleep)(delay)
    if run.breaker is not None:
        while (wait := run.admit()) is not None:
            await (run.policy.async_sleep or _clock.async_sleep)(wait)
    return True


def _attempt(run: Run) -> AttemptContext:
    """The run's next attempt (built without ``__init__``: one frame less)."""
    attempt = _new(AttemptContext)
    attempt._run, attempt.number = run, run.attempt
    return attempt


def _resolving(run: Run, resolve: Resolve) -> None:
    run.resolvable = True
    run.resolve = resolve


def _not_entered() -> None:
    raise RuntimeError("each attempt of resetguard.retrying() must be used as `with attempt:`")


def _settled(run: Run) -> Any:
    """The loop ended without a result of its own: a resolve hook settled the call."""
    value = run.value
    assert value is not NO_VALUE
    return value


def _returned(run: Run, attempt: AttemptContext | None) -> bool:
    """An attempt of :func:`drive` / :func:`adrive` returned: what ``__exit__`` does on
    success, spelled out (one frame instead of two). False when the result is retried
    and another attempt follows; ``attempt`` is None for a function called with ``args``."""
    if run.breaker is not None:
        run.release(None)
    if attempt is not None:
        attempt._exited = True
        if attempt.retrying:
            return False
    run.succeeded()
    return True


def drive(
    run: Run,
    fn: Callable[..., R],
    resolve: Resolve | None = None,
    args: tuple[Any, ...] | None = None,
    kwargs: Mapping[str, Any] = _NO_KWARGS,
) -> R:
    """Run ``fn(attempt)`` until the engine says the call is over; return its result.

    With ``args`` (and ``kwargs``), each attempt calls ``fn(*args, **kwargs)`` instead: a
    function that does not take the attempt (the decorator's) needs no wrapper then. The
    ``with attempt:`` of a ``retrying()`` loop, spelled out (fewer frames per attempt):
    the same :meth:`AttemptContext.__exit__` decides a failure, and the same
    :func:`_returned` a success.
    """
    if resolve is not None:
        _resolving(run, resolve)
    while _begin(run):
        # A function called with ``args`` never sees its attempt: one is built only if
        # it fails, for __exit__ to decide.
        attempt = _attempt(run) if args is None else None
        try:
            result = fn(attempt) if args is None else fn(*args, **kwargs)
        except BaseException as exc:
            if not (attempt or _attempt(run)).__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            if _returned(run, attempt):
                return result
    return _settled(run)  # type: ignore[no-any-return]


async def adrive(
    run: Run,
    fn: Callable[..., Awaitable[R]],
    resolve: Resolve | None = None,
    args: tuple[Any, ...] | None = None,
    kwargs: Mapping[str, Any] = _NO_KWARGS,
) -> R:
    """The async twin of :func:`drive` (asyncio or trio; cancellation is never caught)."""
    if resolve is not None:
        _resolving(run, resolve)
    while await _abegin(run):
        attempt = _attempt(run) if args is None else None  # as in drive()
        try:
            result = await (fn(attempt) if args is None else fn(*args, **kwargs))
        except BaseException as exc:
            exit_ = (attempt or _attempt(run)).__aexit__
            if not await exit_(type(exc), exc, exc.__traceback__):
                raise
        else:
            if _returned(run, attempt):
                return result
    return _settled(run)  # type: ignore[no-any-return]


def drive_first(plan: RunPlan, fn: Callable[[AttemptContext], R]) -> R:
    """:func:`drive`, with the first attempt inlined and no run built unless it is needed.

    The budget counts the call and the breaker gives its ticket around ``fn``'s first
    attempt (a :class:`FirstAttempt`); the call's run is built from ``plan`` only when
    that attempt fails, offers a retryable result, or is refused by the breaker, and
    :func:`drive` then continues the call. What an HTTP transport's request costs when
    it succeeds at once is this and the ticket, not an engine run.
    """
    opened = first_ticket(plan.breaker, plan.budget)
    if not isinstance(opened, tuple):  # refused: wait for the probe, or raise
        return drive(first_refused(plan.run(), opened), fn)
    attempt = _new(FirstAttempt)
    attempt._plan = plan
    try:
        result = fn(attempt)
    except BaseException as exc:
        run = first_failed(attempt.run(), opened, exc, attempt)
        if run is None:
            raise
        return drive(run, fn)
    settle(plan.breaker, opened, None)
    run = attempt._run
    if run is None:
        return result
    if not attempt.retrying:
        run.succeeded()
        return result
    return drive(run, fn)  # a retryable result: another attempt follows


async def adrive_first(plan: RunPlan, fn: Callable[[AttemptContext], Awaitable[R]]) -> R:
    """The async twin of :func:`drive_first`."""
    opened = first_ticket(plan.breaker, plan.budget)
    if not isinstance(opened, tuple):  # refused: wait for the probe, or raise
        return await adrive(first_refused(plan.run(), opened), fn)
    attempt = _new(FirstAttempt)
    attempt._plan = plan
    try:
        result = await fn(attempt)
    except BaseException as exc:
        run = first_failed(attempt.run(), opened, exc, attempt)
        if run is None:
            raise
        return await adrive(run, fn)
    settle(plan.breaker, opened, None)
    run = attempt._run
    if run is None:
        return result
    if not attempt.retrying:
        run.succeeded()
        return result
    return await adrive(run, fn)  # a retryable result: another attempt follows
