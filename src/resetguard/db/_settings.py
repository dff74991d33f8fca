"""Pool settings as data: what each database driver should be told, and why.

One place derives, from the server's idle timeout (PostgreSQL ``idle_session_timeout``,
MySQL ``wait_timeout``, Redis ``timeout``, or none), the settings a pool needs so it never
hands out a connection the server already dropped: a check on checkout, an idle limit and a
maximum lifetime below the server's limit, and TCP keepalive. ``resetguard doctor`` renders
its database advice from here, and :func:`resetguard.db.redis_client` /
:func:`resetguard.db.mongo_client_options` build their clients from it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

__all__ = [
    "DRIVERS",
    "FALLBACK_IDLE_LIMIT",
    "Code",
    "PoolSettings",
    "Setting",
    "format_seconds",
    "pool_settings",
    "safe_expiry",
]

Driver = Literal["aiomysql", "asyncpg", "psycopg_pool", "pymongo", "pymysql", "redis", "sqlalchemy"]
DRIVERS: tuple[str, ...] = (
    "aiomysql",
    "asyncpg",
    "psycopg_pool",
    "pymongo",
    "pymysql",
    "redis",
    "sqlalchemy",
)

# When the server never closes idle sessions, the path still may: AWS NAT gateways drop
# flows idle for 350 s, so retire connections before that.
FALLBACK_IDLE_LIMIT = 300.0
# Redis without a `timeout`: PING a connection idle this long before using it, so a flow a
# NAT / load balancer dropped is found before a command is written (redis-py's own docs use 30).
_REDIS_FALLBACK_HEALTH = 30.0
# TCP keepalive: first probe after 60 s idle, then every 10 s, 3 probes: a dead peer is noticed
# within ~90 s, and NAT entries (350 s on AWS) stay alive.
_KEEPALIVE = (60, 10, 3)
# psycopg_pool / SQLAlchemy lifetime cap when the server allows longer: the psycopg_pool
# default is 3600 s; half of it also spreads reconnects after a failover.
_MAX_LIFETIME = 1800.0
# Fail a dead host in 10 s instead of the OS's ~2 min SYN retries.
_CONNECT_TIMEOUT = 10


def safe_expiry(server_idle_s: float) -> float:
    """A client idle expiry safely below ``server_idle_s``: 1 s margin (5 % for long timeouts).

    Example::

        >>> safe_expiry(5.0), safe_expiry(1.5), safe_expiry(28800.0)
        (4.0, 0.75, 27360.0)
    """
    margin = max(min(1.0, server_idle_s / 2), 0.05 * server_idle_s)
    return round(server_idle_s - margin, 3)


def _num(value: float) -> str:
    """Source text for a number of seconds: whole numbers from 10 up, else 2 decimals."""
    if value >= 10:
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def format_seconds(value: float) -> str:
    """A duration for people: ``0.75 s``, ``300 s``, ``8 h`` (whole hours from 2 h up).

    Example::

        >>> format_seconds(0.75), format_seconds(28800.0), format_seconds(27360.0)
        ('0.75 s', '8 h', '27360 s')
    """
    if value >= 7200 and value % 3600 == 0:
        return f"{int(value // 3600)} h"
    return f"{_num(value)} s"


@dataclass(frozen=True, slots=True)
class Code:
    """A value written in the driver's own terms: rendered as ``source``, built by ``build``.

    ``build`` imports the driver lazily, so the settings stay plain data until used.
    """

    source: str
    imports: tuple[str, ...] = ()
    build: Callable[[], object] = field(default=lambda: None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One keyword argument for the driver, with the reason it has this value."""

    name: str
    value: object
    reason: str

    def source(self) -> str:
        """The value as Python source."""
        if isinstance(self.value, Code):
            return self.value.source
        if isinstance(self.value, float):
            return _num(self.value)
        return repr(self.value)

    def resolve(self) -> object:
        """The value itself (a :class:`Code` is built, importing the driver)."""
        if isinstance(self.value, Code):
            return self.value.build()
        if isinstance(self.value, dict):
            return {_built(k): _built(v) for k, v in self.value.items()}
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSettings:
    """The settings for one driver: data first, with a renderer to copy-paste code.

    Attributes:
        driver: one of :data:`DRIVERS`.
        server_idle_timeout: the server's idle timeout these were sized from (``None``: none).
        idle_limit: seconds after which an idle pooled connection is checked or retired.
        settings: the keyword arguments, each with its reason.
        notes: what the driver cannot be told, and what to do instead.
    """

    driver: str
    server_idle_timeout: float | None
    idle_limit: float
    settings: tuple[Setting, ...]
    notes: tuple[str, ...] = ()
    _imports: tuple[str, ...] = ()
    _call: str = ""
    _variable: str = ""
    _async: bool = False
    _tail: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> Setting:
        for setting in self.settings:
            if setting.name == name:
                return setting
        raise KeyError(f"{self.driver} has no setting {name!r}")

    def kwargs(self) -> dict[str, object]:
        """The settings as keyword arguments for the driver (imports it for :class:`Code`)."""
        return {s.name: s.resolve() for s in self.settings}

    def summary(self) -> str:
        """``name=value`` pairs on one line (mappings shortened to ``{…}``)."""
        return ", ".join(
            f"{s.name}={'{…}' if isinstance(s.value, dict) else s.source()}" for s in self.settings
        )

    def render(self, url: str, *, comment: str = "") -> str:
        """Copy-paste code creating the pool for ``url``, one reason comment per setting.

        ``comment``: lines placed above the code (each gets a ``#`` if it has none).

        Example::

            >>> from resetguard.db import pool_settings
            >>> code = pool_settings("redis", server_idle_timeout=60).render("redis://h/0")
            >>> "health_check_interval=57," in code
            True
        """
        imports = {line for s in self.settings for line in _imports_of(s.value)}
        imports.update(self._imports)
        head = sorted(i for i in imports if i.startswith("import "))
        head += sorted(i for i in imports if i.startswith("from "))
        lines = [*head, ""]
        # The caller's lines as given (not re-wrapped), then the notes, wrapped.
        lines += [f"# {line.lstrip('# ')}" for line in comment.splitlines()]
        for note in self.notes:
            lines += _comment(note, "")
        pad = "    " if self._async else ""
        if self._async:
            lines.append("async def main() -> None:")
        await_ = "await " if self._async else ""
        lines.append(f"{pad}{self._variable} = {await_}{self._call}(")
        lines += [f"{pad}    {arg}," for arg in _target_args(self.driver, url)]
        for s in self.settings:
            lines += _comment(s.reason, pad + "    ")
            lines.append(f"{pad}    {s.name}={s.source()},")
        lines += [f"{pad}    {t}" for t in self._tail]
        lines.append(f"{pad})")
        return "\n".join(lines) + "\n"


