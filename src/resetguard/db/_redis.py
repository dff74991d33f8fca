"""redis-py clients whose retries never run a write twice.

redis-py 8 retries every command by default (10 retries on ``ConnectionError`` /
``TimeoutError``), so an ``INCR`` whose reply was lost runs again on a new connection: the
research ran it twice. These clients turn redis-py's own retries off and let the resetguard
engine decide, per command:

* a command in :data:`SAFE_COMMANDS` (reads: ``GET``, ``HGETALL``, ``SCAN``, ``PING`` …) is
  declared idempotent and retried after any connection fault;
* any other command (a write) is retried only when the fault came before it was written to
  the socket: connecting, the pool's checkout check, or the health-check ``PING``. The
  point of no return is marked by the connection itself, right before the command's bytes
  are written. A fault after it is an unknown outcome: never retried, surfaced with
  :func:`resetguard.outcome_unknown` true on the error.

The health check (a ``PING`` on a connection idle longer than ``health_check_interval``) is
what turns "the server closed this idle connection" into a fault *before* sending, so the
interval is set below the server's ``timeout`` (read with ``CONFIG GET timeout``).
Pipelines, transactions (``MULTI``) and pub/sub are not retried (their errors surface).
"""

from __future__ import annotations

import dataclasses
import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, cast

from .._breaker import SERVER_BREAKER, SERVER_PATIENCE, CircuitBreaker
from .._budget import RetryBudget
from .._classify import classify
from .._drivers import AttemptContext
from .._events import ConnectionEvent, emit
from .._retry import Retry
from ._settings import pool_settings

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["SAFE_COMMANDS", "async_redis_client", "is_safe_command", "redis_client"]

_log = logging.getLogger("resetguard.db")

# Commands that only read (or, like PING / ECHO, change nothing): running one twice gives the
# same effect as once. Blocking pops, GETEX / GETDEL (they write) and scripts that may write
# (EVAL, FCALL) are not here; their read-only forms (EVAL_RO, FCALL_RO, SORT_RO) are.
SAFE_COMMANDS: frozenset[str] = frozenset(
    {
        "BITCOUNT", "BITFIELD_RO", "BITPOS", "CLIENT GETNAME", "CLIENT ID", "CLIENT INFO",
        "CONFIG GET", "DBSIZE", "DUMP", "ECHO", "EVAL_RO", "EVALSHA_RO", "EXISTS",
        "EXPIRETIME", "FCALL_RO", "GEODIST", "GEOHASH", "GEOPOS", "GEOSEARCH", "GET",
        "GETBIT", "GETRANGE", "HEXISTS", "HGET", "HGETALL", "HKEYS", "HLEN", "HMGET",
        "HRANDFIELD", "HSCAN", "HSTRLEN", "HVALS", "INFO", "KEYS", "LASTSAVE", "LCS", "LINDEX",
        "LLEN", "LOLWUT", "LPOS", "LRANGE", "MEMORY USAGE", "MGET", "OBJECT ENCODING",
        "OBJECT FREQ", "OBJECT IDLETIME", "OBJECT REFCOUNT", "PEXPIRETIME", "PFCOUNT",
        "PING", "PTTL", "RANDOMKEY", "SCAN", "SCARD", "SDIFF", "SINTER", "SINTERCARD",
        "SISMEMBER", "SMEMBERS", "SMISMEMBER", "SORT_RO", "SRANDMEMBER", "SSCAN", "STRLEN",
        "SUNION", "TIME", "TTL", "TYPE", "XINFO CONSUMERS", "XINFO GROUPS", "XINFO STREAM",
        "XLEN", "XPENDING", "XRANGE", "XREVRANGE", "ZCARD", "ZCOUNT", "ZDIFF", "ZINTER",
        "ZINTERCARD", "ZLEXCOUNT", "ZMSCORE", "ZRANDMEMBER", "ZRANGE", "ZRANGEBYLEX",
        "ZRANGEBYSCORE", "ZRANK", "ZREVRANGE", "ZREVRANGEBYLEX", "ZREVRANGEBYSCORE",
        "ZREVRANK", "ZSCAN", "ZSCORE", "ZUNION",
    }
)  # fmt: skip
# Container commands whose subcommand decides (redis-py sends "CONFIG GET" as one word, a
# user's execute_command may send two).
_CONTAINERS = frozenset({"CLIENT", "CONFIG", "MEMORY", "OBJECT", "XINFO"})

# The attempt whose command the current task / thread is sending: the connection marks the
# point of no return on it right before writing the command's bytes.
_SENDING: ContextVar[AttemptContext | None] = ContextVar("resetguard_redis_sending", default=None)

