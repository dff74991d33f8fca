"""Units of work and single statements on the retry engine.

Each attempt takes a connection from the pool, opens a transaction (BEGIN, or the unit's
first statement where the driver starts one implicitly) and runs the unit, declares its
point of no return (``a.sent()``) and sends COMMIT. With a key, the key's INSERT travels
with COMMIT past that point (one message on PostgreSQL and on MySQL with multi-statements,
one compound statement on MariaDB), else it is sent just before it. On a failure it discards
the connection when the failure is a connection fault (never back to the pool), rolls back
otherwise, and re-raises: the engine decides to rerun, resolve (the key check below) or
surface the unknown outcome. There is no loop, sleep or give-up here.
"""

from __future__ import annotations

import dataclasses
import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import CircuitBreaker, Resolution, Retry, RetryBudget, classify
from .._events import ConnectionEvent, emit, hooks_active
from . import _pools
from ._keys import (
    DEFAULT_KEY_TABLE,
    check_key,
    check_older_than,
    check_table,
    decode_result,
    encode_result,
    is_duplicate_key,
)
from ._pools import AsyncOps, AsyncSource, Params, SyncOps, SyncSource

__all__ = [
    "aensure_key_table",
    "aexecute",
    "apurge_keys",
    "atransaction",
    "ensure_key_table",
    "execute",
    "purge_keys",
    "transaction",
]

R = TypeVar("R")

# Not declared idempotent (None): a fault before COMMIT was sent reruns the unit, a fault
# while COMMIT is in flight is resolved by the key or surfaced as an unknown outcome.
_TRANSACTION = Retry(name="db.transaction", idempotent=None)
_READ = Retry(name="db.read", idempotent=True)
_WRITE = Retry(name="db.write", idempotent=False)


class _Defaults:
    """The default policies of one pool: its own retry budget and circuit breaker
    (DESIGN 3.3), so a database outage is not multiplied by reruns and, once the breaker
    opens, calls fail at once with CircuitOpen instead of each waiting for its attempts."""

    __slots__ = ("read", "transaction", "write")

    def __init__(self, pool: object) -> None:
        # named after the pool's class (a connect function: the function); never its DSN
        named = pool if inspect.isfunction(pool) else type(pool)
        label = f"db:{named.__module__.split('.')[0]}.{named.__qualname__}"
        budget, breaker = RetryBudget(label), CircuitBreaker(label)
        self.transaction = dataclasses.replace(_TRANSACTION, budget=budget, breaker=breaker)
        self.read = dataclasses.replace(_READ, budget=budget, breaker=breaker)
        self.write = dataclasses.replace(_WRITE, budget=budget, breaker=breaker)


_defaults: weakref.WeakKeyDictionary[Any, _Defaults] = weakref.WeakKeyDictionary()


def _defaults_for(pool: object) -> _Defaults | None:
    try:
        found = _defaults.get(pool)
        if found is None:
            found = _defaults.setdefault(pool, _Defaults(pool))
        return found
    except TypeError:  # not weak-referenceable: the shared defaults, without guards
        return None


def _transaction_policy(pool: object, policy: Retry | None) -> Retry:
    if policy is not None:
        return policy
    defaults = _defaults_for(pool)
    return _TRANSACTION if defaults is None else defaults.transaction


def _statement_policy(pool: object, policy: Retry | None, readonly: bool) -> Retry:
    if policy is not None:
        return policy
    defaults = _defaults_for(pool)
    if defaults is None:
        return _READ if readonly else _WRITE
    return defaults.read if readonly else defaults.write


# Pools whose key table this process already created (CREATE TABLE IF NOT EXISTS once).
_ensured: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_ensured_ids: dict[int, set[str]] = {}


def _ensured_for(pool: object) -> set[str]:
    try:
        return _ensured.setdefault(pool, set())
    except TypeError:  # not weak-referenceable (e.g. a bound method factory)
        return _ensured_ids.setdefault(id(pool), set())