def _comment(text: str, indent: str) -> list[str]:
    width = max(40, 92 - len(indent))
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width)]


def _built(value: object) -> object:
    return value.build() if isinstance(value, Code) else value


def _imports_of(value: object) -> tuple[str, ...]:
    if isinstance(value, Code):
        return value.imports
    if isinstance(value, dict):
        return tuple(i for kv in value.items() for x in kv for i in _imports_of(x))
    return ()


def _target_args(driver: str, url: str) -> list[str]:
    if driver not in ("pymysql", "aiomysql"):
        return [repr(url)]
    # PyMySQL and aiomysql take keywords, not a URL.
    parts = urlsplit(url)
    args = [f"host={parts.hostname or '127.0.0.1'!r}", f"port={parts.port or 3306}"]
    if parts.username:
        args.append(f"user={unquote(parts.username)!r}")
    if parts.password is not None:
        args.append(f"password={unquote(parts.password)!r}")
    if parts.path.strip("/"):
        args.append(f"db={parts.path.strip('/')!r}")
    return args


def _socket_option(name: str) -> Code:
    import socket

    return Code(f"socket.{name}", ("import socket",), lambda: getattr(socket, name))


def _keepalive_options_redis() -> dict[object, object]:
    idle, interval, count = _KEEPALIVE
    return {
        _socket_option("TCP_KEEPIDLE"): idle,
        _socket_option("TCP_KEEPINTVL"): interval,
        _socket_option("TCP_KEEPCNT"): count,
    }


