"""Judgement: turn raw observations into findings, client checks and copy-paste settings.

Pure functions over frozen observations, so the rules are testable without a network.
Severity rule for idle-timeout mismatches: *critical* when even the client with the
shortest default idle expiry for this kind of server would reuse a connection the server
has already dropped; *warning* when some popular client would at its defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ..db._settings import FALLBACK_IDLE_LIMIT, format_seconds, pool_settings, safe_expiry
from ._db import DbObservation, TcpObservation
from ._http import HttpObservation
from ._model import ClientCheck, Finding, HostKeepalive, Recommendation, Severity
from ._net import IdleWatch
from ._target import Target

__all__ = [
    "CLIENT_DEFAULTS",
    "Judgement",
    "fallback_expiry",
    "judge",
    "judge_failure",
    "safe_expiry",
]

# Known client defaults (seconds an idle pooled connection may be reused; None = forever).
# Sources: research/anchors.md A3 (httpx Limits, aiohttp TCPConnector, urllib3 #3184,
# psycopg_pool max_idle, asyncpg max_inactive_connection_lifetime, SQLAlchemy pool_recycle=-1).
CLIENT_DEFAULTS: dict[str, tuple[tuple[str, str, float | None], ...]] = {
    "http": (
        ("httpx", "Limits(keepalive_expiry=5.0)", 5.0),
        ("aiohttp", "TCPConnector(keepalive_timeout=15)", 15.0),
        ("requests/urllib3", "no idle expiry", None),
    ),
    "postgresql": (
        ("asyncpg pool", "max_inactive_connection_lifetime=300", 300.0),
        ("psycopg_pool", "max_idle=600 (only above min_size)", 600.0),
        ("SQLAlchemy pool", "pool_recycle=-1 (never)", None),
    ),
    "mysql": (
        ("SQLAlchemy pool", "pool_recycle=-1 (never)", None),
        ("aiomysql pool", "pool_recycle=-1 (never)", None),
    ),
    "redis": (("redis-py", "health_check_interval=0 (never checks)", None),),
    "tcp": (),
}

# HTTP fallback when no idle close was seen: DESIGN 3.3's idle expiry (below the common 5 s).
_HTTP_FALLBACK_EXPIRY = 4.0
# DB fallback when the server never closes idle sessions: below AWS NAT's 350 s idle drop.
_DB_FALLBACK_EXPIRY = FALLBACK_IDLE_LIMIT
# Host keepalive above this is longer than common NAT/LB idle drops (AWS NAT 350 s).
_HOST_KEEPALIVE_LIMIT = 300
_SLOW_CONNECT_S = 1.0
_CERT_EXPIRY_WARN_DAYS = 14.0


def fallback_expiry(kind: str) -> float:
    """The expiry recommended when the server's idle timeout is unknown."""
    return _HTTP_FALLBACK_EXPIRY if kind in ("http", "tcp") else _DB_FALLBACK_EXPIRY


def _num(value: float) -> str:
    if value >= 10:
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _s(value: float) -> str:
    return format_seconds(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Judgement:
    """The judged form of one probe, ready for :class:`~resetguard.doctor.Report`."""

    server_idle_timeout_s: float | None
    source: Literal["measured", "configured", "advertised"] | None
    idle_close: Literal["fin", "rst"] | None
    timings: dict[str, float]
    facts: dict[str, Any]
    client_defaults: tuple[ClientCheck, ...]
    findings: tuple[Finding, ...]
    recommendations: tuple[Recommendation, ...]


def _rank(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=lambda f: f.severity.rank))


def judge_failure(step: str, message: str) -> Finding:
    """The finding for a probe that could not run (exit code 2)."""
    ids = {
        "dns": ("dns-failed", "Host name does not resolve"),
        "connect": ("connect-failed", "TCP connection failed"),
        "tls": ("tls-failed", "TLS handshake failed"),
        "http": ("http-failed", "No usable HTTP response"),
        "driver": ("driver-failed", "Could not talk to the server with its driver"),
    }
    finding_id, title = ids.get(step, (f"{step}-failed", "Probe failed"))
    fixes = {
        "dns": "Check the host name, your resolver, and VPN/split-horizon DNS.",
        "connect": "Check the port, that the server listens on this address, firewalls and "
        "security groups. ECONNREFUSED means nothing listens; a timeout means packets are "
        "dropped on the way.",
        "tls": "Check the port really speaks TLS and that protocol versions overlap.",
        "http": "Check the URL points at an HTTP/1.1 server (not HTTP/2-only, not a TLS port "
        "spoken to in plain text).",
        "driver": "Install the driver extra named in the message, and check the DSN's user, "
        "password and database.",
    }
    return Finding(
        id=finding_id,
        severity=Severity.CRITICAL,
        title=title,
        detail=message,
        fix=fixes.get(step, ""),
    )