def _key_check_policy(policy: Retry) -> Retry:
    """The policy of the key check after an unknown outcome: a read, so retried on any
    connection fault (the check's own connection may be reset too), through the engine."""
    name = f"{policy.name or 'db.transaction'}.key_check"
    # no breaker: the failed attempt already reported to it, and a half-open breaker's
    # single probe slot must not refuse the check that settles that attempt
    return dataclasses.replace(
        policy, idempotent=True, name=name, on_retry=None, on_giveup=None, breaker=None
    )


def _check_policy(policy: object) -> None:
    if policy is not None and not isinstance(policy, Retry):
        raise TypeError(f"policy must be a resetguard.Retry, got {policy!r}")


def _lost(ops: SyncOps | AsyncOps, exc: BaseException) -> bool:
    """Whether ``exc`` broke the connection (a connection fault); tells the monitor."""
    failure = classify(exc)
    if failure is None:
        return False
    if ops.reports_loss and hooks_active():
        emit(ConnectionEvent(name=ops.name, action="failed", failure=failure))
    return True


# --------------------------------------------------------------------------- sync


def _sync_release_after(source: SyncSource, ops: SyncOps, conn: Any, exc: BaseException) -> None:
    # an interrupt or a connection fault leaves the session in an unknown state: discard it
    broken = not isinstance(exc, Exception) or _lost(ops, exc)
    if not broken:
        try:
            ops.rollback(conn)
        except Exception as rollback_error:
            _lost(ops, rollback_error)
            broken = True
    source.release(conn, ops, broken=broken)


def _sync_ensure(ops: SyncOps, conn: Any, table: str, pool: object) -> None:
    done = _ensured_for(pool)
    if table in done:
        return
    sql = ops.dialect(conn).on(table)
    try:
        ops.run(conn, sql.probe, None)
        ops.end_read(conn)
    except Exception as exc:
        if classify(exc) is not None:
            raise
        ops.rollback(conn)  # no such table (yet)
        try:
            ops.run(conn, sql.create, None)
            ops.commit(conn)
        except Exception as error:
            if not is_duplicate_key(error):  # two sessions creating it at once (PostgreSQL)
                raise
            ops.rollback(conn)
    done.add(table)


def _sync_claim_and_commit(
    ops: SyncOps, conn: Any, table: str, key: str, payload: str | None, a: Any
) -> Any:
    """INSERT the key and COMMIT; the value the call returns."""
    try:
        ops.claim_and_commit(conn, table, key, payload, a)
    except Exception as exc:
        if not is_duplicate_key(exc):
            raise
        # committed before (an earlier call, or a first run that was still committing
        # when this rerun started): undo this run and return what that one stored
        ops.rollback(conn)
        stored = ops.run(conn, ops.dialect(conn).on(table).select, (key,))
        ops.end_read(conn)
        return decode_result(stored[0][0])
    return decode_result(payload)