class _KeepaliveMap(dict[object, object]):
    """A dict keyed by socket constants that renders as source and resolves lazily."""

    def __repr__(self) -> str:
        body = ", ".join(
            f"{k.source if isinstance(k, Code) else repr(k)}: {v!r}" for k, v in self.items()
        )
        return "{" + body + "}"


def _psycopg_keepalives() -> dict[str, int]:
    idle, interval, count = _KEEPALIVE
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
    }


def _server_keepalives() -> dict[str, str]:
    idle, interval, count = _KEEPALIVE
    return {
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": str(interval),
        "tcp_keepalives_count": str(count),
    }


def _check_timeout(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"server_idle_timeout must be a number of seconds or None, got {value!r}")
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise ValueError(
            f"server_idle_timeout must be a finite number of seconds >= 0 (0: never), got {value!r}"
        )
    return None if value == 0 else float(value)


def pool_settings(
    driver: str,
    *,
    server_idle_timeout: float | None = None,
    backend: Literal["postgresql", "mysql"] | None = None,
) -> PoolSettings:
    """The pool settings for ``driver``, sized from the server's idle timeout.

    Args:
        driver: ``"psycopg_pool"``, ``"asyncpg"``, ``"sqlalchemy"``, ``"pymysql"``,
            ``"aiomysql"``, ``"redis"`` or ``"pymongo"``.
        server_idle_timeout: seconds after which the server closes an idle session
            (``idle_session_timeout``, ``wait_timeout``, Redis ``timeout``); ``None`` or
            ``0``: it never does, and the limits are sized for NAT / load-balancer hops.
        backend: for ``"sqlalchemy"``: ``"postgresql"`` adds libpq TCP keepalives to
            ``connect_args`` (PyMySQL turns keepalive on by itself).

    Example::

        >>> from resetguard.db import pool_settings
        >>> s = pool_settings("psycopg_pool", server_idle_timeout=60)
        >>> s["max_idle"].value, s.idle_limit
        (57.0, 57.0)
        >>> pool_settings("sqlalchemy").summary()
        'pool_pre_ping=True, pool_recycle=300'
    """
    if driver not in DRIVERS:
        raise ValueError(f"unknown driver {driver!r}; expected one of {', '.join(DRIVERS)}")
    if backend not in (None, "postgresql", "mysql"):
        raise ValueError(f"backend must be 'postgresql', 'mysql' or None, got {backend!r}")
    timeout = _check_timeout(server_idle_timeout)
    if timeout is not None:
        limit = safe_expiry(timeout)
        below = f"below the server's {format_seconds(timeout)} idle timeout"
    else:
        limit = FALLBACK_IDLE_LIMIT
        below = "below common NAT/LB idle drops (AWS NAT: 350 s); the server keeps idle sessions"
    lifetime = min(_MAX_LIFETIME, limit)
    build = _BUILDERS[driver]
    return build(timeout, limit, lifetime, below, backend)


_Builder = Callable[[float | None, float, float, str, str | None], PoolSettings]