def judge(
    target: Target,
    observation: HttpObservation | DbObservation | TcpObservation,
    host: HostKeepalive,
    *,
    idle_limit: float,
) -> Judgement:
    """Findings, client checks and recommendations for one observation."""
    if isinstance(observation, HttpObservation):
        return _judge_http(target, observation, host, idle_limit)
    if isinstance(observation, DbObservation):
        return _judge_db(target, observation, host, idle_limit)
    return _judge_tcp(target, observation, host, idle_limit)


# -- shared pieces ----------------------------------------------------------------------


def _client_checks(
    kind: str, server_idle_s: float | None, kept_open_s: float | None = None
) -> tuple[ClientCheck, ...]:
    """``kept_open_s``: no close was seen for that long, so shorter expiries are safe."""
    checks = []
    for client, setting, expiry in CLIENT_DEFAULTS[kind]:
        safe = None
        if server_idle_s is not None:
            safe = expiry is not None and expiry <= safe_expiry(server_idle_s)
        elif kept_open_s is not None and expiry is not None and expiry < kept_open_s:
            safe = True
        checks.append(ClientCheck(client=client, setting=setting, idle_expiry_s=expiry, safe=safe))
    return tuple(checks)


def _mismatch_finding(
    kind: str, server_idle_s: float, checks: tuple[ClientCheck, ...], how: str
) -> Finding | None:
    unsafe = [c for c in checks if c.safe is False]
    if not unsafe:
        return None
    finite = [c.idle_expiry_s for c in checks if c.idle_expiry_s is not None]
    shortest = min(finite) if finite else None
    critical = shortest is not None and shortest > safe_expiry(server_idle_s)
    names = ", ".join(
        f"{c.client} ({'never' if c.idle_expiry_s is None else _s(c.idle_expiry_s)})"
        for c in unsafe
    )
    word = "request" if kind == "http" else "query"
    return Finding(
        id="client-expiry-too-long",
        severity=Severity.CRITICAL if critical else Severity.WARNING,
        title=f"Clients keep idle connections longer than the server ({_s(server_idle_s)})",
        detail=(
            f"The server {how} after {_s(server_idle_s)} idle. At their defaults these clients "
            f"keep an idle connection longer and will reuse one the server already dropped: "
            f"{names}. The next {word} on it fails with a reset / 'server closed the "
            "connection' error (the stale keep-alive race)."
        ),
        fix=(
            f"Expire idle connections before the server does: {_s(safe_expiry(server_idle_s))} "
            "or less (see the settings below), or raise the server's idle timeout."
        ),
    )


def _idle_findings(idle: IdleWatch, what: str) -> list[Finding]:
    found: list[Finding] = []
    if idle.outcome == "open":
        found.append(
            Finding(
                id="no-idle-close",
                severity=Severity.INFO,
                title=f"No idle close within the limit ({_s(idle.limit_s)})",
                detail=(
                    f"The server kept an idle {what} open for the whole {_s(idle.limit_s)} "
                    "limit. A load balancer, proxy or NAT on the path may still drop it later."
                ),
                fix="Raise --idle-limit to measure further (e.g. --idle-limit 5m).",
            )
        )
        return found
    assert idle.elapsed_s is not None
    how = "an RST (reset)" if idle.outcome == "rst" else "a FIN (orderly close)"
    found.append(
        Finding(
            id="idle-close",
            severity=Severity.INFO,
            title=(
                f"Server closes idle {what}s after {_s(idle.elapsed_s)} with {idle.outcome.upper()}"
            ),
            detail=f"Measured: the {what} was closed with {how} after {idle.elapsed_s:.2f} s idle.",
            fix="",
        )
    )
    if idle.outcome == "rst":
        found.append(
            Finding(
                id="idle-close-rst",
                severity=Severity.WARNING,
                title="Idle connections are closed with RST, not FIN",
                detail=(
                    "An RST instead of an orderly FIN is typical of a load balancer, firewall or "
                    "NAT dropping the flow, or of a server closing with SO_LINGER 0. A client "
                    "that reuses such a connection gets ECONNRESET ('Connection reset by peer') "
                    "rather than a clean end of stream."
                ),
                fix=(
                    "Expire idle connections on the client before this timeout; find which hop "
                    "sends the RST (server, LB idle timeout, NAT) and align the timeouts."
                ),
            )
        )
    if idle.said:
        found.append(
            Finding(
                id="idle-close-message",
                severity=Severity.INFO,
                title="Server sent data before closing the idle connection",
                detail=f"Received before the close: {idle.said!r}",
                fix="",
            )
        )
    return found


