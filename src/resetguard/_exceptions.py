"""resetguard's own exception tree.

Everything resetguard raises on its own account derives from :class:`ResetGuardError`.
Errors that mean "we refused to make the call" share the :class:`Rejected` base and
carry ``retry_after`` so callers can schedule a later attempt.

The user's own exceptions are never wrapped in these: a retried call that keeps failing
re-raises the user's last exception unchanged, with the history attached.
"""

from __future__ import annotations

__all__ = [
    "BudgetExhausted",
    "CircuitOpen",
    "OutcomeUnknown",
    "Rejected",
    "ResetGuardError",
]


#: True on what is never retried: resetguard's refusals and unknown outcomes (set on the
#: classes below) and an error surfaced as an unknown outcome (set on the instance). One
#: attribute read answers for all three, where isinstance() with a tuple and a second
#: attribute read cost twice as much on every failed attempt.
FINAL_ATTR = "__resetguard_final__"
#: True on :class:`OutcomeUnknown` and on an error surfaced as an unknown outcome.
OUTCOME_ATTR = "__resetguard_outcome_unknown__"


class ResetGuardError(Exception):
    """Base class of every error resetguard raises itself."""


class Rejected(ResetGuardError):
    """The call was not attempted: a breaker or budget refused it.

    ``retry_after`` is the number of seconds after which trying again may succeed,
    or ``None`` when unknown.
    """

    __resetguard_final__ = True  # FINAL_ATTR: retrying a refusal defeats the breaker or budget

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpen(Rejected):
    """Raised instead of calling through an open (or saturated half-open) circuit breaker."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, breaker: str = ""
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.breaker = breaker


class BudgetExhausted(Rejected):
    """Raised (only when asked for) when a retry budget refuses a retry."""

    def __init__(self, message: str, *, retry_after: float | None = None, budget: str = "") -> None:
        super().__init__(message, retry_after=retry_after)
        self.budget = budget


class OutcomeUnknown(ResetGuardError):
    """A non-idempotent operation may or may not have taken effect on the server.

    Raised from the user's own exception (``raise OutcomeUnknown(...) from exc``) by
    adapters that know the operation reached the server before the connection broke,
    e.g. a reset during ``COMMIT`` or after a POST body was sent.
    """

    __resetguard_final__ = True  # FINAL_ATTR
    __resetguard_outcome_unknown__ = True  # OUTCOME_ATTR
