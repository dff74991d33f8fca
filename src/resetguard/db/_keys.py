"""The idempotency-key table: its SQL per dialect, and the rules for keys and results.

A keyed unit of work INSERTs its key (and its JSON-encoded result) in the same transaction
as its own writes. The key row therefore exists exactly when the unit's writes committed:
after a reset at COMMIT, one SELECT on a fresh connection tells which. The primary key also
serialises duplicates: a rerun whose first run is still committing on a dying session waits
on the key's row lock, then sees the duplicate and returns the stored result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_KEY_TABLE",
    "MAX_KEY_LENGTH",
    "Dialect",
    "check_key",
    "check_older_than",
    "check_table",
    "decode_result",
    "encode_result",
    "is_duplicate_key",
    "mariadb_claim_and_commit",
    "mysql_claim_and_commit",
    "pg_claim_and_commit",
    "pg_literal",
]

#: The table resetguard creates for idempotency keys when none is named.
DEFAULT_KEY_TABLE = "resetguard_keys"
#: Longest key accepted: 191 characters fit a MySQL utf8mb4 primary key.
MAX_KEY_LENGTH = 191

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


def check_table(table: object) -> str:
    """``table`` if it is a plain (optionally schema-qualified) SQL identifier."""
    if not isinstance(table, str) or not _TABLE_NAME.match(table):
        raise ValueError(
            f"key_table must be an SQL identifier such as 'resetguard_keys' or"
            f" 'app.resetguard_keys', got {table!r}"
        )
    return table


def check_key(key: object) -> str:
    """``key`` if it is a non-empty string of at most :data:`MAX_KEY_LENGTH` characters."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"key must be a non-empty string of at most {MAX_KEY_LENGTH} characters, got {key!r}"
        )
    return key


def check_older_than(older_than: object) -> float:
    """``older_than`` (seconds) if it is a positive finite number."""
    if (
        isinstance(older_than, bool)
        or not isinstance(older_than, int | float)
        or not 0 < older_than < float("inf")
    ):
        raise ValueError(f"older_than must be a positive number of seconds, got {older_than!r}")
    return float(older_than)


def encode_result(result: object) -> str | None:
    """The unit's result as stored with its key: JSON text, or None (SQL NULL) for None.

    A keyed unit must return JSON data (None, numbers, strings, lists, dicts): the same value
    has to come back whether this run returned it or a later check found it in the table.
    """
    if result is None:
        return None
    try:
        return json.dumps(result, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            "a unit run with key= must return JSON data (None, bool, int, float, str, list,"
            f" dict), because its result is stored with the key; got {type(result).__name__}:"
            f" {exc}"
        ) from None


def decode_result(payload: str | None) -> Any:
    """The value a keyed unit returns, from its stored payload."""
    return None if payload is None else json.loads(payload)


def pg_literal(text: str) -> str:
    """``text`` as a PostgreSQL dollar-quoted literal (immune to quoting settings)."""
    tag = "$rg$"
    while tag in text or text.endswith(tag[:-1]):
        tag = tag[:-1] + "x$"
    return f"{tag}{text}{tag}"


def pg_claim_and_commit(table: str, key: str, payload: str | None) -> str:
    """One simple-protocol message: the key INSERT and COMMIT (no extra round trip)."""
    result = "NULL" if payload is None else pg_literal(payload)
    return f"INSERT INTO {table} (idem_key, result) VALUES ({pg_literal(key)}, {result}); COMMIT"


def mysql_claim_and_commit(table: str, key_literal: str, payload_literal: str) -> str:
    """The key INSERT and COMMIT as one multi-statement message (literals quoted by the
    driver's own ``escape()``, which honours the server's NO_BACKSLASH_ESCAPES)."""
    return (
        f"INSERT INTO {table} (idem_key, result) VALUES ({key_literal}, {payload_literal}); COMMIT"
    )


def mariadb_claim_and_commit(table: str, key_literal: str, payload_literal: str) -> str:
    """The key INSERT and COMMIT as one MariaDB compound statement (10.1 and later): one
    statement and one round trip without multi-statements, in any ``sql_mode`` (ORACLE
    too). Its COMMIT runs only when the INSERT succeeded: a duplicate key fails the whole
    statement with error 1062 and leaves the transaction open, as a lone INSERT would."""
    return (
        f"BEGIN NOT ATOMIC INSERT INTO {table} (idem_key, result)"
        f" VALUES ({key_literal}, {payload_literal}); COMMIT; END"
    )


