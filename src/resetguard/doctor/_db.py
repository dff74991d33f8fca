"""Database and plain-TCP probes.

Drivers (psycopg, PyMySQL, redis-py) are imported inside the probe, so the doctor works
with the bare package for HTTP and TCP targets and says which extra to install otherwise.
Nothing here changes a server setting: what is read is the setting of the probe's own
session (so DSN parameters such as PostgreSQL ``options=-c idle_session_timeout=…`` or a
MySQL ``init_command`` are taken into account, exactly as the application would see them).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._net import Clock, IdleWatch, ProbeError, connect, resolve, watch_fd, watch_idle
from ._progress import NullProgress, Progress
from ._target import Target, redact

__all__ = ["DbObservation", "TcpObservation", "probe_db", "probe_tcp"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpObservation:
    """A plain ``host:port`` target: connect time and how a silent connection ends."""

    addresses: tuple[str, ...]
    peer: str
    dns_s: float
    connect_s: float
    idle: IdleWatch


@dataclass(frozen=True, slots=True, kw_only=True)
class DbObservation:
    """What a database probe read and measured.

    ``idle_timeout_s`` is the server's effective idle timeout for this session from its
    settings (``None`` when the server never closes idle sessions); ``idle`` the
    measurement, taken when that timeout fits within the idle limit.
    """

    kind: str
    peer: str
    dns_s: float
    connect_s: float
    server_version: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    idle_setting: str
    idle_timeout_s: float | None
    server_keepalive_s: float | None
    idle: IdleWatch | None


def _tcp_reachable(
    target: Target, timeout: float, clock: Clock, progress: Progress
) -> tuple[str, float, float]:
    progress.step(f"resolving {target.host}")
    started = clock()
    addresses = resolve(target.host, target.port, timeout)
    dns_s = clock() - started
    progress.step(f"connecting to port {target.port}")
    sock, (_family, sockaddr), connect_s = connect(addresses, timeout, clock=clock)
    sock.close()
    return f"{sockaddr[0]}:{sockaddr[1]}", dns_s, connect_s


def probe_tcp(
    target: Target,
    *,
    idle_limit: float,
    timeout: float,
    clock: Clock = time.monotonic,
    progress: Progress | None = None,
) -> TcpObservation:
    """Connect to ``host:port`` and watch, silently, how long the server keeps the connection."""
    progress = progress or NullProgress()
    progress.step(f"resolving {target.host}")
    started = clock()
    addresses = resolve(target.host, target.port, timeout)
    dns_s = clock() - started
    progress.step(f"connecting to port {target.port}")
    sock, (_family, sockaddr), connect_s = connect(addresses, timeout, clock=clock)
    try:
        progress.step(
            f"waiting for the server to close the silent connection (up to {idle_limit:g} s)"
        )
        idle = watch_idle(sock, limit=idle_limit, clock=clock, progress=progress)
    finally:
        sock.close()
    return TcpObservation(
        addresses=tuple(str(a[1][0]) for a in addresses),
        peer=f"{sockaddr[0]}:{sockaddr[1]}",
        dns_s=dns_s,
        connect_s=connect_s,
        idle=idle,
    )


def probe_db(
    target: Target,
    *,
    idle_limit: float,
    timeout: float,
    clock: Clock = time.monotonic,
    progress: Progress | None = None,
) -> DbObservation:
    """Read (and where it fits in ``idle_limit``, measure) a database's idle timeouts."""
    progress = progress or NullProgress()
    peer, dns_s, connect_s = _tcp_reachable(target, timeout, clock, progress)
    probes: dict[str, Callable[..., DbObservation]] = {
        "postgresql": _postgres,
        "mysql": _mysql,
        "redis": _redis,
    }
    return probes[target.kind](
        target,
        peer=peer,
        dns_s=dns_s,
        connect_s=connect_s,
        idle_limit=idle_limit,
        timeout=timeout,
        clock=clock,
        progress=progress,
    )


