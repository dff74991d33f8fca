"""Exactly-once stress for resetguard.db: keyed units through a proxy that resets connections.

Run: python benchmarks/bench_db_exactly_once.py [--units N] [--drivers psycopg,asyncpg,...]

Each unit i is ``INSERT (tag=i, n=0)`` then ``UPDATE ... SET n = n + 1 WHERE tag = i`` in
one ``resetguard.db.transaction`` / ``atransaction``, through a resetguard proxy whose
test-side ``SqlReset`` toxic resets connections at random moments: each client chunk that
carries a COMMIT is reset with probability 2 %, any other chunk with 0.75 % on PostgreSQL
(a unit sends BEGIN, INSERT, UPDATE and COMMIT) and 1.3 % on MySQL (the drivers send no
BEGIN: INSERT, UPDATE and COMMIT, or with a key the compound statement carrying it), so
about 5 % of units meet a reset and about 40 % of those at COMMIT; each reset drops the
chunk or lets it through and drops the reply (half each). The table has no
unique constraint, so a duplicated unit would show as two rows.

Afterwards, per tag on the server: lost (acknowledged but absent), duplicated (two rows or
n > 1), torn (the INSERT without its UPDATE: n = 0), unknown (surfaced as
``OutcomeUnknown``), failed (another error; its row must be absent). Run once with keys
and once without.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from pathlib import Path
from random import Random
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.db

from tests.db._commit_toxic import SqlReset
from tests.db.conftest import DRIVERS, MY, PG, Admin

import resetguard
import resetguard.db as db
from resetguard.proxy import FaultProxy

STRESS_DRIVERS = ("psycopg", "asyncpg", "pymysql-conn", "aiomysql")
POLICY = resetguard.Retry(
    name="bench.unit",
    attempts=5,
    deadline=30.0,
    backoff=resetguard.Backoff(initial=0.001, cap=0.01),
    idempotent=None,
)
# per server kind: the chance for a chunk without COMMIT follows how many a unit sends
TOXIC = {
    "pg": SqlReset(stream="upstream", when="random", at_permille=20, elsewhere_permille=8),
    "my": SqlReset(stream="upstream", when="random", at_permille=20, elsewhere_permille=13),
}


def _count_events(seen: dict[str, int]) -> Any:
    def hook(event: resetguard.Event) -> None:
        if isinstance(event, resetguard.ConnectionEvent) and event.action == "failed":
            seen["faults"] += 1
        elif isinstance(event, resetguard.OutcomeResolved):
            seen["resolved_" + event.outcome] += 1

    return hook


def run_stress(driver: str, units: int, *, keyed: bool, seed: int = 1) -> dict[str, Any]:
    """Run ``units`` units of ``driver`` through the resetting proxy; count what happened."""
    d = DRIVERS[driver]
    admin = Admin()
    table = f"rg_stress_{uuid.uuid4().hex[:10]}"
    keys = f"rg_stress_keys_{uuid.uuid4().hex[:8]}"
    text = "text" if d.kind == "pg" else "varchar(32)"
    engine = "" if d.kind == "pg" else " ENGINE=InnoDB"
    admin.sql(d.kind, f"CREATE TABLE {table} (tag {text}, n int){engine}")
    outcome: dict[int, str] = {}
    seen = {"faults": 0, "resolved_done": 0, "resolved_rerun": 0, "resolved_unknown": 0}
    hook = _count_events(seen)
    resetguard.add_hook(hook)
    proxy = FaultProxy(PG if d.kind == "pg" else MY, random=Random(seed))
    started = time.perf_counter()
    try:
        with proxy:
            proxy.add_toxic(TOXIC[d.kind])
            if d.is_async:
                asyncio.run(_run_async(d, proxy.port, table, keys, units, keyed, outcome))
            else:
                _run_sync(d, proxy.port, table, keys, units, keyed, outcome)
        elapsed = time.perf_counter() - started
        rows: dict[str, list[int]] = {}
        for tag, n in admin.sql(d.kind, f"SELECT tag, n FROM {table}"):
            rows.setdefault(str(tag), []).append(int(n))
    finally:
        resetguard.remove_hook(hook)
        admin.sql(d.kind, f"DROP TABLE IF EXISTS {table}")
        admin.sql(d.kind, f"DROP TABLE IF EXISTS {keys}")
        admin.close()
    counts = {"lost": 0, "duplicated": 0, "torn": 0, "unknown": 0, "failed": 0}
    counts["failed_but_committed"] = 0
    for i in range(units):
        found = rows.get(str(i), [])
        result = outcome[i]
        if len(found) > 1 or any(n > 1 for n in found):
            counts["duplicated"] += 1
        if any(n == 0 for n in found):
            counts["torn"] += 1
        if result == "ok" and not found:
            counts["lost"] += 1
        elif result == "unknown":
            counts["unknown"] += 1
        elif result not in ("ok", "unknown"):
            counts["failed"] += 1
            if found:
                counts["failed_but_committed"] += 1
    return {
        "driver": driver,
        "keyed": keyed,
        "units": units,
        "seconds": elapsed,
        **counts,
        **seen,
    }


def _statements(table: str, i: int) -> tuple[str, str]:
    return (
        f"INSERT INTO {table} (tag, n) VALUES ('{i}', 0)",
        f"UPDATE {table} SET n = n + 1 WHERE tag = '{i}'",
    )


def _verdict(exc: BaseException) -> str:
    return "unknown" if resetguard.outcome_unknown(exc) else f"failed:{type(exc).__name__}"


def _run_sync(
    d: Any, port: int, table: str, keys: str, units: int, keyed: bool, outcome: dict[int, str]
) -> None:
    with d.opener(port, False) as pool:
        for i in range(units):
            insert, update = _statements(table, i)

            def unit(conn: Any, insert: str = insert, update: str = update) -> None:
                d.exec(conn, insert)
                d.exec(conn, update)

            key = f"u{i}" if keyed else None
            try:
                db.transaction(pool, unit, key=key, policy=POLICY, key_table=keys)
                outcome[i] = "ok"
            except Exception as exc:
                outcome[i] = _verdict(exc)


async def _run_async(
    d: Any, port: int, table: str, keys: str, units: int, keyed: bool, outcome: dict[int, str]
) -> None:
    async with d.opener(port, False) as pool:
        for i in range(units):
            insert, update = _statements(table, i)

            async def unit(conn: Any, insert: str = insert, update: str = update) -> None:
                await d.exec(conn, insert)
                await d.exec(conn, update)

            key = f"u{i}" if keyed else None
            try:
                await db.atransaction(pool, unit, key=key, policy=POLICY, key_table=keys)
                outcome[i] = "ok"
            except Exception as exc:
                outcome[i] = _verdict(exc)


def main() -> None:
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # "discarding closed connection"
    logging.getLogger("asyncpg.pool").setLevel(logging.CRITICAL)  # its reconnects, reset too
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--drivers", default=",".join(STRESS_DRIVERS))
    args = parser.parse_args()
    if args.units < 1:
        parser.error(f"--units must be at least 1, got {args.units}")
    names = args.drivers.split(",")
    for name in names:
        if name not in DRIVERS:
            parser.error(f"unknown driver {name!r}; choose from {', '.join(DRIVERS)}")
    print(
        "| driver | keys | units | lost | duplicated | torn | unknown surfaced | failed"
        " | resets seen | resolved: committed / not / unknown | s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for name in names:
        for keyed in (True, False):
            r = run_stress(name, args.units, keyed=keyed)
            print(
                f"| {name} | {'yes' if keyed else 'no'} | {r['units']} | {r['lost']} |"
                f" {r['duplicated']} | {r['torn']} | {r['unknown']} |"
                f" {r['failed']} ({r['failed_but_committed']} committed) | {r['faults']} |"
                f" {r['resolved_done']} / {r['resolved_rerun']} / {r['resolved_unknown']} |"
                f" {r['seconds']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