def _psycopg_pool(
    timeout: float | None, limit: float, lifetime: float, below: str, backend: str | None
) -> PoolSettings:
    check = Code(
        "ConnectionPool.check_connection",
        ("from psycopg_pool import ConnectionPool",),
        _psycopg_check,
    )
    return PoolSettings(
        driver="psycopg_pool",
        server_idle_timeout=timeout,
        idle_limit=limit,
        settings=(
            Setting(
                name="check",
                value=check,
                reason="test each connection on checkout: the default check=None hands out "
                "dead ones (psycopg_pool >= 3.2)",
            ),
            Setting(
                name="max_idle",
                value=limit,
                reason=f"close connections idle longer than this (above min_size), {below}",
            ),
            Setting(
                name="max_lifetime",
                value=lifetime,
                reason="replace every connection after this many seconds",
            ),
            Setting(
                name="kwargs",
                value=_psycopg_keepalives(),
                reason="libpq TCP keepalive: a dead peer is noticed in ~90 s, NAT entries stay",
            ),
        ),
        _imports=("from psycopg_pool import ConnectionPool",),
        _call="ConnectionPool",
        _variable="pool",
        _tail=("open=False,  # open with `with pool:` or pool.open()",),
    )


def _psycopg_check() -> object:
    from psycopg_pool import ConnectionPool

    return ConnectionPool.check_connection


def _asyncpg(
    timeout: float | None, limit: float, lifetime: float, below: str, backend: str | None
) -> PoolSettings:
    return PoolSettings(
        driver="asyncpg",
        server_idle_timeout=timeout,
        idle_limit=limit,
        settings=(
            Setting(
                name="max_inactive_connection_lifetime",
                value=limit,
                reason=f"close connections idle longer than this, {below}",
            ),
            Setting(
                name="server_settings",
                value=_server_keepalives(),
                reason="asyncpg has no client-side keepalive option: the server probes this "
                "session instead, so NAT entries stay and a dead peer is noticed in ~90 s",
            ),
        ),
        notes=(
            "asyncpg has no check on checkout: run units of work through resetguard.db so a "
            "dead connection is replaced before anything is sent.",
        ),
        _imports=("import asyncpg",),
        _call="asyncpg.create_pool",
        _variable="pool",
        _async=True,
    )


def _sqlalchemy(
    timeout: float | None, limit: float, lifetime: float, below: str, backend: str | None
) -> PoolSettings:
    settings = [
        Setting(
            name="pool_pre_ping",
            value=True,
            reason="test each connection on checkout (without it dead ones are handed out)",
        ),
        Setting(
            name="pool_recycle",
            value=limit,
            reason=f"replace connections older than this, {below}",
        ),
    ]
    if backend == "postgresql":
        settings.append(
            Setting(
                name="connect_args",
                value=_psycopg_keepalives(),
                reason="libpq TCP keepalive: a dead peer is noticed in ~90 s, NAT entries stay",
            )
        )
    notes: tuple[str, ...] = ()
    if backend == "mysql":
        notes = (
            "PyMySQL turns SO_KEEPALIVE on with the host's keepalive timing (it has no "
            "per-socket option): lower the host default if idle flows are dropped.",
        )
    return PoolSettings(
        driver="sqlalchemy",
        server_idle_timeout=timeout,
        idle_limit=limit,
        settings=tuple(settings),
        notes=notes,
        _imports=("from sqlalchemy import create_engine",),
        _call="create_engine",
        _variable="engine",
    )


#: PyMySQL's and aiomysql's connect timeout (the same keyword in both).
_MYSQL_CONNECT_TIMEOUT = Setting(
    name="connect_timeout",
    value=_CONNECT_TIMEOUT,
    reason="fail a dead host in 10 s instead of the OS's minutes of SYN retries",
)


def _pymysql(
    timeout: float | None, limit: float, lifetime: float, below: str, backend: str | None
) -> PoolSettings:
    return PoolSettings(
        driver="pymysql",
        server_idle_timeout=timeout,
        idle_limit=limit,
        settings=(_MYSQL_CONNECT_TIMEOUT,),
        notes=(
            f"PyMySQL has no pool: discard a connection idle longer than {_num(limit)} s "
            f"({below}); PyMySQL turns SO_KEEPALIVE on itself.",
        ),
        _imports=("import pymysql",),
        _call="pymysql.connect",
        _variable="conn",
    )