def _host_findings(host: HostKeepalive) -> tuple[list[Finding], list[Recommendation]]:
    if host.time_s is None or host.time_s <= _HOST_KEEPALIVE_LIMIT:
        return [], []
    finding = Finding(
        id="host-keepalive-slow",
        severity=Severity.INFO,
        title=f"Host TCP keepalive starts after {host.time_s} s",
        detail=(
            f"net.ipv4.tcp_keepalive_time={host.time_s} (interval {host.interval_s} s, "
            f"{host.probes} probes). Sockets that turn on SO_KEEPALIVE without per-socket "
            "values send their first probe only then; NAT gateways and load balancers "
            "commonly drop idle flows far sooner (AWS NAT: 350 s), so long-idle pooled "
            "connections die silently and fail on next use."
        ),
        fix=(
            "Set per-socket keepalive (TCP_KEEPIDLE 60 s) in the client, as the settings "
            "below do, or lower the host default."
        ),
    )
    rec = Recommendation(
        client="host",
        summary="Lower the host-wide TCP keepalive defaults (Linux, needs root)",
        language="shell",
        code=(
            "sudo sysctl -w net.ipv4.tcp_keepalive_time=60 net.ipv4.tcp_keepalive_intvl=10 "
            "net.ipv4.tcp_keepalive_probes=3"
        ),
    )
    return [finding], [rec]


def _slow_findings(timings: dict[str, float]) -> list[Finding]:
    found = []
    labels = {"connect_s": "TCP connect", "tls_s": "TLS handshake"}
    for key, label in labels.items():
        value = timings.get(key)
        if value is not None and value > _SLOW_CONNECT_S:
            found.append(
                Finding(
                    id=f"slow-{key[:-2]}",
                    severity=Severity.WARNING,
                    title=f"{label} took {value:.2f} s",
                    detail=(
                        f"A {label.lower()} over {_SLOW_CONNECT_S:g} s makes every new connection "
                        "expensive and short connect timeouts fire; resets during connect often "
                        "come from an overloaded listener (full accept backlog) or a middlebox."
                    ),
                    fix="Reuse connections (keep-alive pools) and set connect timeouts above this.",
                )
            )
    return found


# -- HTTP -------------------------------------------------------------------------------


