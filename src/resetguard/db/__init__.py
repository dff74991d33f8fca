"""Databases that survive resets without losing or duplicating a write.

A unit of work runs in a transaction on a pooled connection. A connection fault before
COMMIT was sent reruns it on a fresh connection; a fault while COMMIT is in flight is
resolved by an idempotency key (or surfaced as :class:`resetguard.OutcomeUnknown`).
Drivers: psycopg 3 (+ psycopg_pool), asyncpg, PyMySQL, aiomysql and SQLAlchemy engines,
recognised by their module and class names and imported only by you.

Example::

    import resetguard.db

    def pay(conn):
        conn.execute("INSERT INTO payments(order_id, cents) VALUES (%s, %s)", (42, 999))
        conn.execute("UPDATE orders SET paid = true WHERE id = %s", (42,))
        return "paid"

    resetguard.db.transaction(pool, pay, key="pay-order-42")   # exactly once

See docs/databases.md.
"""

from __future__ import annotations

from ._keys import DEFAULT_KEY_TABLE, MAX_KEY_LENGTH
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
    "DEFAULT_KEY_TABLE",
    "MAX_KEY_LENGTH",
    "aensure_key_table",
    "aexecute",
    "apurge_keys",
    "atransaction",
    "ensure_key_table",
    "execute",
    "purge_keys",
    "transaction",
]