def _missing(module: str, extra: str) -> ProbeError:
    return ProbeError(
        "driver",
        f"the {module} driver is not installed; install it with: pip install 'resetguard[{extra}]'",
    )


def _driver_failure(exc: BaseException) -> ProbeError:
    message = " ".join(str(exc).split())
    return ProbeError("driver", f"could not log in: {type(exc).__name__}: {redact(message)}")


def _measure(
    fd: int,
    idle_timeout_s: float | None,
    *,
    idle_limit: float,
    started: float,
    clock: Clock,
    progress: Progress,
) -> IdleWatch | None:
    if idle_timeout_s is None or idle_timeout_s > idle_limit:
        return None
    # Watch a little past the setting: servers check their timers periodically.
    limit = min(idle_limit, idle_timeout_s * 1.5 + 1.5)
    progress.step(
        f"measuring: waiting for the server to close the idle session (up to {limit:g} s)"
    )
    return watch_fd(fd, limit=limit, clock=clock, progress=progress, started=started)


_PG_SETTINGS = (
    "idle_session_timeout",
    "idle_in_transaction_session_timeout",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
    "statement_timeout",
)
_UNIT_S = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _postgres(
    target: Target,
    *,
    peer: str,
    dns_s: float,
    connect_s: float,
    idle_limit: float,
    timeout: float,
    clock: Clock,
    progress: Progress,
) -> DbObservation:
    try:
        import psycopg
    except ImportError:
        raise _missing("psycopg", "postgres") from None
    progress.step("logging in (psycopg)")
    try:
        conn = psycopg.connect(
            target.raw,
            # No open transaction: idle_session_timeout applies, not the in-transaction one.
            autocommit=True,
            connect_timeout=max(1, math.ceil(timeout)),
            application_name="resetguard-doctor",
        )
    except psycopg.Error as exc:
        raise _driver_failure(exc) from None
    try:
        progress.step("reading idle and keepalive settings")
        rows = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", [list(_PG_SETTINGS)]
        ).fetchall()
        row = conn.execute("SHOW server_version").fetchone()
        idle_from = clock()
        settings: dict[str, Any] = {}
        for name, setting, unit in rows:
            seconds = float(setting) * _UNIT_S.get(unit or "", 1.0)
            settings[f"{name}_s" if unit in _UNIT_S else name] = (
                int(setting) if unit not in _UNIT_S else seconds
            )
        idle_timeout = settings.get("idle_session_timeout_s") or None
        keepalive = settings.get("tcp_keepalives_idle_s") or None
        idle = _measure(
            conn.pgconn.socket,
            idle_timeout,
            idle_limit=idle_limit,
            started=idle_from,
            clock=clock,
            progress=progress,
        )
    except psycopg.Error as exc:
        raise _driver_failure(exc) from None
    finally:
        conn.close()
    return DbObservation(
        kind="postgresql",
        peer=peer,
        dns_s=dns_s,
        connect_s=connect_s,
        server_version=str(row[0]) if row else None,
        settings=settings,
        idle_setting="idle_session_timeout",
        idle_timeout_s=idle_timeout,
        server_keepalive_s=keepalive,
        idle=idle,
    )