def transaction(
    pool: object,
    unit: Callable[[Any], R],
    *,
    key: str | None = None,
    policy: Retry | None = None,
    key_table: str = DEFAULT_KEY_TABLE,
) -> R:
    """Run ``unit(conn)`` in a transaction on a pooled connection; return its result.

    A connection fault before COMMIT was sent reruns the unit on a fresh connection (the
    broken one never goes back to the pool). A fault while COMMIT is in flight is an unknown
    outcome: with ``key=`` it is resolved by checking the key on a fresh connection
    (committed: its stored result is returned; not committed: the unit runs again), with
    ``policy=Retry(idempotent=True)`` the unit is rerun, otherwise
    :class:`resetguard.OutcomeUnknown` is raised from the driver's error.

    ``pool`` is a ``psycopg_pool.ConnectionPool``, a SQLAlchemy ``Engine``, a PyMySQL
    connection (reused, reopened after a fault) or a function returning a new psycopg /
    PyMySQL connection. A keyed unit must return JSON data: its
    result is stored with the key and returned JSON-decoded, from this run or the table.

    Example::

        def transfer(conn):
            conn.execute("UPDATE acct SET bal = bal - 5 WHERE id = 1")
            conn.execute("UPDATE acct SET bal = bal + 5 WHERE id = 2")
            return "ok"

        resetguard.db.transaction(pool, transfer, key=f"transfer-{request_id}")
    """
    _check_policy(policy)
    source = _pools.sync_source(pool)
    table = check_table(key_table)
    if key is not None:
        check_key(key)

    def attempt(a: Any) -> Any:
        conn = source.acquire()
        ops = _pools.sync_ops(conn)
        try:
            if key is not None:
                _sync_ensure(ops, conn, table, pool)
            ops.begin(conn)
            result: Any = unit(conn)
            if key is None:
                a.sent()
                ops.commit(conn)
            else:
                result = _sync_claim_and_commit(ops, conn, table, key, encode_result(result), a)
        except BaseException as exc:
            _sync_release_after(source, ops, conn, exc)
            raise
        source.release(conn, ops, broken=False)
        return result

    chosen = _transaction_policy(pool, policy)
    resolve = None if key is None else _sync_resolver(source, table, key, chosen)
    result: R = chosen.run(attempt, resolve=resolve, raise_unknown=True)
    return result


def _sync_resolver(
    source: SyncSource, table: str, key: str, policy: Retry
) -> Callable[[BaseException], Any]:
    def check(a: Any) -> Any:
        conn = source.acquire()
        ops = _pools.sync_ops(conn)
        try:
            rows = ops.run(conn, ops.dialect(conn).on(table).select, (key,))
            ops.end_read(conn)
        except BaseException as error:
            _sync_release_after(source, ops, conn, error)
            raise
        source.release(conn, ops, broken=False)
        return Resolution.done(decode_result(rows[0][0])) if rows else Resolution.RERUN

    def resolve(exc: BaseException) -> Any:
        return _key_check_policy(policy).run(check)  # built only when a check is needed

    return resolve


def execute(
    pool: object,
    sql: str,
    params: Params = None,
    *,
    readonly: bool,
    policy: Retry | None = None,
) -> Any:
    """Run one statement on its own (committed at once) and return its rows, or its row
    count when it returns none.

    ``readonly=True`` statements are retried on any connection fault. Writes are retried
    only when the fault is proven to have come before the statement was sent (a refused
    connection, a connection found closed): a write is never run twice.

    Example::

        rows = resetguard.db.execute(pool, "SELECT id FROM users WHERE name = %s", ("ann",),
                                     readonly=True)
    """
    _check_policy(policy)
    if not isinstance(readonly, bool):
        raise TypeError(f"readonly must be True or False, got {readonly!r}")
    source = _pools.sync_source(pool)

    def attempt(a: Any) -> Any:
        conn = source.acquire()
        ops = _pools.sync_ops(conn)
        try:
            # no a.sent(): a lone statement is judged by the policy alone (a read is
            # idempotent; a write is retried only when the driver proves nothing was sent)
            result = ops.run(conn, sql, params)
            if readonly:
                ops.end_read(conn)
            else:
                ops.commit(conn)
        except BaseException as exc:
            _sync_release_after(source, ops, conn, exc)
            raise
        source.release(conn, ops, broken=False)
        return result

    chosen = _statement_policy(pool, policy, readonly)
    return chosen.run(attempt, raise_unknown=True)


