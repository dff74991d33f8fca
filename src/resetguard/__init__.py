"""resetguard: survive, explain and reproduce connection resets.

Example::

    import resetguard

    @resetguard.retry()
    def fetch() -> bytes:
        ...
"""

from __future__ import annotations

import logging as _logging

from . import trace
from ._api import acall, call, retry, retrying
from ._backoff import Backoff
from ._breaker import BreakerPolicy, BreakerStatistics, CircuitBreaker, CircuitState
from ._budget import BudgetStatistics, RetryBudget
from ._classify import (
    Classifier,
    Failure,
    Kind,
    Phase,
    classify,
    register_classifier,
    unregister_classifier,
)
from ._drivers import AttemptContext
from ._engine import Attempt, Resolution, history, outcome_unknown
from ._events import (
    AttemptFailed,
    BreakerStateChanged,
    BudgetExhaustedEvent,
    ClientDisconnected,
    ConnectionEvent,
    Event,
    GaveUp,
    Hook,
    NoiseSuppressed,
    OutcomeResolved,
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
from ._monitor import (
    EndpointCounts,
    HistogramSnapshot,
    Monitor,
    MonitorReport,
    OutcomeCounts,
    Reporter,
)
from ._pipeline import Pipeline
from ._policy import DEFAULT_KINDS
from ._retry import Retry

__version__ = "0.1.0.dev0"

# A library must not print through logging's last-resort handler when the application
# configured no logging: resetguard's records go nowhere unless someone listens.
_logging.getLogger("resetguard").addHandler(_logging.NullHandler())

__all__ = [
    "Attempt",
    "AttemptContext",
    "AttemptFailed",
    "Backoff",
    "BreakerPolicy",
    "BreakerStateChanged",
    "BreakerStatistics",
    "BudgetExhausted",
    "BudgetExhaustedEvent",
    "BudgetStatistics",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "Classifier",
    "ClientDisconnected",
    "ConnectionEvent",
    "DEFAULT_KINDS",
    "EndpointCounts",
    "Event",
    "Failure",
    "GaveUp",
    "HistogramSnapshot",
    "Hook",
    "Kind",
    "Monitor",
    "MonitorReport",
    "NoiseSuppressed",
    "OutcomeCounts",
    "OutcomeResolved",
    "OutcomeUnknown",
    "Phase",
    "Pipeline",
    "Rejected",
    "Reporter",
    "ResetGuardError",
    "Resolution",
    "Retry",
    "RetryBudget",
    "RetryScheduled",
    "RetrySucceeded",
    "acall",
    "add_hook",
    "call",
    "classify",
    "history",
    "outcome_unknown",
    "register_classifier",
    "remove_hook",
    "retry",
    "retrying",
    "trace",
    "unregister_classifier",
]
