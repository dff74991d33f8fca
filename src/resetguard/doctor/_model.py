"""The doctor's result values: findings, recommendations and the report (all frozen).

The JSON form (:meth:`Report.to_dict`) is a stable, versioned schema documented in
``docs/doctor.md``; add fields only, never rename or remove one without bumping
``SCHEMA_VERSION``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

__all__ = [
    "SCHEMA_VERSION",
    "ClientCheck",
    "Finding",
    "HostKeepalive",
    "IdleClose",
    "Recommendation",
    "Report",
    "Severity",
    "Status",
]

SCHEMA_VERSION = 1

IdleClose = Literal["fin", "rst"]
Status = Literal["healthy", "problems", "error"]


class Severity(str, Enum):
    """How bad a finding is. ``critical`` and ``warning`` make the exit code 1."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """0 for the most severe; sort findings by it."""
        return _RANK[self]


_RANK = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One observation with its explanation and fix. ``id`` is stable (see docs/doctor.md)."""

    id: str
    severity: Severity
    title: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity.value,
            "title": self.title,
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Recommendation:
    """Copy-paste settings for one client library, derived from what was measured."""

    client: str
    summary: str
    code: str
    language: Literal["python", "shell"] = "python"

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "summary": self.summary,
            "language": self.language,
            "code": self.code,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCheck:
    """A client's default idle expiry compared with the server's idle timeout.

    ``idle_expiry_s`` is ``None`` when the client never expires idle connections;
    ``safe`` is ``None`` when the server's idle timeout is unknown.
    """

    client: str
    setting: str
    idle_expiry_s: float | None
    safe: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "setting": self.setting,
            "idle_expiry_s": self.idle_expiry_s,
            "safe": self.safe,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HostKeepalive:
    """This host's TCP keepalive defaults (Linux sysctls); ``None`` where unreadable."""

    time_s: int | None
    interval_s: int | None
    probes: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tcp_keepalive_time_s": self.time_s,
            "tcp_keepalive_intvl_s": self.interval_s,
            "tcp_keepalive_probes": self.probes,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Everything ``resetguard doctor`` learned about one target.

    Example::

        report = resetguard.doctor.diagnose("https://example.com/", idle_limit=10)
        if report.exit_code:
            print(resetguard.doctor.render_text(report))
    """

    target: str
    kind: str
    status: Status
    server_idle_timeout_s: float | None
    server_idle_timeout_source: Literal["measured", "configured", "advertised"] | None
    idle_close: IdleClose | None
    idle_limit_s: float
    timings: Mapping[str, float] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)
    host: HostKeepalive
    client_defaults: tuple[ClientCheck, ...] = ()
    findings: tuple[Finding, ...] = ()
    recommendations: tuple[Recommendation, ...] = ()
    version: str = ""

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 problems found (any critical or warning finding), 2 probe failed."""
        return {"healthy": 0, "problems": 1, "error": 2}[self.status]

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON form (``schema_version`` 1)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": "resetguard doctor",
            "resetguard_version": self.version,
            "target": self.target,
            "kind": self.kind,
            "status": self.status,
            "exit_code": self.exit_code,
            "server_idle_timeout_s": self.server_idle_timeout_s,
            "server_idle_timeout_source": self.server_idle_timeout_source,
            "idle_close": self.idle_close,
            "idle_limit_s": self.idle_limit_s,
            "timings": dict(self.timings),
            "facts": dict(self.facts),
            "host": self.host.to_dict(),
            "client_defaults": [c.to_dict() for c in self.client_defaults],
            "findings": [f.to_dict() for f in self.findings],
            "recommendations": [r.to_dict() for r in self.recommendations],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)