#: Each client's default: 3 attempts (DESIGN 3.3), and a 10 s deadline (Redis answers in
#: well under a millisecond; a command still failing after 10 s is an outage, not a blip).
#: 5 s of patience for a server that refuses connections rides out a restart of about 2 s
#: without spending attempts, as resetguard.http does.
DEFAULT_REDIS_POLICY = Retry(name="redis", attempts=3, deadline=10.0, patience=SERVER_PATIENCE)
#: The client's breaker (one per client: one server) is resetguard's server breaker
#: (``resetguard._breaker.SERVER_BREAKER``, the same as each HTTP origin's).


def _word(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("ascii", "replace").upper()
    return str(value).upper()


def is_safe_command(*args: object) -> bool:
    """True when the command ``args`` may be run twice (it only reads).

    Example::

        >>> from resetguard.db import is_safe_command
        >>> is_safe_command("GET", "k"), is_safe_command("INCR", "k")
        (True, False)
        >>> is_safe_command("CONFIG", "GET", "timeout"), is_safe_command("CONFIG SET", "x", 1)
        (True, False)
    """
    if not args:
        return False
    first = args[0]
    if first in SAFE_COMMANDS:  # redis-py's own spelling: the hot path
        return True
    name = _word(first)
    if name in _CONTAINERS and len(args) > 1:
        name = f"{name} {_word(args[1])}"
    return name in SAFE_COMMANDS


def _mark_sent() -> None:
    attempt = _SENDING.get()
    if attempt is not None:
        attempt.sent()


def _report(conn_kwargs: dict[str, Any], args: tuple[Any, ...], exc: BaseException) -> None:
    failure = classify(exc)
    if failure is None:
        return
    host, port = conn_kwargs.get("host", ""), conn_kwargs.get("port", "")
    peer = f"{host}:{port}" if host else str(conn_kwargs.get("path", ""))
    emit(
        ConnectionEvent(
            name="redis",
            action="failed",
            peer=peer,
            failure=failure,
            reason=f"{_word(args[0]) if args else ''}: {exc}"[:200],
        )
    )


_CLASSES: dict[tuple[type, bool], Any] = {}


def _guarded_connection(base: Any) -> Any:
    """A subclass of redis-py's connection class that marks the point of no return."""
    if (base, False) in _CLASSES:
        return _CLASSES[(base, False)]

    class Guarded(base):  # type: ignore[misc]
        # The handshake (HELLO, AUTH, CLIENT SETINFO, SELECT) is sent with check_health=True
        # too: hide the attempt while connecting, so only the caller's command marks it.
        def connect(self) -> None:
            if self._sock:  # the pool calls this on every checkout: keep that path short
                return
            token = _SENDING.set(None)
            try:
                super().connect()
            finally:
                _SENDING.reset(token)

        def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
            if self._sock:
                return
            token = _SENDING.set(None)
            try:
                super().connect_check_health(*args, **kwargs)
            finally:
                _SENDING.reset(token)

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            # redis-py sends its own PING / AUTH / SELECT with check_health=False; only a
            # caller's command comes with True. Connect and check first: a fault there is
            # before sending. Then the command's bytes may reach the server.
            if not check_health:
                super().send_packed_command(command, check_health=False)
                return
            if not self._sock:
                if hasattr(self, "connect_check_health"):  # redis-py >= 6
                    self.connect_check_health(check_health=False)
                else:
                    self.connect()
            self.check_health()
            _mark_sent()
            super().send_packed_command(command, check_health=False)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    _CLASSES[(base, False)] = Guarded
    return Guarded


def _guarded_async_connection(base: Any) -> Any:
    if (base, True) in _CLASSES:
        return _CLASSES[(base, True)]

    class Guarded(base):  # type: ignore[misc]
        async def connect(self) -> None:
            if self.is_connected:  # the pool calls this on every checkout
                return
            token = _SENDING.set(None)
            try:
                await super().connect()
            finally:
                _SENDING.reset(token)

        async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
            if self.is_connected:
                return
            token = _SENDING.set(None)
            try:
                await super().connect_check_health(*args, **kwargs)
            finally:
                _SENDING.reset(token)

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            if not check_health:
                await super().send_packed_command(command, check_health=False)
                return
            if not self.is_connected:
                if hasattr(self, "connect_check_health"):
                    await self.connect_check_health(check_health=False)
                else:
                    await self.connect()
            await self.check_health()
            _mark_sent()
            await super().send_packed_command(command, check_health=False)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    _CLASSES[(base, True)] = Guarded
    return Guarded


def _client_class(asyncio: bool) -> Any:
    key = (object, asyncio)
    if key in _CLASSES:
        return _CLASSES[key]
    if asyncio:
        import redis.asyncio as aredis

        class AsyncRedis(aredis.Redis):
            """redis.asyncio.Redis whose commands run through the resetguard engine."""

            _rg_safe: Retry
            _rg_write: Retry
            _rg_raise_unknown: bool

            async def execute_command(self, *args: Any, **options: Any) -> Any:
                policy = self._rg_safe if is_safe_command(*args) else self._rg_write
                run_command = super().execute_command
                conn_kwargs = self.connection_pool.connection_kwargs

                async def attempt(a: AttemptContext) -> Any:
                    token = _SENDING.set(a)
                    try:
                        return await run_command(*args, **options)  # type: ignore[no-untyped-call]
                    except Exception as exc:
                        _report(conn_kwargs, args, exc)
                        raise
                    finally:
                        _SENDING.reset(token)

                return await policy.arun(attempt, raise_unknown=self._rg_raise_unknown)

        _CLASSES[key] = AsyncRedis
        return AsyncRedis

    import redis

    class SyncRedis(redis.Redis):
        """redis.Redis whose commands run through the resetguard engine."""

        _rg_safe: Retry
        _rg_write: Retry
        _rg_raise_unknown: bool

        def execute_command(self, *args: Any, **options: Any) -> Any:
            policy = self._rg_safe if is_safe_command(*args) else self._rg_write
            run_command = super().execute_command
            conn_kwargs = self.connection_pool.connection_kwargs

            def attempt(a: AttemptContext) -> Any:
                token = _SENDING.set(a)
                try:
                    return run_command(*args, **options)  # type: ignore[no-untyped-call]
                except Exception as exc:
                    _report(conn_kwargs, args, exc)
                    raise
                finally:
                    _SENDING.reset(token)

            return policy.run(attempt, raise_unknown=self._rg_raise_unknown)

    _CLASSES[key] = SyncRedis
    return SyncRedis


_READ: Literal["read"] = "read"


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    retry = kwargs.get("retry")
    if retry is not None and getattr(retry, "get_retries", lambda: 0)() != 0:
        raise ValueError(
            f"retry={retry!r} lets redis-py re-send commands (an INCR ran twice); "
            "resetguard retries safe commands itself: pass policy=resetguard.Retry(...)"
        )
    if kwargs.get("retry_on_timeout") or kwargs.get("retry_on_error"):
        raise ValueError(
            "retry_on_timeout / retry_on_error make redis-py re-send commands; "
            "pass policy=resetguard.Retry(...) instead"
        )


def _policies(policy: Retry | None, name: str) -> tuple[Retry, Retry]:
    base = (
        policy
        if policy is not None
        else dataclasses.replace(
            DEFAULT_REDIS_POLICY,
            name=name,
            budget=RetryBudget(name),
            breaker=CircuitBreaker.from_policy(SERVER_BREAKER, name),
        )
    )
    if not isinstance(base, Retry):
        raise TypeError(f"policy must be a resetguard.Retry, got {base!r}")
    return (
        dataclasses.replace(base, idempotent=True),
        dataclasses.replace(base, idempotent=None),
    )


def _timeout_from_config(reply: Any) -> float | None:
    raw = reply.get("timeout")
    try:
        value = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return value if value and value > 0 else None


def _settings_kwargs(server_timeout: float | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    merged = pool_settings("redis", server_idle_timeout=server_timeout).kwargs()
    merged.update(kwargs)
    return merged


def _configure(client: Any, policy: Retry | None, raise_unknown: bool, asyncio: bool) -> Any:
    pool = client.connection_pool
    make = _guarded_async_connection if asyncio else _guarded_connection
    pool.connection_class = make(pool.connection_class)
    kw = pool.connection_kwargs
    where = kw.get("path") or f"{kw.get('host', '')}:{kw.get('port', '')}"
    client._rg_safe, client._rg_write = _policies(policy, f"redis {where}")
    client._rg_raise_unknown = raise_unknown
    return client


def _read_server_timeout_sync(url: str, kwargs: dict[str, Any]) -> float | None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry as RedisRetry

    probe_kwargs = {k: v for k, v in kwargs.items() if k in _PROBE_KEYS}
    probe = redis.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=2, retry=RedisRetry(NoBackoff(), 0),
        **probe_kwargs,
    )  # fmt: skip
    try:
        return _timeout_from_config(probe.config_get("timeout"))
    except redis.RedisError as exc:  # NOPERM, CONFIG renamed, server down: use the fallback
        _log.info("redis: CONFIG GET timeout failed (%s); health checks use the fallback", exc)
        return None
    finally:
        probe.close()


async def _read_server_timeout_async(url: str, kwargs: dict[str, Any]) -> float | None:
    import redis
    import redis.asyncio as aredis
    from redis.backoff import NoBackoff
    from redis.retry import Retry as RedisRetry

    probe_kwargs = {k: v for k, v in kwargs.items() if k in _PROBE_KEYS}
    probe = aredis.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=2, retry=RedisRetry(NoBackoff(), 0),
        **probe_kwargs,
    )  # fmt: skip
    try:
        return _timeout_from_config(await probe.config_get("timeout"))
    except redis.RedisError as exc:
        _log.info("redis: CONFIG GET timeout failed (%s); health checks use the fallback", exc)
        return None
    finally:
        await probe.aclose()