def ensure_key_table(pool: object, *, key_table: str = DEFAULT_KEY_TABLE) -> None:
    """Create the idempotency-key table if it does not exist (a keyed unit also does this
    once per pool and table by itself).

    Example::

        resetguard.db.ensure_key_table(pool)   # CREATE TABLE IF NOT EXISTS resetguard_keys
    """
    table = check_table(key_table)
    source = _pools.sync_source(pool)
    conn = source.acquire()
    ops = _pools.sync_ops(conn)
    try:
        _ensured_for(pool).discard(table)
        _sync_ensure(ops, conn, table, pool)
    except BaseException as exc:
        _sync_release_after(source, ops, conn, exc)
        raise
    source.release(conn, ops, broken=False)


def purge_keys(pool: object, older_than: float, *, key_table: str = DEFAULT_KEY_TABLE) -> int:
    """Delete idempotency keys older than ``older_than`` seconds; return how many.

    Keep keys longer than any caller may retry the same operation (say, a week).

    Example::

        resetguard.db.purge_keys(pool, older_than=7 * 86400)
    """
    seconds = check_older_than(older_than)
    table = check_table(key_table)
    source = _pools.sync_source(pool)
    conn = source.acquire()
    ops = _pools.sync_ops(conn)
    try:
        sql = ops.dialect(conn).on(table)
        deleted = ops.run(conn, sql.purge, (sql.purge_param(seconds),))
        ops.commit(conn)
    except BaseException as exc:
        _sync_release_after(source, ops, conn, exc)
        raise
    source.release(conn, ops, broken=False)
    return int(deleted)


# --------------------------------------------------------------------------- async


async def _async_release_after(
    source: AsyncSource, ops: AsyncOps, conn: Any, exc: BaseException
) -> None:
    broken = not isinstance(exc, Exception) or _lost(ops, exc)
    if not broken:
        try:
            await ops.rollback(conn)
        except Exception as rollback_error:
            _lost(ops, rollback_error)
            broken = True
    await source.release(conn, ops, broken=broken)


async def _async_ensure(ops: AsyncOps, conn: Any, table: str, pool: object) -> None:
    done = _ensured_for(pool)
    if table in done:
        return
    sql = ops.dialect(conn).on(table)
    try:
        await ops.run(conn, sql.probe, None)
        await ops.end_read(conn)
    except Exception as exc:
        if classify(exc) is not None:
            raise
        await ops.rollback(conn)  # no such table (yet)
        try:
            await ops.run(conn, sql.create, None)
            await ops.end_write(conn)
        except Exception as error:
            if not is_duplicate_key(error):
                raise
            await ops.rollback(conn)
    done.add(table)


async def _async_claim_and_commit(
    ops: AsyncOps, conn: Any, table: str, key: str, payload: str | None, a: Any
) -> Any:
    try:
        await ops.claim_and_commit(conn, table, key, payload, a)
    except Exception as exc:
        if not is_duplicate_key(exc):
            raise
        await ops.rollback(conn)
        stored = await ops.run(conn, ops.dialect(conn).on(table).select, (key,))
        await ops.end_read(conn)
        return decode_result(stored[0][0])
    return decode_result(payload)


async def atransaction(
    pool: object,
    unit: Callable[[Any], Awaitable[R]],
    *,
    key: str | None = None,
    policy: Retry | None = None,
    key_table: str = DEFAULT_KEY_TABLE,
) -> R:
    """The asyncio form of :func:`transaction`: ``await unit(conn)`` in a transaction.

    ``pool`` is a ``psycopg_pool.AsyncConnectionPool``, an asyncpg or aiomysql pool, a
    SQLAlchemy ``AsyncEngine`` or a function returning a new async connection.

    Example::

        async def add(conn):
            await conn.execute("INSERT INTO t(v) VALUES ($1)", 1)

        await resetguard.db.atransaction(asyncpg_pool, add, key="add-1")
    """
    _check_policy(policy)
    source = _pools.async_source(pool)
    table = check_table(key_table)
    if key is not None:
        check_key(key)

    async def attempt(a: Any) -> Any:
        conn = await source.acquire()
        ops = _pools.async_ops(conn)
        try:
            if key is not None:
                await _async_ensure(ops, conn, table, pool)
            await ops.begin(conn)
            result: Any = await unit(conn)
            if key is None:
                a.sent()
                await ops.commit(conn)
            else:
                result = await _async_claim_and_commit(
                    ops, conn, table, key, encode_result(result), a
                )
        except BaseException as exc:
            await _async_release_after(source, ops, conn, exc)
            raise
        await source.release(conn, ops, broken=False)
        return result

    chosen = _transaction_policy(pool, policy)
    resolve = None if key is None else _async_resolver(source, table, key, chosen)
    return await chosen.arun(attempt, resolve=resolve, raise_unknown=True)