def _aiomysql(
    timeout: float | None, limit: float, lifetime: float, below: str, backend: str | None
) -> PoolSettings:
    return PoolSettings(
        driver="aiomysql",
        server_idle_timeout=timeout,
        idle_limit=limit,
        settings=(
            Setting(
                name="pool_recycle",
                value=limit,
                reason=f"close connections unused longer than this on acquire, {below}",
            ),
            _MYSQL_CONNECT_TIMEOUT,
        ),
        notes=("aiomysql turns SO_KEEPALIVE on itself.",),
        _imports=("import aiomysql",),
        _call="aiomysql.create_pool",
        _variable="pool",
        _async=True,
    )


def _redis(
    timeout: float | None, limit: float, lifetime: float, below: str, backend: str | None
) -> PoolSettings:
    health = limit if timeout is not None else _REDIS_FALLBACK_HEALTH
    if timeout is not None:
        why = f"PING a connection idle longer than this before using it, {below}"
    else:
        why = (
            "PING a connection idle longer than this before using it: the server keeps idle "
            "connections, NAT/LB hops may not"
        )
    options = _KeepaliveMap(_keepalive_options_redis())
    no_retry = Code(
        "Retry(NoBackoff(), 0)",
        ("from redis.backoff import NoBackoff", "from redis.retry import Retry"),
        _redis_no_retry,
    )
    return PoolSettings(
        driver="redis",
        server_idle_timeout=timeout,
        idle_limit=health,
        settings=(
            Setting(name="health_check_interval", value=health, reason=why),
            Setting(
                name="socket_keepalive",
                value=True,
                reason="TCP keepalive: a dead peer is noticed, NAT entries stay",
            ),
            Setting(
                name="socket_keepalive_options",
                value=options,
                reason="first probe after 60 s idle, then every 10 s, 3 probes (Linux names)",
            ),
            Setting(
                name="retry",
                value=no_retry,
                reason="redis-py 8 re-sends any command after a fault (an INCR ran twice); "
                "resetguard.db.redis_client retries only safe ones",
            ),
        ),
        _imports=("import redis",),
        _call="redis.Redis.from_url",
        _variable="client",
    )


def _redis_no_retry() -> object:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def _pymongo(
    timeout: float | None, limit: float, lifetime: float, below: str, backend: str | None
) -> PoolSettings:
    return PoolSettings(
        driver="pymongo",
        server_idle_timeout=timeout,
        idle_limit=limit,
        settings=(
            Setting(
                name="maxIdleTimeMS",
                value=int(limit * 1000),
                reason=f"close connections idle longer than this (ms), {below}",
            ),
            Setting(
                name="retryReads",
                value=True,
                reason="pymongo re-runs a read once on a fresh connection after a network error",
            ),
            Setting(
                name="retryWrites",
                value=True,
                reason="replica sets: a write carries a transaction number, so the server "
                "applies it once even when pymongo sends it twice",
            ),
            Setting(
                name="connectTimeoutMS",
                value=_CONNECT_TIMEOUT * 1000,
                reason="fail a dead host in 10 s instead of pymongo's 20 s default",
            ),
        ),
        notes=(
            "pymongo turns SO_KEEPALIVE on and caps its idle time at 120 s itself, and checks "
            "a connection idle for over 1 s before reusing it.",
        ),
        _imports=("from pymongo import MongoClient",),
        _call="MongoClient",
        _variable="client",
    )


_BUILDERS: Mapping[str, _Builder] = {
    "aiomysql": _aiomysql,
    "asyncpg": _asyncpg,
    "psycopg_pool": _psycopg_pool,
    "pymongo": _pymongo,
    "pymysql": _pymysql,
    "redis": _redis,
    "sqlalchemy": _sqlalchemy,
}