def _judge_http(
    target: Target, obs: HttpObservation, host: HostKeepalive, idle_limit: float
) -> Judgement:
    timings = {"dns_s": obs.dns_s, "connect_s": obs.connect_s}
    if obs.tls is not None:
        timings["tls_s"] = obs.tls.handshake_s
    timings["first_byte_s"] = obs.first_byte_s
    timings = {k: round(v, 4) for k, v in timings.items()}
    findings: list[Finding] = []
    findings += _tls_findings(obs)
    findings += _slow_findings(timings)
    if obs.status >= 400:
        findings.append(
            Finding(
                id="http-error-status",
                severity=Severity.INFO,
                title=f"{target.path} answered {obs.status} {obs.reason}".rstrip(),
                detail=(
                    "The keep-alive measurements still hold, but some servers close the "
                    "connection after error responses."
                ),
                fix="Point the doctor at a URL your clients really call (one that returns 2xx).",
            )
        )
    idle_s: float | None = None
    source: Literal["measured", "configured", "advertised"] | None = None
    idle_close: Literal["fin", "rst"] | None = None
    if obs.keepalive == "refused":
        findings.append(
            Finding(
                id="keepalive-refused",
                severity=Severity.INFO,
                title="Server closes the connection after every response",
                detail=(
                    f"Connection: {obs.connection_header or '(absent)'}, {obs.http_version}. "
                    "No connection is ever reused, so there is no stale keep-alive race, but "
                    "every request pays a new TCP (and TLS) handshake."
                ),
                fix=(
                    "Enable HTTP keep-alive on the server (or the proxy in front) if latency "
                    "matters."
                ),
            )
        )
    elif obs.keepalive == "broken":
        findings.append(
            Finding(
                id="keepalive-broken",
                severity=Severity.CRITICAL,
                title="Keep-alive advertised, but the reused connection failed",
                detail=(
                    "The first response allowed reuse (no 'Connection: close'), yet a second "
                    f"request on the same connection failed: {obs.reuse_error}. Every pooled "
                    "client will see resets or 'server disconnected' errors on reuse."
                ),
                fix=(
                    "Have the server send 'Connection: close' when it will not reuse the "
                    "connection (check proxies in front of it), or disable pooling for this host."
                ),
            )
        )
    if obs.idle is not None:
        findings += _idle_findings(obs.idle, "connection")
        if obs.idle.outcome != "open":
            assert obs.idle.elapsed_s is not None
            idle_s, source, idle_close = obs.idle.elapsed_s, "measured", obs.idle.outcome
    if obs.keep_alive_timeout_s is not None:
        findings += _keep_alive_header_findings(obs, idle_s)
        if idle_s is None and obs.keepalive == "honoured":
            idle_s, source = obs.keep_alive_timeout_s, "advertised"
    if obs.write_after_close is not None:
        findings.append(_write_after_close_finding(obs))
    kept_open = obs.idle.limit_s if obs.idle is not None and obs.idle.outcome == "open" else None
    checks: tuple[ClientCheck, ...] = ()
    if obs.keepalive == "honoured":
        checks = _client_checks("http", idle_s, kept_open)
    if idle_s is not None:
        how = {"fin": "closes idle connections", "rst": "resets idle connections"}.get(
            idle_close or "", "says it closes idle connections"
        )
        mismatch = _mismatch_finding("http", idle_s, checks, how)
        if mismatch:
            findings.append(mismatch)
    host_findings, host_recs = _host_findings(host)
    findings += host_findings
    recs: list[Recommendation] = []
    if obs.keepalive != "refused":
        recs += _http_recommendations(target, idle_s, source, idle_limit)
    recs += host_recs
    facts: dict[str, Any] = {
        "peer": obs.peer,
        "addresses": list(obs.addresses),
        "http_version": obs.http_version,
        "status": obs.status,
        "server": obs.server,
        "connection_header": obs.connection_header,
        "keep_alive_header": obs.keep_alive_header,
        "keep_alive_timeout_s": obs.keep_alive_timeout_s,
        "keep_alive_max": obs.keep_alive_max,
        "keepalive": obs.keepalive,
        "tls": None
        if obs.tls is None
        else {
            "version": obs.tls.version,
            "cipher": obs.tls.cipher,
            "alpn": obs.tls.alpn,
            "verified": obs.tls.verified,
            "verify_error": obs.tls.verify_error,
            "not_after": obs.tls.not_after,
            "days_left": None if obs.tls.days_left is None else round(obs.tls.days_left, 1),
        },
        "sent_before_idle_close": obs.idle.said if obs.idle is not None else None,
        "write_after_close": None
        if obs.write_after_close is None
        else {
            "first_write": obs.write_after_close.first_write,
            "then_read": obs.write_after_close.then_read,
            "second_write": obs.write_after_close.second_write,
        },
    }
    return Judgement(
        server_idle_timeout_s=None if idle_s is None else round(idle_s, 3),
        source=source,
        idle_close=idle_close,
        timings=timings,
        facts=facts,
        client_defaults=checks,
        findings=_rank(findings),
        recommendations=tuple(recs),
    )


