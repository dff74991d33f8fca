"""Backoff strategies: how long to wait before retry number *n*.

A :class:`Backoff` is a frozen value. ``delay(n, previous, random)`` is pure: the caller
passes the previous delay (for decorrelated jitter) and a ``random()`` returning [0, 1).

Example::

    >>> from resetguard import Backoff
    >>> b = Backoff(initial=0.1, multiplier=2, cap=10, jitter="none")
    >>> [b.delay(n, 0.0, lambda: 0.5) for n in (1, 2, 3)]
    [0.1, 0.2, 0.4]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ._validate import check_non_negative

__all__ = ["JITTERS", "Backoff", "Jitter"]

Jitter = Literal["full", "equal", "decorrelated", "none"]
JITTERS: tuple[str, ...] = ("full", "equal", "decorrelated", "none")

#: First retry waits up to 0.1 s: long enough for a restarted peer's accept queue, short
#: enough that a stale keep-alive replay is not noticeable.
DEFAULT_INITIAL = 0.1
#: Doubling is the playbook's (and AWS's) exponential schedule.
DEFAULT_MULTIPLIER = 2.0
#: 10 s cap: beyond it a caller is better served by a breaker than by waiting.
DEFAULT_CAP = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with jitter, capped.

    Retry *n* (1-based) waits ``min(cap, initial * multiplier ** (n - 1))``, then jittered:

    * ``"full"`` (default): uniform in ``[0, d]`` — spreads a thundering herd best
      (AWS Architecture Blog, "Exponential Backoff and Jitter");
    * ``"equal"``: ``d/2 + uniform[0, d/2]`` — never shorter than half;
    * ``"decorrelated"``: ``min(cap, uniform[initial, previous * 3])``;
    * ``"none"``: exactly ``d``.

    Example::

        >>> from resetguard import Backoff
        >>> Backoff.constant(0.5).delay(3, 0.0, lambda: 0.9)
        0.5
    """

    initial: float = DEFAULT_INITIAL
    multiplier: float = DEFAULT_MULTIPLIER
    cap: float = DEFAULT_CAP
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        check_non_negative("initial", self.initial)
        check_non_negative("multiplier", self.multiplier)
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier!r}")
        check_non_negative("cap", self.cap)
        if self.cap < self.initial:
            raise ValueError(f"cap ({self.cap!r}) must be >= initial ({self.initial!r})")
        if self.jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {', '.join(JITTERS)}; got {self.jitter!r}")

    @classmethod
    def constant(cls, delay: float) -> Backoff:
        """Always wait ``delay`` seconds."""
        return cls(initial=delay, multiplier=1.0, cap=delay, jitter="none")

    @classmethod
    def none(cls) -> Backoff:
        """Never wait (immediate retries)."""
        return cls(initial=0.0, multiplier=1.0, cap=0.0, jitter="none")

    def delay(self, retry: int, previous: float, random: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``retry`` (1 = the first retry)."""
        if self.cap == 0:
            return 0.0
        jitter = self.jitter
        if jitter == "decorrelated":
            upper = max(self.initial, previous * 3.0)
            return min(self.cap, self.initial + (upper - self.initial) * random())
        try:
            base = self.initial * self.multiplier ** (retry - 1)
        except OverflowError:
            base = self.cap
        base = min(self.cap, base)
        if jitter == "full":
            return base * random()
        if jitter == "equal":
            return base / 2 + base / 2 * random()
        return base
