"""Redis: cost per command with no faults, and INCR counts under lost replies.

Run: .venv/bin/python benchmarks/redis_kv.py [--quick]

Needs the local Redis on 127.0.0.1:6379. Keys are unique per run (``rg:bench:<uuid>:*``)
and deleted at the end; nothing global is changed.

1. Cost, no faults: GET and INCR round trips on one pooled connection, sync and asyncio,
   for plain redis-py (default retries), redis-py with retries off, and
   ``resetguard.db.redis_client`` / ``async_redis_client``. Best of 3 repeats, µs per call.
2. Lost replies: N INCRs through ``resetguard.proxy`` with ``reset_peer`` on the downstream
   stream (the server runs the INCR, the reply is dropped and the connection reset) on a
   share of the connections; every INCR uses a new connection so each draws the toxic.
   Counted afterwards on the server: the counter vs acknowledged calls.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import redis  # noqa: E402
import redis.asyncio as aredis  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry as RedisRetry  # noqa: E402

from resetguard import Backoff, Retry  # noqa: E402
from resetguard.db import async_redis_client, redis_client  # noqa: E402
from resetguard.proxy import FaultProxy, ResetPeer  # noqa: E402

logging.getLogger("resetguard").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", category=DeprecationWarning)
URL = "redis://127.0.0.1:6379/0"
PREFIX = f"rg:bench:{uuid.uuid4().hex}"


def _interleaved(clients: dict[str, Any], ops: dict[str, Callable[[Any], Any]], n: int) -> dict:
    """Batches of 100 calls, clients taking turns, best batch per (client, op): the shared
    machine's drift hits every client alike."""
    best: dict[tuple[str, str], float] = {}
    for _ in range(max(1, n // 100)):
        for name, client in clients.items():
            for op_name, op in ops.items():
                start = time.perf_counter()
                for _ in range(100):
                    op(client)
                per_call = (time.perf_counter() - start) / 100 * 1e6
                key = (name, op_name)
                best[key] = min(best.get(key, per_call), per_call)
    return best


async def _ainterleaved(
    clients: dict[str, Any], ops: dict[str, Callable[[Any], Awaitable[Any]]], n: int
) -> dict:
    best: dict[tuple[str, str], float] = {}
    for _ in range(max(1, n // 100)):
        for name, client in clients.items():
            for op_name, op in ops.items():
                start = time.perf_counter()
                for _ in range(100):
                    await op(client)
                per_call = (time.perf_counter() - start) / 100 * 1e6
                key = (name, op_name)
                best[key] = min(best.get(key, per_call), per_call)
    return best


def cost(n: int) -> None:
    key = f"{PREFIX}:cost"
    clients = {
        "redis-py default": redis.Redis.from_url(URL),
        "redis-py retries off": redis.Redis.from_url(URL, retry=RedisRetry(NoBackoff(), 0)),
        "resetguard redis_client": redis_client(URL, server_timeout=None),
    }
    for client in clients.values():
        client.set(key, 0)
    sync = _interleaved(clients, {"GET": lambda c: c.get(key), "INCR": lambda c: c.incr(key)}, n)
    for client in clients.values():
        client.close()

    async def arun() -> dict:
        aclients = {
            "redis-py default": aredis.Redis.from_url(URL),
            "redis-py retries off": aredis.Redis.from_url(URL, retry=RedisRetry(NoBackoff(), 0)),
            "resetguard redis_client": await async_redis_client(URL, server_timeout=None),
        }
        for client in aclients.values():
            await client.get(key)
        ops = {"GET": lambda c: c.get(key), "INCR": lambda c: c.incr(key)}
        result = await _ainterleaved(aclients, ops, n)
        for client in aclients.values():
            await client.aclose()
        return result

    rows = [("sync", sync), ("async", asyncio.run(arun()))]
    print(f"\n## Cost with no faults ({n} calls per op, batches of 100 taking turns, best batch)\n")
    print("| client | mode | GET µs | INCR µs | GET vs retries off | INCR vs retries off |")
    print("|---|---|---:|---:|---:|---:|")
    for mode, best in rows:
        bg, bi = best[("redis-py retries off", "GET")], best[("redis-py retries off", "INCR")]
        for name in clients:
            g, i = best[(name, "GET")], best[(name, "INCR")]
            print(
                f"| {name} | {mode} | {g:.1f} | {i:.1f} "
                f"| {g - bg:+.1f} µs ({100 * (g - bg) / bg:+.1f} %) "
                f"| {i - bi:+.1f} µs ({100 * (i - bi) / bi:+.1f} %) |"
            )


def lost_replies(n: int, toxicity: float) -> None:
    admin = redis.Redis.from_url(URL)
    quiet: dict[str, Any] = {"lib_name": None, "lib_version": None, "protocol": 2}
    print(
        f"\n## INCR under lost replies ({n} INCRs, reset_peer downstream on "
        f"{toxicity:.0%} of connections, one connection per INCR)\n"
    )
    print("| client | acknowledged | errors surfaced | counter on server | ran twice |")
    print("|---|---:|---:|---:|---:|")
    for name in ("redis-py default", "resetguard redis_client"):
        key = f"{PREFIX}:{name.split()[0]}"
        admin.set(key, 0)
        with FaultProxy("127.0.0.1:6379") as proxy:
            proxy.add_toxic(ResetPeer(stream="downstream", toxicity=toxicity))
            url = f"redis://{proxy.host}:{proxy.port}/0"
            if name == "redis-py default":
                # Its default: 10 retries with exponential backoff (1 s cap here, or the run
                # takes minutes: the count of executions does not depend on the waits).
                from redis.backoff import ExponentialWithJitterBackoff

                client = redis.Redis.from_url(
                    url,
                    retry=RedisRetry(ExponentialWithJitterBackoff(cap=0.05, base=0.01), 10),
                    **quiet,
                )
            else:
                client = redis_client(
                    url,
                    server_timeout=None,
                    policy=Retry(attempts=10, backoff=Backoff.none(), deadline=10),
                    **quiet,
                )
            acked = errors = 0
            for _ in range(n):
                client.connection_pool.disconnect()
                try:
                    client.incr(key)
                    acked += 1
                except redis.ConnectionError:
                    errors += 1
            client.close()
        counter = int(admin.get(key) or 0)
        # Each surfaced error ran at most once (its reply was lost after it ran): anything
        # above acknowledged + errors ran twice.
        twice = max(0, counter - acked - errors)
        print(f"| {name} | {acked} | {errors} | {counter} | {twice} |")
        admin.delete(key)
    admin.delete(f"{PREFIX}:cost")
    admin.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_cost = 300 if args.quick else 3000
    n_faults = 200 if args.quick else 2000
    cost(n_cost)
    lost_replies(n_faults, 0.05)


if __name__ == "__main__":
    main()
