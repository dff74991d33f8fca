"""Fleet-wide breaker and budget (``resetguard.fleet.RedisBackend``) against the in-process
default, all in one run, on the local Redis (127.0.0.1:6379).

Run: python benchmarks/bench_fleet.py [--quick] [--redis redis://127.0.0.1:6379/0]

Reported:
  * success path, +µs per call over the bare call: ``@breaker``, the engine
    (``@retry(breaker=, budget=, attempts=1)``) and ``budget.deposit()``, each with the
    in-process state and with the Redis backend (best of interleaved rounds);
  * decision cost with Redis, µs per decision (median): a trip pushed to the fleet, a
    refused probe claim, a budget retry, one sync pass; the in-process retry for comparison;
  * fleet amplification: 1, 4 and 8 processes in a total outage of a loopback server that
    resets every connection, 4 attempts per call, with one shared budget and with a budget
    per process: server-side attempts per logical call.
The keys live under a fresh namespace and are deleted at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import struct
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

import resetguard
from _timing import best_ns
from resetguard.fleet import RedisBackend


def target() -> int:
    return 1


def median_us(fn: Callable[[], Any], n: int) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


# --------------------------------------------------------------------------- success path


def success_path(url: str, ns: str, n: int, repeats: int, rounds: int) -> None:
    backend = RedisBackend.from_url(url, namespace=ns, sync_interval=1.0)
    rows: dict[str, dict[str, Callable[[], Any]]] = {}
    for label, be in (("in-process", None), ("Redis backend", backend)):
        breaker = resetguard.CircuitBreaker(f"bench-{label}", backend=be)
        budget = resetguard.RetryBudget(f"bench-{label}", backend=be)
        engine = resetguard.retry(
            breaker=breaker, budget=budget, attempts=1, backoff=resetguard.Backoff.none()
        )
        rows[label] = {
            "@breaker": breaker(target),
            "engine: @retry(breaker, budget)": engine(target),
            "budget.deposit()": budget.deposit,
        }
    bare = min(best_ns(target, n, repeats) for _ in range(rounds))
    results: dict[tuple[str, str], float] = {}
    for _ in range(rounds):  # interleaved, so load changes hit every row alike
        for label, fns in rows.items():
            for what, fn in fns.items():
                cost = best_ns(fn, n, repeats) - (0 if what == "budget.deposit()" else bare)
                key = (what, label)
                results[key] = min(results.get(key, float("inf")), cost)
    print(f"\nSuccess path, +µs per call (bare call {bare:.0f} ns; best of {rounds} rounds)\n")
    print("| path | in-process | Redis backend |")
    print("|---|---:|---:|")
    for what in rows["in-process"]:
        a, b = results[(what, "in-process")], results[(what, "Redis backend")]
        print(f"| {what} | {a / 1000:.3f} | {b / 1000:.3f} |")
    backend.close()


# --------------------------------------------------------------------------- decisions


def decisions(url: str, ns: str, n: int) -> None:
    backend = RedisBackend.from_url(url, namespace=ns, sync_interval=60.0, timeout=0.5)
    breaker = resetguard.CircuitBreaker("decide", open_duration=60, backend=backend)
    budget = resetguard.RetryBudget("decide", min_per_second=1e6, backend=backend)
    local_budget = resetguard.RetryBudget("decide-local", min_per_second=1e6)
    link: Any = breaker._link
    link.tripped()  # the fleet is open from here: claims are refused (the common case)
    rows = [
        ("trip pushed to the fleet (one script)", median_us(link.tripped, n)),
        ("probe claim, refused while open (one script)", median_us(link.claim, n)),
        ("budget retry: withdraw() (one script)", median_us(budget.withdraw, n)),
        ("sync pass: 1 breaker + 1 budget (two scripts)", median_us(backend.sync, n)),
        ("budget retry in-process: withdraw()", median_us(local_budget.withdraw, n)),
    ]
    print(f"\nDecision cost with Redis (median of {n}, µs)\n")
    print("| decision | µs |")
    print("|---|---:|")
    for what, us in rows:
        print(f"| {what} | {us:.1f} |")
    backend.close()


# --------------------------------------------------------------------------- amplification


class ResetServer:
    """Accepts and resets (SO_LINGER 0) every connection; counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def request(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        data = sock.recv(16)
    if not data:
        raise ConnectionResetError(104, "closed before any answer")
    return data


def worker(url: str | None, ns: str, port: int, calls: int, go: Any, out: Any) -> None:
    backend = None
    if url is not None:
        backend = RedisBackend.from_url(url, namespace=ns, sync_interval=0.2, timeout=0.5)
    budget = resetguard.RetryBudget(
        "amplification", ratio=0.2, min_per_second=1, ttl=10, backend=backend
    )

    @resetguard.retry(attempts=4, backoff=resetguard.Backoff.none(), budget=budget)
    def call() -> bytes:
        return request(port)

    out.put("ready")
    go.wait(60)
    for _ in range(calls):
        try:  # noqa: SIM105
            call()
        except ConnectionResetError:
            pass
    out.put(("done", calls, budget.statistics().withdrawals))
    if backend is not None:
        backend.close()


def amplification(url: str, ns: str, calls: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    print(
        f"\nFleet amplification: {calls} calls per process, 4 attempts each, total outage "
        "(every connection reset); budget 20 % + 1/s over 10 s (floor 10 tokens)\n"
    )
    print("| processes | budget | logical calls | server-side attempts | attempts/call | bound |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in (1, 4, 8):
        for label, shared in (("one per process", False), ("shared (Redis)", True)):
            server = ResetServer()
            go, out = ctx.Event(), ctx.Queue()
            run_ns = f"{ns}-{n}-{shared}"
            procs = [
                ctx.Process(
                    target=worker,
                    args=(url if shared else None, run_ns, server.port, calls, go, out),
                    daemon=True,
                )
                for _ in range(n)
            ]
            for proc in procs:
                proc.start()
            for _ in range(n):
                out.get(timeout=60)
            go.set()
            done = [out.get(timeout=120) for _ in range(n)]
            for proc in procs:
                proc.join(timeout=10)
            total = sum(d[1] for d in done)
            withdrawals = sum(d[2] for d in done)
            deadline = time.monotonic() + 5
            while server.accepted < total + withdrawals and time.monotonic() < deadline:
                time.sleep(0.01)
            server.close()
            floor = 10 * (1 if shared else n)
            bound = 1 + 0.2 + floor / total
            print(
                f"| {n} | {label} | {total} | {server.accepted} | "
                f"{server.accepted / total:.3f} | {bound:.3f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    n, repeats, rounds = (20_000, 2, 2) if args.quick else (100_000, 3, 5)
    ns = f"rg-bench-{uuid.uuid4().hex}"
    try:
        success_path(args.redis, ns, n, repeats, rounds)
        decisions(args.redis, ns, 200 if args.quick else 2000)
        amplification(args.redis, ns, 50 if args.quick else 100)
    finally:
        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=f"{ns}*"))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    main()
