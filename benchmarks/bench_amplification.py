"""Retry amplification during a total outage: server-side attempts per logical call.

Run: python benchmarks/bench_amplification.py [--rate 500] [--outage 10] [--warmup 10] [--quick]

A real loopback TCP server answers ``OK`` while healthy, then goes down: it accepts every
connection and resets it at once (SO_LINGER 0, a TCP RST), counting the connections it
saw. A client sends logical calls at a steady rate through ``resetguard.retry(attempts=3)``
(zero backoff, so each call's attempts are back to back) and the real engine decides
every retry. Scenarios:

  * naive: 3 attempts, no budget (what "retry 3 times" clients do);
  * budget: the same, with ``RetryBudget()`` (Finagle's 20 % + 10/s over 10 s);
  * budget, no floor: ``RetryBudget(min_per_second=0)``, the ratio alone.

Each budget scenario first runs ``--warmup`` seconds of healthy traffic, so the outage
starts with a budget full of recent calls, as it would in production. The bound is
``1 + ratio + min_per_second / rate`` attempts per call.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable

import resetguard

REQUEST = b"GET\n"


class FlakyServer:
    """Healthy: replies OK. Down: accepts and resets. Counts connections per mode."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.down = False
        self.accepted = {"healthy": 0, "down": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="flaky-server", daemon=True)

    def __enter__(self) -> FlakyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        linger_rst = struct.pack("ii", 1, 0)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.down:
                self.accepted["down"] += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)
                conn.close()
                continue
            self.accepted["healthy"] += 1
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                conn.recv(16)
                conn.sendall(b"OK\n")


def make_request(port: int) -> Callable[[], bytes]:
    def request() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(REQUEST)
            data = conn.recv(16)
        if data != b"OK\n":
            raise ConnectionResetError(104, "Connection reset by peer (empty read)")
        return data

    return request


def paced(
    seconds: float,
    rate: float,
    call: Callable[[], object],
    server: FlakyServer,
    marks: list[tuple[int, int]] | None = None,
) -> int:
    """Start ``rate`` logical calls per second for ``seconds``; returns how many ran.

    With ``marks``, appends (calls started, server resets) at the start of every second.
    """
    interval = 1.0 / rate
    per_second = max(1, round(rate))
    start = time.monotonic()
    done = 0
    while True:
        due = start + done * interval
        now = time.monotonic()
        if due - start >= seconds:
            return done
        if marks is not None and done % per_second == 0:
            marks.append((done, server.accepted["down"]))
        if due > now:
            time.sleep(due - now)
        with contextlib.suppress(ConnectionError, resetguard.BudgetExhausted):
            call()
        done += 1


def per_call(marks: list[tuple[int, int]], first: int, last: int) -> float:
    """Server resets per logical call between two marks."""
    calls = marks[last][0] - marks[first][0]
    return (marks[last][1] - marks[first][1]) / calls if calls else float("nan")


def scenario(
    name: str,
    budget: resetguard.RetryBudget | None,
    rate: float,
    warmup: float,
    outage: float,
) -> dict[str, object]:
    with FlakyServer() as server:
        fetch = resetguard.retry(
            attempts=3, backoff=resetguard.Backoff.none(), deadline=None, budget=budget
        )(make_request(server.port))
        if warmup:
            paced(warmup, rate, fetch, server)
        server.down = True
        marks: list[tuple[int, int]] = []
        t0 = time.monotonic()
        calls = paced(outage, rate, fetch, server, marks)
        elapsed = time.monotonic() - t0
        time.sleep(0.2)  # let the server count the last resets
        marks.append((calls, server.accepted["down"]))
    stats = budget.statistics() if budget is not None else None
    ttl = round(budget.ttl) if budget is not None else 10
    span = min(ttl, len(marks) - 1)
    return {
        "name": name,
        "calls": calls,
        "attempts": marks[-1][1],
        "whole": per_call(marks, 0, len(marks) - 1),
        # The first ttl seconds spend the credit that healthy traffic left in the budget;
        # after that the budget is in its steady state for an outage.
        "first": per_call(marks, 0, span),
        "last": per_call(marks, len(marks) - 1 - span, len(marks) - 1),
        "rate": calls / elapsed,
        "refusals": stats.refusals if stats else 0,
        "bound": 3.0 if budget is None else 1 + budget.ratio + budget.min_per_second / rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500.0, help="logical calls per second")
    parser.add_argument("--outage", type=float, default=20.0, help="seconds of total outage")
    parser.add_argument("--warmup", type=float, default=10.0, help="healthy seconds first")
    parser.add_argument("--quick", action="store_true", help="6 s outage after 3 s warm-up")
    args = parser.parse_args()
    if args.quick:
        args.outage, args.warmup = 6.0, 3.0
    logging.getLogger("resetguard").setLevel(logging.ERROR)  # thousands of give-ups
    rows = [
        scenario("naive: 3 attempts, no budget", None, args.rate, 0.0, min(args.outage, 10.0)),
        scenario(
            "budget: 20 % + 10/s over 10 s",
            resetguard.RetryBudget("bench"),
            args.rate,
            args.warmup,
            args.outage,
        ),
        scenario(
            "budget: 20 %, no floor",
            resetguard.RetryBudget("bench-nofloor", min_per_second=0),
            args.rate,
            args.warmup,
            args.outage,
        ),
    ]
    print(
        f"outage {args.outage:g} s after {args.warmup:g} s of healthy traffic, "
        f"target rate {args.rate:g} logical calls/s, attempts=3, zero backoff"
    )
    print()
    print(
        "| scenario | logical calls | server-side attempts | attempts/call, whole outage "
        "| first 10 s | last 10 s (steady) | steady-state bound | calls/s achieved "
        "| budget refusals |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['calls']} | {r['attempts']} | {r['whole']:.3f} "
            f"| {r['first']:.3f} | {r['last']:.3f} | {r['bound']:.3f} | {r['rate']:.0f} "
            f"| {r['refusals']} |"
        )


if __name__ == "__main__":
    main()
