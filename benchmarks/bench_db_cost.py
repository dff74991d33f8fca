"""Cost of resetguard.db with no faults: the same transaction by hand, through
``transaction()`` without a key, and with a key (one more INSERT in the same transaction).

Run: python benchmarks/bench_db_cost.py [--units N] [--rounds R]

Each unit is ``INSERT`` + ``UPDATE`` on a local table (no proxy), on one pooled
connection (psycopg_pool, asyncpg, a PyMySQL connection, aiomysql). By hand as its driver's
users write it: psycopg and the MySQL drivers with autocommit off, so the first statement
opens the transaction (no BEGIN of its own), asyncpg with ``conn.transaction()``. The three variants
take turns unit by unit (so load spikes on the shared machine hit all three alike), ``N``
units each per round, ``R`` rounds; the table shows the median of all per-unit times and
the overhead over the hand-written transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.db

from tests.db.conftest import DRIVERS, MY, PG, Admin

import resetguard.db as db

COST_DRIVERS = ("psycopg", "asyncpg", "pymysql-conn", "pymysql-multi", "aiomysql")
VARIANTS = ("by hand", "transaction()", "transaction(key=)")


def _sync_variants(d: Any, pool: Any, table: str, keys: str) -> dict[str, Callable[[int], Any]]:
    def stmts(i: int) -> tuple[str, str]:
        return (
            f"INSERT INTO {table} (tag, n) VALUES ('{i}', 0)",
            f"UPDATE {table} SET n = n + 1 WHERE tag = '{i}'",
        )

    def unit_for(i: int) -> Callable[[Any], None]:
        insert, update = stmts(i)

        def unit(conn: Any) -> None:
            d.exec(conn, insert)
            d.exec(conn, update)

        return unit

    if d.name == "psycopg":

        def by_hand(i: int) -> None:
            insert, update = stmts(i)
            with pool.connection() as conn:
                conn.execute(insert)
                conn.execute(update)

    else:  # a PyMySQL connection (autocommit off: the INSERT opens the transaction)

        def by_hand(i: int) -> None:
            insert, update = stmts(i)
            with pool.cursor() as cur:
                cur.execute(insert)
                cur.execute(update)
            pool.commit()

    return {
        "by hand": by_hand,
        "transaction()": lambda i: db.transaction(pool, unit_for(i)),
        "transaction(key=)": lambda i: db.transaction(
            pool, unit_for(i), key=f"k{i}", key_table=keys
        ),
    }


def _async_variants(d: Any, pool: Any, table: str, keys: str) -> dict[str, Callable[[int], Any]]:
    def stmts(i: int) -> tuple[str, str]:
        return (
            f"INSERT INTO {table} (tag, n) VALUES ('{i}', 0)",
            f"UPDATE {table} SET n = n + 1 WHERE tag = '{i}'",
        )

    def unit_for(i: int) -> Callable[[Any], Any]:
        insert, update = stmts(i)

        async def unit(conn: Any) -> None:
            await d.exec(conn, insert)
            await d.exec(conn, update)

        return unit

    if d.name == "asyncpg":

        async def by_hand(i: int) -> None:
            insert, update = stmts(i)
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(insert)
                await conn.execute(update)

    else:  # aiomysql (autocommit off: the INSERT opens the transaction)

        async def by_hand(i: int) -> None:
            insert, update = stmts(i)
            async with pool.acquire() as conn:
                async with conn.cursor() as cur:
                    await cur.execute(insert)
                    await cur.execute(update)
                await conn.commit()

    return {
        "by hand": by_hand,
        "transaction()": lambda i: db.atransaction(pool, unit_for(i)),
        "transaction(key=)": lambda i: db.atransaction(
            pool, unit_for(i), key=f"k{i}", key_table=keys
        ),
    }


def measure(name: str, units: int, rounds: int) -> dict[str, float]:
    """Median seconds per unit of each variant for driver ``name``."""
    d = DRIVERS[name]
    admin = Admin()
    table = f"rg_cost_{uuid.uuid4().hex[:10]}"
    keys = f"rg_cost_keys_{uuid.uuid4().hex[:8]}"
    text = "text" if d.kind == "pg" else "varchar(32)"
    engine = "" if d.kind == "pg" else " ENGINE=InnoDB"
    admin.sql(d.kind, f"CREATE TABLE {table} (tag {text}, n int){engine}")
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    port = (PG if d.kind == "pg" else MY)[1]
    counter = iter(range(10**9))
    try:
        if d.is_async:

            async def run() -> None:
                async with d.opener(port, False) as pool:
                    variants = _async_variants(d, pool, table, keys)
                    for fn in variants.values():  # warm up (and create the key table)
                        await fn(next(counter))
                    for _ in range(rounds * units):
                        for v, fn in variants.items():
                            t0 = time.perf_counter()
                            await fn(next(counter))
                            times[v].append(time.perf_counter() - t0)

            asyncio.run(run())
        else:
            with d.opener(port, False) as pool:
                variants = _sync_variants(d, pool, table, keys)
                for fn in variants.values():
                    fn(next(counter))
                for _ in range(rounds * units):
                    for v, fn in variants.items():
                        t0 = time.perf_counter()
                        fn(next(counter))
                        times[v].append(time.perf_counter() - t0)
    finally:
        admin.sql(d.kind, f"DROP TABLE IF EXISTS {table}")
        admin.sql(d.kind, f"DROP TABLE IF EXISTS {keys}")
        admin.close()
    return {v: statistics.median(t) for v, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.units < 1 or args.rounds < 1:
        parser.error(f"--units and --rounds must be at least 1, got {args.units}, {args.rounds}")
    print(
        "| driver | by hand (µs/unit) | transaction() (µs/unit) | overhead |"
        " transaction(key=) (µs/unit) | overhead |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in COST_DRIVERS:
        m = measure(name, args.units, args.rounds)
        hand = m["by hand"]
        plain, keyed = m["transaction()"], m["transaction(key=)"]
        print(
            f"| {name} | {hand * 1e6:.0f} | {plain * 1e6:.0f} | {(plain / hand - 1) * 100:+.1f} % |"
            f" {keyed * 1e6:.0f} | {(keyed / hand - 1) * 100:+.1f} % |",
            flush=True,
        )


if __name__ == "__main__":
    main()
