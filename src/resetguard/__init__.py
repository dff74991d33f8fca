"""resetguard: survive, explain and reproduce connection resets.

Example::

    import resetguard

    @resetguard.retry()
    def fetch() -> bytes:
        ...
"""

from __future__ import annotations

from ._classify import (
    Classifier,
    Failure,
    Kind,
    Phase,
    classify,
    register_classifier,
    unregister_classifier,
)
from ._events import (
    AttemptFailed,
    BreakerStateChanged,
    BudgetExhaustedEvent,
    ClientDisconnected,
    ConnectionEvent,
    Event,
    GaveUp,
    Hook,
    RetryScheduled,
    RetrySucceeded,
    add_hook,
    remove_hook,
)
from ._exceptions import (
    BudgetExhausted,
    CircuitOpen,
    OutcomeUnknown,
    Rejected,
    ResetGuardError,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "AttemptFailed",
    "BreakerStateChanged",
    "BudgetExhausted",
    "BudgetExhaustedEvent",
    "CircuitOpen",
    "Classifier",
    "ClientDisconnected",
    "ConnectionEvent",
    "Event",
    "Failure",
    "GaveUp",
    "Hook",
    "Kind",
    "OutcomeUnknown",
    "Phase",
    "Rejected",
    "ResetGuardError",
    "RetryScheduled",
    "RetrySucceeded",
    "add_hook",
    "classify",
    "register_classifier",
    "remove_hook",
    "unregister_classifier",
]