def _tls_findings(obs: HttpObservation) -> list[Finding]:
    tls = obs.tls
    if tls is None:
        return []
    found = []
    if not tls.verified:
        found.append(
            Finding(
                id="tls-certificate-invalid",
                severity=Severity.CRITICAL,
                title="TLS certificate does not verify",
                detail=(
                    f"{tls.verify_error}. Clients that verify certificates (all of them by "
                    "default) fail before sending anything. The rest of this report was "
                    "measured over an unverified connection."
                ),
                fix=(
                    "Install a certificate chain valid for this host name, or give clients the "
                    "right CA bundle (doctor: --cafile)."
                ),
            )
        )
    if tls.days_left is not None and tls.days_left < _CERT_EXPIRY_WARN_DAYS:
        found.append(
            Finding(
                id="tls-certificate-expiring",
                severity=Severity.WARNING,
                title=f"TLS certificate expires in {tls.days_left:.0f} days",
                detail=f"notAfter: {tls.not_after}.",
                fix="Renew the certificate.",
            )
        )
    if tls.version in ("TLSv1", "TLSv1.1", "SSLv3"):
        found.append(
            Finding(
                id="tls-version-old",
                severity=Severity.WARNING,
                title=f"Server negotiated {tls.version}",
                detail="TLS below 1.2 is deprecated; current clients refuse it.",
                fix="Enable TLS 1.2 and 1.3 on the server.",
            )
        )
    return found


def _keep_alive_header_findings(obs: HttpObservation, measured: float | None) -> list[Finding]:
    advertised = obs.keep_alive_timeout_s
    assert advertised is not None
    if measured is not None and measured < advertised - max(0.3, 0.2 * advertised):
        return [
            Finding(
                id="keep-alive-header-overstates",
                severity=Severity.WARNING,
                title=(
                    f"Keep-Alive header says timeout={_num(advertised)}, but idle connections "
                    f"close after {_s(measured)}"
                ),
                detail=(
                    "Clients that honour the header (resetguard, Node.js) trust it and will "
                    "reuse connections that are already closed. Often a proxy in front of the "
                    "server has a shorter idle timeout than the server it forwards the header of."
                ),
                fix=(
                    f"Make the header match the real timeout, or configure clients with an "
                    f"expiry of {_s(safe_expiry(measured))} explicitly."
                ),
            )
        ]
    return [
        Finding(
            id="keep-alive-header",
            severity=Severity.INFO,
            title=f"Server advertises Keep-Alive: {obs.keep_alive_header}",
            detail=(
                f"Clients that honour the hint (resetguard, Node.js) expire idle connections "
                f"at {_s(safe_expiry(advertised))}; httpx, aiohttp and urllib3 ignore it."
            ),
            fix="",
        )
    ]


def _write_after_close_finding(obs: HttpObservation) -> Finding:
    wac = obs.write_after_close
    assert wac is not None
    read_meaning = {
        "eof": "end of stream -> http.client 'RemoteDisconnected', httpx 'Server disconnected "
        "without sending a response', aiohttp 'ServerDisconnectedError'",
        "ECONNRESET": "ECONNRESET -> 'Connection reset by peer'",
        "data": "a response (the server still answered on the half-closed connection)",
        "nothing": "nothing yet (the client would wait for its read timeout)",
    }.get(wac.then_read, wac.then_read)
    write_meaning = {
        "ok": "accepted by the kernel (send() succeeds: the client cannot tell yet)",
        "EPIPE": "EPIPE -> BrokenPipeError",
        "ECONNRESET": "ECONNRESET -> 'Connection reset by peer'",
    }
    return Finding(
        id="write-after-close",
        severity=Severity.INFO,
        title="What a request on the just-closed connection runs into",
        detail=(
            f"Writing the request: {write_meaning.get(wac.first_write, wac.first_write)}; "
            f"reading the response: {read_meaning}; writing again: "
            f"{write_meaning.get(wac.second_write, wac.second_write)}. These are the errors "
            "a pooled client shows when it reuses a connection the server closed while idle."
        ),
        fix=(
            "Expire idle connections before the server's timeout, and retry idempotent requests "
            "that fail this way on a reused connection before any response byte (resetguard.http)."
        ),
    )


