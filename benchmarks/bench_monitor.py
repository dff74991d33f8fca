"""Cost of the Monitor on the hot path, of its exporters at scrape time, and of the tracer.

Run: python benchmarks/bench_monitor.py [--quick]

All in one process and one run so ratios are comparable (2 shared cores: read ratios, not
absolute numbers). Reported: best-of-repeats ns per operation.

* record(): a bare success; with endpoint and latency; a classified exception;
* @track on a sync and an async function, against the bare function;
* the same bookkeeping done by hand with prometheus_client (Counter.labels().inc() and
  Histogram.observe()), the usual alternative;
* record() from 2 threads at once (lock contention);
* an AttemptFailed event delivered to an installed monitor;
* report() and a Prometheus scrape with 1000 endpoints;
* an httpx GET against a loopback keep-alive server, tracer off and on (a sink that drops the
  records), interleaved round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from _timing import best_ns
from resetguard._classify import Failure, Kind, Phase
from resetguard._events import AttemptFailed, emit
from resetguard._monitor import Monitor
from resetguard.instrumentation.prometheus import register


def abest_ns(fn: Callable[[], object], n: int, repeats: int) -> float:
    async def loop() -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter_ns()
            for _ in range(n):
                await fn()  # type: ignore[misc]
            best = min(best, (time.perf_counter_ns() - start) / n)
        return best

    return asyncio.run(loop())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, repeats = (20_000, 3) if args.quick else (200_000, 5)
    rows: list[tuple[str, float, str]] = []

    def add(name: str, ns: float, note: str = "") -> None:
        rows.append((name, ns, note))
        print(f"{name:<58} {ns:>10.0f} ns  {note}", flush=True)

    monitor = Monitor()
    reset = ConnectionResetError(104, "Connection reset by peer")

    def bare() -> int:
        return 1

    async def abare() -> int:
        return 1

    base = best_ns(bare, n, repeats)
    add("bare function call", base)
    add("monitor.record()", best_ns(monitor.record, n, repeats))
    add(
        "monitor.record('success', endpoint=, latency=)",
        best_ns(lambda: monitor.record("success", endpoint="GET /x", latency=0.01), n, repeats),
    )
    add(
        "monitor.record(ConnectionResetError) (classified)",
        best_ns(lambda: monitor.record(reset, endpoint="GET /x"), n // 4, repeats),
    )
    tracked = monitor.track(bare)
    t = best_ns(tracked, n, repeats)
    add("@monitor.track sync call", t, f"+{(t - base) / 1000:.2f} µs over bare")
    atracked = monitor.track(abare)
    abase = abest_ns(abare, n, repeats)
    at = abest_ns(atracked, n, repeats)
    add("bare async call (await)", abase)
    add("@monitor.track async call", at, f"+{(at - abase) / 1000:.2f} µs over bare")

    registry = CollectorRegistry()
    calls = Counter("calls", "calls", ["endpoint", "outcome"], registry=registry)
    duration = Histogram("duration_seconds", "d", registry=registry)

    def by_hand() -> None:
        calls.labels("GET /x", "success").inc()
        duration.observe(0.01)

    add("prometheus_client by hand: labels().inc() + observe()", best_ns(by_hand, n, repeats))

    contended = Monitor()
    per_thread = n // 2

    def worker() -> None:
        for _ in range(per_thread):
            contended.record("success", endpoint="e")

    threads = [threading.Thread(target=worker) for _ in range(2)]
    start = time.perf_counter_ns()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    add("monitor.record() from 2 threads (per op, wall)", (time.perf_counter_ns() - start) / n)

    failure = Failure(kind=Kind.RESET, phase=Phase.AWAIT, reused=True, source="httpx")
    event = AttemptFailed(name="GET /x", attempt=1, exception=reset, failure=failure, elapsed=0.1)
    with Monitor() as installed:
        add("emit(AttemptFailed) to an installed monitor", best_ns(lambda: emit(event), n, repeats))
        assert installed.report().attempt_failures.reset > 0

    big = Monitor(max_endpoints=1000)
    for i in range(1000):
        big.record("success" if i % 7 else "reset", endpoint=f"host-{i}", latency=0.01)
    add("report() with 1000 endpoints", best_ns(big.report, 200, repeats))
    reg = CollectorRegistry()
    register(big, reg)
    add(
        "Prometheus scrape (generate_latest), 1000 endpoints",
        best_ns(lambda: generate_latest(reg), 50, repeats),
    )

    bench_tracer(add, quick=args.quick)

    print("\n| Operation | ns/op | note |\n|---|---:|---|")
    for name, ns, note in rows:
        print(f"| {name} | {ns:,.0f} | {note} |")


def bench_tracer(add: Callable[[str, float, str], None], *, quick: bool) -> None:
    import socket

    import httpx

    import resetguard.trace as trace

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            with conn:
                buf = b""
                while not stop.is_set():
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                    if b"\r\n\r\n" not in buf:
                        break
                    _, _, buf = buf.partition(b"\r\n\r\n")
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = threading.Thread(target=serve)
    server.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    n, rounds = (100, 4) if quick else (300, 10)
    # Interleave the three states round after round and keep each one's best: on a shared
    # machine the load changes during the run, and this keeps the comparison fair.
    best = {"off": float("inf"), "on": float("inf")}
    try:
        with httpx.Client() as client:
            client.get(url)
            for _ in range(rounds):
                # Round 0's "off" is before any enable(); later ones are after disable().
                best["off"] = min(best["off"], best_ns(lambda: client.get(url), n, 1))
                trace.enable(sink=lambda r: None)
                best["on"] = min(best["on"], best_ns(lambda: client.get(url), n, 1))
                trace.disable()
        off, on = best["off"], best["on"]
        add("httpx GET loopback, tracer off (never enabled / disabled)", off, "")
        add(
            "httpx GET loopback, tracer on (null sink)",
            on,
            f"x{on / off:.2f}, +{(on - off) / 1000:.1f} µs",
        )
    finally:
        stop.set()
        server.join(5)
        listener.close()


if __name__ == "__main__":
    main()
