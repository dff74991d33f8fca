"""The breaker's side of an attempt loop, written once for every loop.

The engine's drivers, ``retrying()`` and the HTTP transports all run attempts the same
way: the budget counts the logical call once (``budget._deposit()`` before the first
attempt); before each attempt :func:`acquire` asks the breaker for a ticket and the loop
notes ``t0 = breaker._clock()``; after it, :func:`release` hands the ticket back with
whatever ended the attempt, a ``BaseException`` included: a ticket never handed back
keeps a half-open probe slot for good, and the breaker then refuses every later call.

Plain functions over the caller's locals, not an object per call: a guarded call pays
two extra Python frames (about 0.06 µs), where a per-call object with methods measured
about 0.3 µs more (its construction, then a frame per step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ._exceptions import Rejected

if TYPE_CHECKING:
    from ._retry import BreakerLike

__all__ = ["acquire", "release"]


class _Failed(Protocol):
    """The failure record of a logical call (``_Run``, ``HttpRun``)."""

    def rejected(self, reason: str) -> BaseException: ...


def acquire(breaker: BreakerLike, run: _Failed | None) -> int:
    """The breaker's ticket for the next attempt of a call.

    ``run`` is None until an attempt of the call failed. A refused first attempt raises
    the breaker's :class:`~resetguard.Rejected`: there is nothing else to report. A
    refused retry gives up with the last attempt's own exception (``run.rejected`` records
    and announces why), raised outside any handler so it keeps its own ``__context__``.
    """
    try:
        return breaker._acquire()
    except Rejected:
        if run is None:
            raise
        last = run.rejected("breaker")
    raise last


def release(breaker: BreakerLike, ticket: int, t0: float, error: BaseException | None) -> None:
    """Hand ``ticket`` back: the attempt began at ``t0`` (breaker's clock), ``error`` ended it.

    ``error`` is None on success, else whatever ended the attempt, cancellation and
    interrupts included; the breaker decides what counts as a failure.
    """
    breaker._release(ticket, error, breaker._clock() - t0)