def _http_recommendations(
    target: Target,
    idle_s: float | None,
    source: str | None,
    idle_limit: float,
) -> list[Recommendation]:
    if idle_s is not None:
        expiry = safe_expiry(idle_s)
        why = (
            f"# The server closes idle connections after {_s(idle_s)} ({source}): "
            "expire ours first."
        )
    else:
        expiry = fallback_expiry("http")
        why = (
            f"# No idle close seen within {_s(idle_limit)}; {_s(expiry)} stays below the common "
            "5 s server default."
        )
    e = _num(expiry)
    return [
        Recommendation(
            client="httpx",
            summary=f"keepalive_expiry={e}",
            code=(
                f"import httpx\n\n{why}\n"
                f"client = httpx.Client(limits=httpx.Limits(keepalive_expiry={e}))\n"
            ),
        ),
        Recommendation(
            client="requests",
            summary=f"resetguard.http.Session with HTTPPolicy(idle_timeout={e})",
            code=(
                "import resetguard.http\n\n"
                f"{why}\n"
                "# urllib3's pool never expires idle connections; resetguard's Session does.\n"
                "session = resetguard.http.Session(\n"
                f"    policy=resetguard.http.HTTPPolicy(idle_timeout={e})\n"
                ")\n"
            ),
        ),
        Recommendation(
            client="aiohttp",
            summary=f"TCPConnector(keepalive_timeout={e})",
            code=(
                f"import aiohttp\n\n{why}\n"
                "async def main() -> None:\n"
                f"    connector = aiohttp.TCPConnector(keepalive_timeout={e})\n"
                "    async with aiohttp.ClientSession(connector=connector) as session:\n"
                "        ...\n"
            ),
        ),
    ]


# -- databases --------------------------------------------------------------------------


def _judge_db(
    target: Target, obs: DbObservation, host: HostKeepalive, idle_limit: float
) -> Judgement:
    timings = {"dns_s": round(obs.dns_s, 4), "connect_s": round(obs.connect_s, 4)}
    findings: list[Finding] = _slow_findings(timings)
    configured = obs.idle_timeout_s
    idle_s: float | None = configured
    source: Literal["measured", "configured", "advertised"] | None = (
        "configured" if configured is not None else None
    )
    idle_close: Literal["fin", "rst"] | None = None
    setting = obs.idle_setting
    if obs.idle is not None:
        findings += [f for f in _idle_findings(obs.idle, "session") if f.id != "no-idle-close"]
        if obs.idle.outcome == "open":
            findings.append(
                Finding(
                    id="db-idle-timeout-not-observed",
                    severity=Severity.WARNING,
                    title=f"{setting}={_s(configured or 0)}, but the session was not closed",
                    detail=(
                        f"The server reports {setting}={_s(configured or 0)}, yet an idle session "
                        f"stayed open for {_s(obs.idle.limit_s)}. Something between you and the "
                        "server (a pooler such as PgBouncer, ProxySQL) may hold the session."
                    ),
                    fix="Run the doctor against the database directly and against the pooler.",
                )
            )
        else:
            assert obs.idle.elapsed_s is not None
            idle_s, source, idle_close = obs.idle.elapsed_s, "measured", obs.idle.outcome
    if configured is None:
        findings.append(
            Finding(
                id="db-no-idle-timeout",
                severity=Severity.INFO,
                title=f"Server never closes idle sessions ({setting} is off)",
                detail=(
                    "The server itself keeps idle connections forever, but firewalls, NAT "
                    "gateways and load balancers on the path drop idle flows (AWS NAT: 350 s); "
                    "the next query on such a pooled connection fails."
                ),
                fix=_no_idle_timeout_fix(obs.kind),
            )
        )
    else:
        findings.append(
            Finding(
                id="db-idle-timeout",
                severity=Severity.INFO,
                title=f"Server closes sessions idle for {_s(configured)} ({setting})",
                detail=f"{setting} for this session: {_s(configured)}.",
                fix="",
            )
        )
    # Size clients from the shorter of measured and configured: Redis, for one, closes
    # up to a second after its setting (whole-second timer), and the setting is the promise.
    sizing = idle_s if configured is None or idle_s is None else min(idle_s, configured)
    checks = _client_checks(obs.kind, sizing)
    if sizing is not None:
        how = "closes idle sessions" if source == "measured" else f"({setting}) closes sessions"
        mismatch = _mismatch_finding(obs.kind, sizing, checks, how)
        if mismatch:
            findings.append(mismatch)
    findings += _db_specific_findings(obs)
    host_findings, host_recs = _host_findings(host)
    findings += host_findings
    recs = _db_recommendations(target, obs.kind, sizing) + host_recs
    facts: dict[str, Any] = {
        "peer": obs.peer,
        "server_version": obs.server_version,
        "idle_setting": setting,
        "configured_idle_timeout_s": configured,
        "measured_idle_timeout_s": None
        if obs.idle is None or obs.idle.elapsed_s is None
        else round(obs.idle.elapsed_s, 3),
        "server_tcp_keepalive_s": obs.server_keepalive_s,
        "settings": dict(obs.settings),
    }
    return Judgement(
        server_idle_timeout_s=None if idle_s is None else round(idle_s, 3),
        source=source,
        idle_close=idle_close,
        timings=timings,
        facts=facts,
        client_defaults=checks,
        findings=_rank(findings),
        recommendations=tuple(recs),
    )


