"""``resetguard doctor``: measure why connections to a server get reset, and what to set.

Example::

    from resetguard.doctor import diagnose, render_text

    report = diagnose("https://api.example.com/health", idle_limit=60)
    print(render_text(report))          # or report.to_json()
    raise SystemExit(report.exit_code)  # 0 healthy, 1 problems, 2 could not diagnose
"""

from __future__ import annotations

from ._advice import CLIENT_DEFAULTS, safe_expiry
from ._diagnose import DEFAULT_IDLE_LIMIT, DEFAULT_TIMEOUT, diagnose
from ._model import (
    SCHEMA_VERSION,
    ClientCheck,
    Finding,
    HostKeepalive,
    Recommendation,
    Report,
    Severity,
)
from ._progress import NullProgress, Progress, StreamProgress
from ._render import render_text
from ._schema import JSON_SCHEMA
from ._target import Target, parse_duration, parse_target, redact

__all__ = [
    "CLIENT_DEFAULTS",
    "DEFAULT_IDLE_LIMIT",
    "DEFAULT_TIMEOUT",
    "JSON_SCHEMA",
    "SCHEMA_VERSION",
    "ClientCheck",
    "Finding",
    "HostKeepalive",
    "NullProgress",
    "Progress",
    "Recommendation",
    "Report",
    "Severity",
    "StreamProgress",
    "Target",
    "diagnose",
    "parse_duration",
    "parse_target",
    "redact",
    "render_text",
    "safe_expiry",
]
