"""Human-readable rendering of a :class:`Report` (plain ASCII, fits 100 columns)."""

from __future__ import annotations

import textwrap
from typing import Any

from ._model import Report, Severity

__all__ = ["render_text"]

_WIDTH = 100


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def _fmt_setting(value: float, note: str = "") -> str:
    """A server setting or a long timeout in whole units: ``8 h (28800 s)``, not 28800.00 s."""
    notes = [note] if note else []
    if value < 60:
        text = _fmt_s(value)
    elif value >= 3600 and value % 3600 == 0:
        text = f"{value / 3600:.0f} h"
        notes.insert(0, f"{value:.0f} s")
    elif value >= 120 and value % 60 == 0:
        text = f"{value / 60:.0f} min"
        notes.insert(0, f"{value:.0f} s")
    else:
        text = f"{value:.0f} s"
    return f"{text} ({', '.join(notes)})" if notes else text


def _wrap(text: str, indent: int) -> list[str]:
    pad = " " * indent
    return textwrap.wrap(text, width=_WIDTH, initial_indent=pad, subsequent_indent=pad) or [pad]


def _summary_rows(report: Report) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    facts: dict[str, Any] = dict(report.facts)
    if report.status != "error":
        if facts.get("keepalive") in ("refused", "broken"):
            rows.append(("Server idle timeout", f"n/a (keep-alive {facts['keepalive']})"))
        elif report.server_idle_timeout_s is None and report.kind in (
            "postgresql",
            "mysql",
            "redis",
        ):
            rows.append(("Server idle timeout", f"none ({facts.get('idle_setting')} is off)"))
        elif report.server_idle_timeout_s is not None:
            how = f", closed with {report.idle_close.upper()}" if report.idle_close else ""
            rows.append(
                (
                    "Silent client closed" if report.kind == "tcp" else "Server idle timeout",
                    _fmt_setting(
                        report.server_idle_timeout_s, str(report.server_idle_timeout_source)
                    )
                    + how,
                )
            )
        else:
            rows.append(
                (
                    "Server idle timeout",
                    f"none seen within {report.idle_limit_s:g} s (--idle-limit)",
                )
            )
    names = {"dns_s": "DNS", "connect_s": "connect", "tls_s": "TLS", "first_byte_s": "first byte"}
    if report.timings:
        rows.append(
            (
                "Timings",
                ", ".join(f"{names.get(k, k)} {_fmt_s(v)}" for k, v in report.timings.items()),
            )
        )
    if "peer" in facts:
        rows.append(("Connected to", str(facts["peer"])))
    if report.kind == "http" and "status" in facts:
        parts = [f"{facts['http_version']} {facts['status']}"]
        parts.append(f"Connection: {facts.get('connection_header') or '(absent)'}")
        if facts.get("keep_alive_header"):
            parts.append(f"Keep-Alive: {facts['keep_alive_header']}")
        parts.append(f"keep-alive {facts.get('keepalive')}")
        rows.append(("HTTP", " | ".join(parts)))
        tls = facts.get("tls")
        if isinstance(tls, dict):
            verified = "verified" if tls.get("verified") else "NOT verified"
            days = tls.get("days_left")
            expiry = f" | certificate expires in {days:.0f} days" if days is not None else ""
            rows.append(("TLS", f"{tls.get('version')} | {verified}{expiry}"))
    if report.kind in ("postgresql", "mysql", "redis") and "server_version" in facts:
        rows.append(("Server version", str(facts["server_version"])))
        configured = facts.get("configured_idle_timeout_s")
        rows.append(
            (
                str(facts.get("idle_setting")),
                "off (never)" if configured is None else _fmt_setting(configured),
            )
        )
    host = report.host
    if host.time_s is not None:
        rows.append(
            (
                "Host TCP keepalive",
                f"first probe after {host.time_s} s idle, every {host.interval_s} s, "
                f"{host.probes} probes",
            )
        )
    return rows


def render_text(report: Report) -> str:
    """The human report: verdict, measurements, client checks, ranked findings, settings.

    Example::

        print(render_text(diagnose("http://127.0.0.1:8080/", idle_limit=10)))
    """
    counts = {s: sum(1 for f in report.findings if f.severity is s) for s in Severity}
    verdict = {
        "healthy": "HEALTHY",
        "problems": "PROBLEMS FOUND",
        "error": "COULD NOT DIAGNOSE",
    }[report.status]
    if report.kind == "tcp" and report.status == "healthy":
        # host:port measures a silent connection only: no client was judged (finding tcp-only).
        verdict = "NO PROBLEM AT THE TCP LEVEL (clients not judged: use a URL or DSN)"
    tally = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    lines = [
        f"resetguard doctor: {report.target}",
        f"Verdict: {verdict}" + (f" ({tally})" if tally else "") + f"  [exit {report.exit_code}]",
        "",
    ]
    rows = _summary_rows(report)
    if rows:
        width = max(len(k) for k, _ in rows) + 2
        lines += [f"  {k.ljust(width)}{v}" for k, v in rows]
        lines.append("")
    if report.client_defaults:
        lines.append("Client defaults vs this server")
        width = max(len(c.client) for c in report.client_defaults) + 2
        for check in report.client_defaults:
            expiry = "never" if check.idle_expiry_s is None else f"{check.idle_expiry_s:g} s"
            verdict_word = {True: "ok", False: "TOO LONG", None: "unknown"}[check.safe]
            lines.append(
                f"  {check.client.ljust(width)}{expiry:<9}{verdict_word:<10}{check.setting}"
            )
        lines.append("")
    if report.findings:
        lines.append("Findings (most severe first)")
        for finding in report.findings:
            lines += _wrap(f"[{finding.severity.value.upper()}] {finding.title}", 2)
            lines += _wrap(finding.detail, 6)
            if finding.fix:
                lines += _wrap(f"Fix: {finding.fix}", 6)
        lines.append("")
    if report.recommendations:
        lines.append("Recommended settings (copy-paste)")
        for rec in report.recommendations:
            lines.append(f"  {rec.client}: {rec.summary}")
            lines += [f"      {line}" if line else "" for line in rec.code.rstrip().splitlines()]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