def _no_idle_timeout_fix(kind: str) -> str:
    if kind == "redis":
        return (
            "Have redis-py PING connections idle for a while before reusing them "
            "(health_check_interval) and enable TCP keepalive on the client "
            "(socket_keepalive; see the settings below)."
        )
    return (
        "Recycle or check pooled connections (SQLAlchemy pool_recycle / pool_pre_ping, "
        "psycopg_pool check= / max_idle) and enable TCP keepalive on the client (see the "
        "settings below)."
    )


def _db_specific_findings(obs: DbObservation) -> list[Finding]:
    found = []
    settings = obs.settings
    if obs.kind == "postgresql":
        in_tx = settings.get("idle_in_transaction_session_timeout_s")
        if in_tx:
            found.append(
                Finding(
                    id="pg-idle-in-transaction-timeout",
                    severity=Severity.INFO,
                    title=f"Sessions idle inside a transaction are killed after {_s(in_tx)}",
                    detail=(
                        "idle_in_transaction_session_timeout is set: a connection that opened a "
                        "transaction and then waits (e.g. on an HTTP call) is terminated with "
                        "SQLSTATE 25P03."
                    ),
                    fix="Keep transactions short; use autocommit for read-only work.",
                )
            )
        if not settings.get("tcp_keepalives_idle_s"):
            found.append(
                Finding(
                    id="pg-server-keepalive-default",
                    severity=Severity.INFO,
                    title="Server-side TCP keepalive uses the server OS default",
                    detail=(
                        "tcp_keepalives_idle=0: the server probes idle clients only after its "
                        "OS default (often 7200 s), so dead clients hold sessions that long."
                    ),
                    fix=(
                        "Set tcp_keepalives_idle (e.g. 60) on the server, or keepalives on "
                        "the client."
                    ),
                )
            )
    elif obs.kind == "mysql":
        wait = settings.get("wait_timeout_s")
        interactive = settings.get("interactive_timeout_s")
        if wait is not None and interactive is not None and wait != interactive:
            found.append(
                Finding(
                    id="mysql-interactive-timeout-differs",
                    severity=Severity.INFO,
                    title=(
                        f"interactive_timeout ({_s(interactive)}) differs from wait_timeout "
                        f"({_s(wait)})"
                    ),
                    detail=(
                        "Interactive clients (the mysql shell, CLIENT_INTERACTIVE) get "
                        "interactive_timeout; application drivers get wait_timeout, which is "
                        "what was measured here. Tests from a shell can mislead."
                    ),
                    fix="Size application pools from wait_timeout.",
                )
            )
    elif obs.kind == "redis":
        if "config_error" in settings:
            found.append(
                Finding(
                    id="redis-config-unavailable",
                    severity=Severity.INFO,
                    title="CONFIG GET is not allowed on this server",
                    detail=f"{settings['config_error']}. The idle timeout could not be read.",
                    fix="Look up 'timeout' and 'tcp-keepalive' in your provider's settings.",
                )
            )
        elif obs.server_keepalive_s is None:
            found.append(
                Finding(
                    id="redis-no-tcp-keepalive",
                    severity=Severity.INFO,
                    title="Redis tcp-keepalive is off",
                    detail="Dead clients are never detected by the server and hold connections.",
                    fix="CONFIG SET tcp-keepalive 300 (the Redis default) in redis.conf.",
                )
            )
    return found


def _sqlalchemy_url(target: Target) -> str:
    scheme, rest = target.display.split("://", 1)
    driver = "postgresql+psycopg" if target.kind == "postgresql" else "mysql+pymysql"
    del scheme
    return f"{driver}://{rest}"