def is_duplicate_key(exc: BaseException) -> bool:
    """Whether ``exc`` (or the DBAPI error a wrapper holds) is a unique-key violation."""
    node: BaseException | None = exc
    for _ in range(4):
        if node is None:
            return False
        if getattr(node, "sqlstate", None) == "23505":  # psycopg, asyncpg
            return True
        args = getattr(node, "args", ())
        if args and args[0] == 1062 and "IntegrityError" in type(node).__name__:  # MySQL
            return True
        node = getattr(node, "orig", None) or node.__cause__  # SQLAlchemy keeps it on .orig
    return False


@dataclass(frozen=True, slots=True)
class Dialect:
    """The key-table statements for one SQL dialect and parameter style."""

    create: str
    probe: str
    insert: str
    select: str
    purge: str
    purge_unit: float  # multiply seconds by this for the purge parameter

    def purge_param(self, seconds: float) -> float | int:
        """The purge statement's parameter for an age of ``seconds``."""
        return seconds if self.purge_unit == 1.0 else int(seconds * self.purge_unit)

    def on(self, table: str) -> Dialect:
        """These statements on ``table``."""
        return Dialect(
            self.create.format(t=table),
            self.probe.format(t=table),
            self.insert.format(t=table),
            self.select.format(t=table),
            self.purge.format(t=table),
            self.purge_unit,
        )


_PG_CREATE = (
    "CREATE TABLE IF NOT EXISTS {t} (idem_key text PRIMARY KEY, result text,"
    " created_at timestamptz NOT NULL DEFAULT now())"
)
_MY_CREATE = (
    "CREATE TABLE IF NOT EXISTS {t} (idem_key VARCHAR(191) NOT NULL PRIMARY KEY,"
    " result MEDIUMTEXT NULL, created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
    " ENGINE=InnoDB"
)

# Whether the table exists, without the note MySQL drivers turn into a Python warning
# for CREATE TABLE IF NOT EXISTS on an existing table.
_PROBE = "SELECT 1 FROM {t} WHERE 1 = 0"

#: psycopg (``%s`` placeholders).
PG_FORMAT = Dialect(
    _PG_CREATE,
    _PROBE,
    "INSERT INTO {t} (idem_key, result) VALUES (%s, %s)",
    "SELECT result FROM {t} WHERE idem_key = %s",
    "DELETE FROM {t} WHERE created_at < now() - %s::float8 * interval '1 second'",
    1.0,
)
#: asyncpg (``$n`` placeholders).
PG_NUMERIC = Dialect(
    _PG_CREATE,
    _PROBE,
    "INSERT INTO {t} (idem_key, result) VALUES ($1, $2)",
    "SELECT result FROM {t} WHERE idem_key = $1",
    "DELETE FROM {t} WHERE created_at < now() - $1::float8 * interval '1 second'",
    1.0,
)
#: PyMySQL and aiomysql (``%s`` placeholders).
MYSQL_FORMAT = Dialect(
    _MY_CREATE,
    _PROBE,
    "INSERT INTO {t} (idem_key, result) VALUES (%s, %s)",
    "SELECT result FROM {t} WHERE idem_key = %s",
    "DELETE FROM {t} WHERE created_at < NOW(6) - INTERVAL %s MICROSECOND",
    1e6,
)
#: SQLAlchemy ``text()`` (named placeholders), PostgreSQL and MySQL/MariaDB.
PG_NAMED = Dialect(
    _PG_CREATE,
    _PROBE,
    "INSERT INTO {t} (idem_key, result) VALUES (:p0, :p1)",
    "SELECT result FROM {t} WHERE idem_key = :p0",
    "DELETE FROM {t} WHERE created_at < now() - CAST(:p0 AS float8) * interval '1 second'",
    1.0,
)
MYSQL_NAMED = Dialect(
    _MY_CREATE,
    _PROBE,
    "INSERT INTO {t} (idem_key, result) VALUES (:p0, :p1)",
    "SELECT result FROM {t} WHERE idem_key = :p0",
    "DELETE FROM {t} WHERE created_at < NOW(6) - INTERVAL :p0 MICROSECOND",
    1e6,
)