def _mysql(
    target: Target,
    *,
    peer: str,
    dns_s: float,
    connect_s: float,
    idle_limit: float,
    timeout: float,
    clock: Clock,
    progress: Progress,
) -> DbObservation:
    try:
        import pymysql
    except ImportError:
        raise _missing("PyMySQL", "mysql") from None
    progress.step("logging in (PyMySQL)")
    kwargs: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "password": target.password or "",
        "connect_timeout": timeout,
        "autocommit": True,
    }
    if target.username is not None:
        kwargs["user"] = target.username
    if target.database:
        kwargs["database"] = target.database
    for name in ("init_command", "unix_socket", "charset"):
        value = target.param(name)
        if value:
            kwargs[name] = value
    try:
        conn = pymysql.connect(**kwargs)
    except pymysql.MySQLError as exc:
        raise _driver_failure(exc) from None
    try:
        progress.step("reading idle timeouts")
        with conn.cursor() as cur:
            cur.execute(
                "SELECT @@version, @@session.wait_timeout, @@global.wait_timeout,"
                " @@global.interactive_timeout, @@global.net_read_timeout,"
                " @@global.connect_timeout"
            )
            row = cur.fetchone()
        idle_from = clock()
        version, session_wait, global_wait, interactive, net_read, connect_to = row
        settings: dict[str, Any] = {
            "wait_timeout_s": float(session_wait),
            "global_wait_timeout_s": float(global_wait),
            "interactive_timeout_s": float(interactive),
            "net_read_timeout_s": float(net_read),
            "connect_timeout_s": float(connect_to),
        }
        idle_timeout = float(session_wait) or None
        idle = _measure(
            conn._sock.fileno(),
            idle_timeout,
            idle_limit=idle_limit,
            started=idle_from,
            clock=clock,
            progress=progress,
        )
    except pymysql.MySQLError as exc:
        raise _driver_failure(exc) from None
    finally:
        with contextlib.suppress(Exception):  # already closed by the server
            conn.close()
    return DbObservation(
        kind="mysql",
        peer=peer,
        dns_s=dns_s,
        connect_s=connect_s,
        server_version=str(version),
        settings=settings,
        idle_setting="wait_timeout",
        idle_timeout_s=idle_timeout,
        server_keepalive_s=None,
        idle=idle,
    )


def _redis(
    target: Target,
    *,
    peer: str,
    dns_s: float,
    connect_s: float,
    idle_limit: float,
    timeout: float,
    clock: Clock,
    progress: Progress,
) -> DbObservation:
    try:
        import redis
    except ImportError:
        raise _missing("redis", "redis") from None
    progress.step("logging in (redis-py)")
    client = redis.Redis.from_url(
        target.raw,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        single_connection_client=True,
    )
    try:
        try:
            version = client.info("server").get("redis_version")
        except redis.RedisError as exc:
            raise _driver_failure(exc) from None
        progress.step("reading timeout and tcp-keepalive")
        settings: dict[str, Any] = {}
        config: dict[Any, Any] = {}
        try:
            config.update(client.config_get("timeout"))
            config.update(client.config_get("tcp-keepalive"))
        except redis.ResponseError as exc:
            # Managed services often rename or forbid CONFIG; say so instead of guessing.
            settings["config_error"] = redact(str(exc))
        except redis.RedisError as exc:
            raise _driver_failure(exc) from None
        idle_from = clock()
        idle_timeout = float(config.get("timeout") or 0) or None
        keepalive = float(config.get("tcp-keepalive") or 0) or None
        if "timeout" in config:
            settings["timeout_s"] = float(config["timeout"])
        if "tcp-keepalive" in config:
            settings["tcp_keepalive_s"] = float(config["tcp-keepalive"])
        connection = client.connection
        sock = getattr(connection, "_sock", None) if connection is not None else None
        idle = None
        if sock is not None:
            # Redis checks idle clients in its cron with whole-second timestamps: the close
            # lands between timeout and timeout + ~1 s, so watch a little longer.
            idle = _measure(
                sock.fileno(),
                None if idle_timeout is None else idle_timeout + 1.0,
                idle_limit=idle_limit,
                started=idle_from,
                clock=clock,
                progress=progress,
            )
    finally:
        with contextlib.suppress(Exception):  # already closed by the server
            client.close()
    return DbObservation(
        kind="redis",
        peer=peer,
        dns_s=dns_s,
        connect_s=connect_s,
        server_version=str(version) if version else None,
        settings=settings,
        idle_setting="timeout",
        idle_timeout_s=idle_timeout,
        server_keepalive_s=keepalive,
        idle=idle,
    )