# Connection keywords the CONFIG GET probe needs to log in like the client.
_PROBE_KEYS = frozenset(
    {"username", "password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
     "credential_provider", "protocol"}
)  # fmt: skip


def _check_timeout_arg(server_timeout: object) -> None:
    if server_timeout == _READ or server_timeout is None:
        return
    pool_settings("redis", server_idle_timeout=server_timeout)  # type: ignore[arg-type]


def redis_client(
    url: str,
    *,
    policy: Retry | None = None,
    server_timeout: float | Literal["read"] | None = "read",
    raise_unknown: bool = False,
    **kwargs: Any,
) -> redis.Redis:
    """A ``redis.Redis`` for ``url`` with redis-py's retries off and resetguard's on.

    Args:
        url: a redis-py URL (``redis://``, ``rediss://``, ``unix://``).
        policy: the :class:`~resetguard.Retry` for each command (default
            :data:`DEFAULT_REDIS_POLICY` with a retry budget and a :data:`SERVER_BREAKER`
            breaker of the client's own). Reads get ``idempotent=True``, other
            commands ``idempotent=None``: retried only before the point of no return.
        server_timeout: the server's idle ``timeout`` in seconds (``None`` / ``0``: none);
            ``"read"`` (default) asks the server once with ``CONFIG GET timeout`` and
            falls back to a 30 s health check when that is not allowed.
        raise_unknown: ``False`` (default) re-raises redis-py's own ``ConnectionError`` for a
            write whose outcome is unknown, with :func:`resetguard.outcome_unknown` true on
            it; ``True`` raises :class:`resetguard.OutcomeUnknown` from it.
        kwargs: passed to ``redis.Redis.from_url`` after :func:`pool_settings`' values
            (``health_check_interval``, TCP keepalive, ``retry=Retry(NoBackoff(), 0)``).

    Example::

        from resetguard.db import redis_client

        client = redis_client("redis://127.0.0.1:6379/0")
        client.incr("rg:doc:visits")  # never applied twice
        client.delete("rg:doc:visits")
        client.close()
    """
    _check_kwargs(kwargs)
    _check_timeout_arg(server_timeout)
    timeout = _read_server_timeout_sync(url, kwargs) if server_timeout == _READ else server_timeout
    cls = _client_class(asyncio=False)
    client = cls.from_url(url, **_settings_kwargs(timeout, kwargs))
    return cast("redis.Redis", _configure(client, policy, raise_unknown, asyncio=False))


async def async_redis_client(
    url: str,
    *,
    policy: Retry | None = None,
    server_timeout: float | Literal["read"] | None = "read",
    raise_unknown: bool = False,
    **kwargs: Any,
) -> redis.asyncio.Redis:
    """The asyncio form of :func:`redis_client` (a ``redis.asyncio.Redis``); awaitable
    because reading the server's ``timeout`` is a round trip.

    Example::

        import asyncio
        from resetguard.db import async_redis_client

        async def main() -> None:
            client = await async_redis_client("redis://127.0.0.1:6379/0")
            await client.incr("rg:doc:avisits")
            await client.delete("rg:doc:avisits")
            await client.aclose()

        asyncio.run(main())
    """
    _check_kwargs(kwargs)
    _check_timeout_arg(server_timeout)
    if server_timeout == _READ:
        timeout = await _read_server_timeout_async(url, kwargs)
    else:
        timeout = server_timeout
    cls = _client_class(asyncio=True)
    client = cls.from_url(url, **_settings_kwargs(timeout, kwargs))
    return cast("redis.asyncio.Redis", _configure(client, policy, raise_unknown, asyncio=True))
