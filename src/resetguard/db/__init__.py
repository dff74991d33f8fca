"""Databases that survive resets without losing or duplicating a write.

SQL: a unit of work runs in a transaction on a pooled connection (:func:`transaction`,
:func:`atransaction`). A connection fault before COMMIT was sent reruns it on a fresh
connection; a fault while COMMIT is in flight is resolved by an idempotency key (or
surfaced as :class:`resetguard.OutcomeUnknown`). Drivers: psycopg 3 (+ psycopg_pool),
asyncpg, PyMySQL, aiomysql and SQLAlchemy engines, recognised by their module and class
names. Single statements: :func:`execute`, :func:`aexecute`.

Redis clients that retry only what is safe (:func:`redis_client`,
:func:`async_redis_client`), pymongo options and monitoring listeners
(:func:`mongo_client_options`, :func:`mongo_listeners`), and pool settings as data
(:func:`pool_settings`). Importing this package imports no driver: each is loaded on
first use.

Example::

    import resetguard.db

    def pay(conn):
        conn.execute("INSERT INTO payments(order_id, cents) VALUES (%s, %s)", (42, 999))
        conn.execute("UPDATE orders SET paid = true WHERE id = %s", (42,))
        return "paid"

    resetguard.db.transaction(pool, pay, key="pay-order-42")   # exactly once

    print(resetguard.db.pool_settings("sqlalchemy", server_idle_timeout=28800)
          .render("mysql+pymysql://u@h/db"))

See docs/databases.md, docs/redis.md and docs/mongodb.md.
"""

from __future__ import annotations

from .._breaker import SERVER_BREAKER
from ._keys import DEFAULT_KEY_TABLE, MAX_KEY_LENGTH
from ._mongo import mongo_client_options, mongo_listeners
from ._redis import (
    DEFAULT_REDIS_POLICY,
    SAFE_COMMANDS,
    async_redis_client,
    is_safe_command,
    redis_client,
)
from ._settings import (
    DRIVERS,
    Code,
    PoolSettings,
    Setting,
    format_seconds,
    pool_settings,
    safe_expiry,
)
from ._transaction import (
    aensure_key_table,
    aexecute,
    apurge_keys,
    atransaction,
    ensure_key_table,
    execute,
    purge_keys,
    transaction,
)

__all__ = [
    "Code",
    "DEFAULT_KEY_TABLE",
    "DEFAULT_REDIS_POLICY",
    "DRIVERS",
    "MAX_KEY_LENGTH",
    "PoolSettings",
    "SAFE_COMMANDS",
    "SERVER_BREAKER",
    "Setting",
    "aensure_key_table",
    "aexecute",
    "apurge_keys",
    "async_redis_client",
    "atransaction",
    "ensure_key_table",
    "execute",
    "format_seconds",
    "is_safe_command",
    "mongo_client_options",
    "mongo_listeners",
    "pool_settings",
    "purge_keys",
    "redis_client",
    "safe_expiry",
    "transaction",
]