def _async_resolver(
    source: AsyncSource, table: str, key: str, policy: Retry
) -> Callable[[BaseException], Awaitable[Any]]:
    async def check(a: Any) -> Any:
        conn = await source.acquire()
        ops = _pools.async_ops(conn)
        try:
            rows = await ops.run(conn, ops.dialect(conn).on(table).select, (key,))
            await ops.end_read(conn)
        except BaseException as error:
            await _async_release_after(source, ops, conn, error)
            raise
        await source.release(conn, ops, broken=False)
        return Resolution.done(decode_result(rows[0][0])) if rows else Resolution.RERUN

    async def resolve(exc: BaseException) -> Any:
        return await _key_check_policy(policy).arun(check)  # built only when needed

    return resolve


async def aexecute(
    pool: object,
    sql: str,
    params: Params = None,
    *,
    readonly: bool,
    policy: Retry | None = None,
) -> Any:
    """The asyncio form of :func:`execute` (asyncpg returns its records for any statement).

    Example::

        rows = await resetguard.db.aexecute(pool, "SELECT 1", readonly=True)
    """
    _check_policy(policy)
    if not isinstance(readonly, bool):
        raise TypeError(f"readonly must be True or False, got {readonly!r}")
    source = _pools.async_source(pool)

    async def attempt(a: Any) -> Any:
        conn = await source.acquire()
        ops = _pools.async_ops(conn)
        try:
            result = await ops.run(conn, sql, params)
            if readonly:
                await ops.end_read(conn)
            else:
                await ops.end_write(conn)
        except BaseException as exc:
            await _async_release_after(source, ops, conn, exc)
            raise
        await source.release(conn, ops, broken=False)
        return result

    chosen = _statement_policy(pool, policy, readonly)
    return await chosen.arun(attempt, raise_unknown=True)


async def aensure_key_table(pool: object, *, key_table: str = DEFAULT_KEY_TABLE) -> None:
    """The asyncio form of :func:`ensure_key_table`.

    Example::

        await resetguard.db.aensure_key_table(pool)
    """
    table = check_table(key_table)
    source = _pools.async_source(pool)
    conn = await source.acquire()
    ops = _pools.async_ops(conn)
    try:
        _ensured_for(pool).discard(table)
        await _async_ensure(ops, conn, table, pool)
    except BaseException as exc:
        await _async_release_after(source, ops, conn, exc)
        raise
    await source.release(conn, ops, broken=False)


async def apurge_keys(
    pool: object, older_than: float, *, key_table: str = DEFAULT_KEY_TABLE
) -> int:
    """The asyncio form of :func:`purge_keys`.

    Example::

        await resetguard.db.apurge_keys(pool, older_than=86400)
    """
    seconds = check_older_than(older_than)
    table = check_table(key_table)
    source = _pools.async_source(pool)
    conn = await source.acquire()
    ops = _pools.async_ops(conn)
    try:
        sql = ops.dialect(conn).on(table)
        deleted = await ops.run_count(conn, sql.purge, (sql.purge_param(seconds),))
        await ops.end_write(conn)
    except BaseException as exc:
        await _async_release_after(source, ops, conn, exc)
        raise
    await source.release(conn, ops, broken=False)
    return deleted
