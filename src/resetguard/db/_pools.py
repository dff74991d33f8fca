"""What resetguard needs from each driver and pool, recognised by module and class name.

Two small parts per driver, neither imports its library at module level:

* a **source** hands out a connection and takes it back. ``release(conn, broken=True)``
  makes sure a broken connection never goes back to the pool: psycopg_pool gets it back
  closed (and replaces it), asyncpg's pool gets it terminated, aiomysql's pool closed,
  SQLAlchemy's pool invalidated. A plain connect factory's connection is always closed.
* the **ops** of a connection class: BEGIN, COMMIT, ROLLBACK, one statement, and the
  dialect of the key table's SQL.

Nothing here decides about retrying: the engine does.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .._classify import Kind, classify
from .._events import ConnectionEvent, emit, hooks_active
from ._keys import (
    MYSQL_FORMAT,
    MYSQL_NAMED,
    PG_FORMAT,
    PG_NAMED,
    PG_NUMERIC,
    Dialect,
    mariadb_claim_and_commit,
    mysql_claim_and_commit,
    pg_claim_and_commit,
)

_MULTI_STATEMENTS = 1 << 16  # MySQL's CLIENT_MULTI_STATEMENTS capability flag
# MySQL's SERVER_STATUS_IN_TRANS | SERVER_STATUS_AUTOCOMMIT, as the last reply reported them
_IN_TRANS_OR_AUTOCOMMIT = 0x1 | 0x2

__all__ = [
    "AsyncOps",
    "AsyncSource",
    "SyncOps",
    "SyncSource",
    "async_source",
    "sync_source",
    "watch_engine",
]

Params = Sequence[Any] | Mapping[str, Any] | None


def _kind(obj: object) -> tuple[str, str]:
    cls = type(obj)
    return cls.__module__.split(".", 1)[0], cls.__name__


# --------------------------------------------------------------------------- sync ops


class SyncOps:
    """Transaction steps on one connection class (psycopg ``Connection``)."""

    name = "psycopg"
    reports_loss = True  # False: the library's own events report a lost connection

    def dialect(self, conn: Any) -> Dialect:
        return PG_FORMAT

    def begin(self, conn: Any) -> None:
        if conn.autocommit:  # otherwise psycopg opens the transaction with the first statement
            conn.execute("BEGIN")

    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def run(self, conn: Any, sql: str, params: Params) -> Any:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description is not None else cur.rowcount

    def discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()

    def end_read(self, conn: Any) -> None:
        """End the transaction a lone read opened (the drivers here start one implicitly)."""
        self.rollback(conn)

    def claim_and_commit(
        self, conn: Any, table: str, key: str, payload: str | None, a: Any
    ) -> None:
        """INSERT the key and COMMIT, calling ``a.sent()`` before COMMIT can leave.

        psycopg sends both in one simple-protocol message (no parameters): the key costs
        no extra round trip."""
        a.sent()
        conn.execute(pg_claim_and_commit(table, key, payload))

    def _claim_then_commit(
        self, conn: Any, table: str, key: str, payload: str | None, a: Any
    ) -> None:
        self.run(conn, self.dialect(conn).on(table).insert, (key, payload))
        a.sent()
        self.commit(conn)


# --------------------------------------------------------------------------- MySQL / MariaDB

_MARIADB_VERSION = re.compile(r"(\d+)\.(\d+)\.\d+-MariaDB")


@functools.lru_cache(maxsize=32)
def _has_compound_statements(server_version: str) -> bool:
    """Whether the server runs ``BEGIN NOT ATOMIC ... END`` outside stored programs:
    MariaDB 10.1 and later (MySQL does not)."""
    found = _MARIADB_VERSION.search(server_version)
    return found is not None and (int(found[1]), int(found[2])) >= (10, 1)


def mysql_claim(conn: Any) -> Callable[[str, str, str], str] | None:
    """How a PyMySQL / aiomysql connection sends the key INSERT with COMMIT: the function
    building that one statement, or None for two round trips (the INSERT, then COMMIT).

    * MariaDB 10.1 and later (told by the version the server reported at connect): one
      compound statement, ``BEGIN NOT ATOMIC INSERT ...; COMMIT; END``;
    * MySQL, when the connection allows multi-statements: ``INSERT ...; COMMIT``;
    * MySQL otherwise: two round trips.
    """
    version = conn.server_version
    if isinstance(version, str) and _has_compound_statements(version):
        return mariadb_claim_and_commit
    return mysql_claim_and_commit if conn.client_flag & _MULTI_STATEMENTS else None


def mysql_needs_begin(conn: Any) -> bool:
    """Whether a unit must open its transaction with a statement: only in autocommit mode,
    or to end a transaction left open (the implicit commit BEGIN always did). With
    autocommit off (the drivers' default) the unit's first statement opens it, and a BEGIN
    would cost one more round trip."""
    return bool(conn.server_status & _IN_TRANS_OR_AUTOCOMMIT)


# START TRANSACTION, not BEGIN: under sql_mode=ORACLE MariaDB reads BEGIN as a block
_START = "START TRANSACTION"


class _PyMySQLOps(SyncOps):
    name = "pymysql"

    def claim_and_commit(
        self, conn: Any, table: str, key: str, payload: str | None, a: Any
    ) -> None:
        """One statement on MariaDB, one message on MySQL with multi-statements (PyMySQL's
        ``client_flag=CLIENT.MULTI_STATEMENTS``), else the INSERT, then COMMIT
        (:func:`mysql_claim`). The one statement counts as COMMIT in flight from the moment
        it is sent."""
        build = mysql_claim(conn)
        if build is None:
            self._claim_then_commit(conn, table, key, payload, a)
            return
        sql = build(table, conn.escape(key), conn.escape(payload))
        a.sent()
        with conn.cursor() as cur:
            cur.execute(sql)
            # MySQL's two statements: read COMMIT's answer too, that is the commit confirmed
            for _ in range(2):
                if not cur.nextset():
                    break

    def dialect(self, conn: Any) -> Dialect:
        return MYSQL_FORMAT

    def begin(self, conn: Any) -> None:
        if mysql_needs_begin(conn):
            conn.query(_START)

    def run(self, conn: Any, sql: str, params: Params) -> Any:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description is not None else cur.rowcount


class _SqlAlchemyOps(SyncOps):
    name = "sqlalchemy"
    reports_loss = False  # watch_engine's handle_error listener does
    claim_and_commit = SyncOps._claim_then_commit

    def dialect(self, conn: Any) -> Dialect:
        return PG_NAMED if conn.dialect.name == "postgresql" else MYSQL_NAMED

    def begin(self, conn: Any) -> None:
        conn.begin()

    def run(self, conn: Any, sql: str, params: Params) -> Any:
        from sqlalchemy import text

        result = conn.execute(text(sql), _named(params))
        return list(result.fetchall()) if result.returns_rows else result.rowcount

    def discard(self, conn: Any) -> None:
        # invalidate(): SQLAlchemy's own way to keep a connection out of its pool
        with contextlib.suppress(Exception):
            conn.invalidate()
        with contextlib.suppress(Exception):
            conn.close()


def _named(params: Params) -> Mapping[str, Any]:
    if params is None:
        return {}
    if isinstance(params, Mapping):
        return params
    return {f"p{i}": value for i, value in enumerate(params)}


_SYNC_OPS: dict[tuple[str, str], SyncOps] = {
    ("psycopg", "Connection"): SyncOps(),
    ("pymysql", "Connection"): _PyMySQLOps(),
    ("sqlalchemy", "Connection"): _SqlAlchemyOps(),
}


# The ops found for each connection class, so a unit does not look them up by name again.
_SYNC_BY_CLASS: dict[type, SyncOps] = {}


def _unsupported(conn: object, is_async: bool) -> TypeError:
    what, supported = (
        (
            "async connections",
            "psycopg.AsyncConnection, asyncpg Connection, aiomysql"
            " Connection, sqlalchemy AsyncConnection",
        )
        if is_async
        else ("connections", "psycopg.Connection, pymysql.Connection, sqlalchemy Connection")
    )
    cls = type(conn)
    return TypeError(
        f"resetguard.db does not know {what} of type {cls.__module__}.{cls.__qualname__};"
        f" supported: {supported}"
    )


def sync_ops(conn: object) -> SyncOps:
    """The ops for ``conn``'s class (raises TypeError naming an unsupported class)."""
    ops = _SYNC_BY_CLASS.get(type(conn))
    if ops is None:
        ops = _SYNC_OPS.get(_kind(conn))
        if ops is None:
            raise _unsupported(conn, False)
        _SYNC_BY_CLASS[type(conn)] = ops
    return ops


# --------------------------------------------------------------------------- sync sources


class SyncSource:
    """A connect factory: a new connection per unit, always closed afterwards."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def acquire(self) -> Any:
        return self.target()

    def release(self, conn: Any, ops: SyncOps, *, broken: bool) -> None:
        ops.discard(conn)


class _PsycopgPoolSource(SyncSource):
    def acquire(self) -> Any:
        return self.target.getconn()

    def release(self, conn: Any, ops: SyncOps, *, broken: bool) -> None:
        if broken:
            ops.discard(conn)  # psycopg_pool discards a closed connection and opens another
        self.target.putconn(conn)


class _PyMySQLConnectionSource(SyncSource):
    """One PyMySQL connection, reused: a broken one is closed, and reconnected (PyMySQL's
    own ``connect()``) when the next attempt takes it."""

    def acquire(self) -> Any:
        conn = self.target
        if not conn.open:
            conn.connect()
        return conn

    def release(self, conn: Any, ops: SyncOps, *, broken: bool) -> None:
        if broken:
            ops.discard(conn)


# Faults after which a connection cannot be used again.
_BROKEN = frozenset({Kind.RESET, Kind.BROKEN_PIPE, Kind.ABORTED, Kind.CLOSED})
_watched: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_engine(engine: Any) -> None:
    """Listen to a SQLAlchemy engine's ``handle_error`` event (once per engine).

    A connection fault resetguard recognises is marked a disconnect, so SQLAlchemy
    invalidates the connection instead of returning it to its pool, and the monitor gets a
    ``ConnectionEvent(name="sqlalchemy", action="failed")`` with the driver's code: for every
    statement on the engine, not only inside resetguard's units.
    """
    sync_engine = getattr(engine, "sync_engine", engine)  # an AsyncEngine's events live there
    if sync_engine in _watched:
        return
    from sqlalchemy import event

    if not event.contains(sync_engine, "handle_error", _on_sqlalchemy_error):
        event.listen(sync_engine, "handle_error", _on_sqlalchemy_error)
    _watched.add(sync_engine)


def _on_sqlalchemy_error(context: Any) -> None:
    failure = classify(context.original_exception)
    if failure is None and context.sqlalchemy_exception is not None:
        # asyncpg under SQLAlchemy: its adapter class hides the driver's error
        failure = classify(context.sqlalchemy_exception)
    if failure is None:
        return
    if failure.kind in _BROKEN and not context.is_disconnect:
        context.is_disconnect = True
    if hooks_active():
        emit(ConnectionEvent(name="sqlalchemy", action="failed", failure=failure))


class _SqlAlchemyEngineSource(SyncSource):
    def __init__(self, target: Any) -> None:
        SyncSource.__init__(self, target)
        watch_engine(target)

    def acquire(self) -> Any:
        return self.target.connect()

    def release(self, conn: Any, ops: SyncOps, *, broken: bool) -> None:
        if broken:
            ops.discard(conn)
        else:
            conn.close()


def sync_source(pool: object) -> SyncSource:
    """Recognise ``pool``: a psycopg_pool pool, a SQLAlchemy Engine, a PyMySQL connection
    or a connect factory."""
    module, name = _kind(pool)
    if module == "psycopg_pool" and name in ("ConnectionPool", "NullConnectionPool"):
        return _PsycopgPoolSource(pool)
    if module == "sqlalchemy" and name == "Engine":
        return _SqlAlchemyEngineSource(pool)
    if module == "pymysql" and name == "Connection":
        return _PyMySQLConnectionSource(pool)
    if module in ("psycopg_pool", "asyncpg", "aiomysql") or (
        module == "sqlalchemy" and name == "AsyncEngine"
    ):
        raise TypeError(f"{module}.{name} is asynchronous: use resetguard.db.atransaction/aexecute")
    if callable(pool):
        return SyncSource(pool)
    raise TypeError(
        "pool must be a psycopg_pool.ConnectionPool, a SQLAlchemy Engine, a PyMySQL"
        f" connection or a function returning a new psycopg / PyMySQL connection; got {pool!r}"
    )


# --------------------------------------------------------------------------- async ops


class AsyncOps:
    """Transaction steps on one async connection class (psycopg ``AsyncConnection``)."""

    name = "psycopg"
    reports_loss = True

    def dialect(self, conn: Any) -> Dialect:
        return PG_FORMAT

    async def begin(self, conn: Any) -> None:
        if conn.autocommit:
            await conn.execute("BEGIN")

    async def commit(self, conn: Any) -> None:
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

    async def run(self, conn: Any, sql: str, params: Params) -> Any:
        cur = await conn.execute(sql, params)
        return await cur.fetchall() if cur.description is not None else cur.rowcount

    async def discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.close()

    async def run_count(self, conn: Any, sql: str, params: Params) -> int:
        """Run a statement that returns no rows; its row count."""
        return int(await self.run(conn, sql, params))

    async def end_read(self, conn: Any) -> None:
        """End the transaction a lone read opened (psycopg and aiomysql start one)."""
        await self.rollback(conn)

    async def end_write(self, conn: Any) -> None:
        """Commit a lone statement."""
        await self.commit(conn)

    async def claim_and_commit(
        self, conn: Any, table: str, key: str, payload: str | None, a: Any
    ) -> None:
        """INSERT the key and COMMIT in one message (see :meth:`SyncOps.claim_and_commit`)."""
        a.sent()
        await conn.execute(pg_claim_and_commit(table, key, payload))

    async def _claim_then_commit(
        self, conn: Any, table: str, key: str, payload: str | None, a: Any
    ) -> None:
        await self.run(conn, self.dialect(conn).on(table).insert, (key, payload))
        a.sent()
        await self.commit(conn)


class _AsyncpgOps(AsyncOps):
    name = "asyncpg"

    def dialect(self, conn: Any) -> Dialect:
        return PG_NUMERIC

    async def begin(self, conn: Any) -> None:
        await conn.execute("BEGIN")

    async def commit(self, conn: Any) -> None:
        await conn.execute("COMMIT")

    async def rollback(self, conn: Any) -> None:
        await conn.execute("ROLLBACK")

    async def run(self, conn: Any, sql: str, params: Params) -> Any:
        args = () if params is None else tuple(params)
        return await conn.fetch(sql, *args)

    async def discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.terminate()  # no goodbye on a broken socket; the pool replaces it

    async def run_count(self, conn: Any, sql: str, params: Params) -> int:
        args = () if params is None else tuple(params)
        status = await conn.execute(sql, *args)  # e.g. "DELETE 3"
        return int(status.rsplit(" ", 1)[-1])

    async def end_read(self, conn: Any) -> None:
        """asyncpg runs a lone statement in autocommit: nothing to end."""

    async def end_write(self, conn: Any) -> None:
        """asyncpg runs a lone statement in autocommit: nothing to commit."""


class _AiomysqlOps(AsyncOps):
    name = "aiomysql"

    async def claim_and_commit(
        self, conn: Any, table: str, key: str, payload: str | None, a: Any
    ) -> None:
        """As PyMySQL's (:func:`mysql_claim`); aiomysql turns multi-statements on always."""
        build = mysql_claim(conn)
        if build is None:
            await self._claim_then_commit(conn, table, key, payload, a)
            return
        sql = build(table, conn.escape(key), conn.escape(payload))
        a.sent()
        async with conn.cursor() as cur:
            await cur.execute(sql)
            for _ in range(2):
                if not await cur.nextset():
                    break

    def dialect(self, conn: Any) -> Dialect:
        return MYSQL_FORMAT

    async def begin(self, conn: Any) -> None:
        if mysql_needs_begin(conn):
            await conn.query(_START)

    async def run(self, conn: Any, sql: str, params: Params) -> Any:
        async with conn.cursor() as cur:
            await cur.execute(sql, params)
            return list(await cur.fetchall()) if cur.description is not None else cur.rowcount

    async def discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()  # aiomysql's close() is synchronous: it drops the transport


class _AsyncSqlAlchemyOps(AsyncOps):
    name = "sqlalchemy"
    reports_loss = False
    claim_and_commit = AsyncOps._claim_then_commit

    def dialect(self, conn: Any) -> Dialect:
        return PG_NAMED if conn.dialect.name == "postgresql" else MYSQL_NAMED

    async def begin(self, conn: Any) -> None:
        await conn.begin()

    async def run(self, conn: Any, sql: str, params: Params) -> Any:
        from sqlalchemy import text

        result = await conn.execute(text(sql), _named(params))
        return list(result.fetchall()) if result.returns_rows else result.rowcount

    async def discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.invalidate()
        with contextlib.suppress(Exception):
            await conn.close()


_ASYNC_OPS: dict[tuple[str, str], AsyncOps] = {
    ("psycopg", "AsyncConnection"): AsyncOps(),
    ("asyncpg", "Connection"): _AsyncpgOps(),
    ("asyncpg", "PoolConnectionProxy"): _AsyncpgOps(),
    ("aiomysql", "Connection"): _AiomysqlOps(),
    ("sqlalchemy", "AsyncConnection"): _AsyncSqlAlchemyOps(),
}


_ASYNC_BY_CLASS: dict[type, AsyncOps] = {}


def async_ops(conn: object) -> AsyncOps:
    """The async ops for ``conn``'s class (raises TypeError naming an unsupported class)."""
    ops = _ASYNC_BY_CLASS.get(type(conn))
    if ops is None:
        ops = _ASYNC_OPS.get(_kind(conn))
        if ops is None:
            raise _unsupported(conn, True)
        _ASYNC_BY_CLASS[type(conn)] = ops
    return ops


# --------------------------------------------------------------------------- async sources


class AsyncSource:
    """An async connect factory: a new connection per unit, always closed afterwards."""

    def __init__(self, target: Any) -> None:
        self.target = target

    async def acquire(self) -> Any:
        conn = self.target()
        return await conn if inspect.isawaitable(conn) else conn

    async def release(self, conn: Any, ops: AsyncOps, *, broken: bool) -> None:
        await ops.discard(conn)


class _AsyncPsycopgPoolSource(AsyncSource):
    async def acquire(self) -> Any:
        return await self.target.getconn()

    async def release(self, conn: Any, ops: AsyncOps, *, broken: bool) -> None:
        if broken:
            await ops.discard(conn)
        await self.target.putconn(conn)


class _AsyncpgPoolSource(AsyncSource):
    async def acquire(self) -> Any:
        return await self.target.acquire()

    async def release(self, conn: Any, ops: AsyncOps, *, broken: bool) -> None:
        if broken:
            await ops.discard(conn)
        await self.target.release(conn)


class _AiomysqlPoolSource(AsyncSource):
    async def acquire(self) -> Any:
        return await self.target.acquire()

    async def release(self, conn: Any, ops: AsyncOps, *, broken: bool) -> None:
        if broken:
            await ops.discard(conn)  # aiomysql's pool drops a closed connection on release
        done: Awaitable[Any] | None = self.target.release(conn)
        if done is not None and inspect.isawaitable(done):
            await done


class _AsyncEngineSource(AsyncSource):
    def __init__(self, target: Any) -> None:
        AsyncSource.__init__(self, target)
        watch_engine(target)

    async def acquire(self) -> Any:
        return await self.target.connect()

    async def release(self, conn: Any, ops: AsyncOps, *, broken: bool) -> None:
        if broken:
            await ops.discard(conn)
        else:
            await conn.close()


def async_source(pool: object) -> AsyncSource:
    """Recognise ``pool``: psycopg_pool's AsyncConnectionPool, an asyncpg or aiomysql pool,
    a SQLAlchemy AsyncEngine or an (async) connect factory."""
    module, name = _kind(pool)
    if module == "psycopg_pool" and name in ("AsyncConnectionPool", "AsyncNullConnectionPool"):
        return _AsyncPsycopgPoolSource(pool)
    if module == "asyncpg" and name == "Pool":
        return _AsyncpgPoolSource(pool)
    if module == "aiomysql" and name == "Pool":
        return _AiomysqlPoolSource(pool)
    if module == "sqlalchemy" and name == "AsyncEngine":
        return _AsyncEngineSource(pool)
    if module in ("psycopg_pool", "sqlalchemy"):
        raise TypeError(f"{module}.{name} is synchronous: use resetguard.db.transaction/execute")
    if callable(pool):
        return AsyncSource(pool)
    raise TypeError(
        "pool must be a psycopg_pool.AsyncConnectionPool, an asyncpg or aiomysql pool, a"
        " SQLAlchemy AsyncEngine or a function returning a new async connection;"
        f" got {pool!r}"
    )