# Which clients get copy-paste settings per server kind: (name shown, pool_settings driver).
_DB_CLIENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "postgresql": (
        ("SQLAlchemy", "sqlalchemy"),
        ("psycopg_pool", "psycopg_pool"),
        ("asyncpg", "asyncpg"),
    ),
    "mysql": (("SQLAlchemy", "sqlalchemy"), ("aiomysql", "aiomysql")),
    "redis": (("redis-py", "redis"),),
}


def _db_recommendations(target: Target, kind: str, idle_s: float | None) -> list[Recommendation]:
    """Rendered from :func:`resetguard.db.pool_settings`: the one source of pool advice."""
    if idle_s is not None:
        why = f"The server drops sessions idle for {format_seconds(idle_s)}."
    else:
        why = "The server keeps idle sessions, but NAT/LB hops often drop them (AWS NAT: 350 s)."
    if target.password is not None:
        why += "\nReplace *** with the real password."
    recs: list[Recommendation] = []
    for client, driver in _DB_CLIENTS.get(kind, ()):
        backend: Literal["postgresql", "mysql"] | None = None
        if driver == "sqlalchemy" and kind in ("postgresql", "mysql"):
            backend = "postgresql" if kind == "postgresql" else "mysql"
        settings = pool_settings(driver, server_idle_timeout=idle_s, backend=backend)
        url = _sqlalchemy_url(target) if driver == "sqlalchemy" else target.display
        comment = why
        if driver == "redis":
            # redis-py does not retire connections; it PINGs one that sat idle too long.
            ping = format_seconds(settings.idle_limit)
            head, _, rest = why.partition(".")
            comment = f"{head}: PING a connection idle over {ping} before reuse.{rest}"
        recs.append(
            Recommendation(
                client=client,
                summary=settings.summary(),
                code=settings.render(url, comment=comment),
            )
        )
    return recs


# -- plain TCP --------------------------------------------------------------------------


def _judge_tcp(
    target: Target, obs: TcpObservation, host: HostKeepalive, idle_limit: float
) -> Judgement:
    timings = {"dns_s": round(obs.dns_s, 4), "connect_s": round(obs.connect_s, 4)}
    findings = _slow_findings(timings) + _idle_findings(obs.idle, "connection")
    idle_s = obs.idle.elapsed_s
    idle_close: Literal["fin", "rst"] | None = (
        None if obs.idle.outcome == "open" else obs.idle.outcome
    )
    if idle_s is None:
        seen = f"no close of a silent connection within {_s(obs.idle.limit_s)}"
    else:
        seen = f"a silent connection closed after {_s(idle_s)} with {obs.idle.outcome.upper()}"
    findings.append(
        Finding(
            id="tcp-only",
            severity=Severity.INFO,
            title="Measured at the TCP level only: no client setting was judged",
            detail=(
                f"Measured: {seen}. A host:port target is probed without a protocol: the "
                "connection sends nothing, so this is how long the server waits for a client "
                "that never speaks (for HTTP servers often a header timeout, for databases a "
                "login timeout). Not measured: how long a connection stays usable after a "
                "request or a login (HTTP keep-alive, a database session), which is what "
                "pooled clients run into. So no client's idle expiry was compared, and a "
                "healthy verdict here says nothing about them."
            ),
            fix=(
                f"For an HTTP server run: resetguard doctor http://{target.display}/ ; for a "
                "database give a postgresql://, mysql:// or redis:// DSN."
            ),
        )
    )
    host_findings, host_recs = _host_findings(host)
    findings += host_findings
    facts: dict[str, Any] = {
        "peer": obs.peer,
        "addresses": list(obs.addresses),
        "not_judged": "client idle expiry vs the keep-alive or session idle timeout "
        "(needs an http(s):// URL or a database DSN)",
        "sent_before_idle_close": obs.idle.said,
        "note": (
            "A silent connection was watched: the time measured is how long this server "
            "waits for a client that sends nothing (for databases often a login timeout)."
        ),
    }
    return Judgement(
        server_idle_timeout_s=None if idle_s is None else round(idle_s, 3),
        source="measured" if idle_s is not None else None,
        idle_close=idle_close,
        timings=timings,
        facts=facts,
        client_defaults=(),
        findings=_rank(findings),
        recommendations=tuple(host_recs),
    )
