"""Throughput of resetguard's HTTP clients vs the plain clients, loopback, no faults.

Run: .venv/bin/python benchmarks/http_overhead.py [--requests N] [--rounds R] [--no-guards]

The server (tests/http/_server.py, no faults) runs in a separate process so it does not
share the client's GIL. Each pair (plain, resetguard) runs alternately R rounds of N
sequential GETs of a 1 KiB response over one keep-alive connection. Reported: best
requests/s of the rounds,
the client process's CPU time per request (min of the rounds), and the overhead as the
median (and interquartile range) of the per-round ratios resetguard/plain: the two runs of
a round are back to back, so a shared machine's changing load mostly cancels out.
Target: <= 3 % slower. ``--no-guards`` builds resetguard's clients without their per-origin
breakers and retry budget (``HTTPPolicy(breakers=None, budget=False)``), to see what those
defaults cost.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import requests  # noqa: E402

from resetguard.http import HTTPPolicy  # noqa: E402
from resetguard.http._aiohttp import RetrySession  # noqa: E402
from resetguard.http._httpx import AsyncClient, Client  # noqa: E402
from resetguard.http._requests import Session  # noqa: E402

# The plain clients get the same timeouts as resetguard's defaults: a socket timeout costs
# a poll() per read, which is the price of having a timeout, not of resetguard.
HTTPX_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
AIOHTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=30.0)


class _PlainSession(requests.Session):
    def send(self, request: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = (5.0, 30.0)
        return super().send(request, **kwargs)


SERVER = (
    "import sys, time; sys.path.insert(0, sys.argv[1]);"
    "from tests.http._server import FaultServer;"
    "s = FaultServer().start(); print(s.port, flush=True);"
    "sys.stdin.read(); s.stop()"
)


Sample = tuple[float, float]  # (requests per second, client CPU µs per request)


def _sync(make: Callable[[], Any], n: int, url: str) -> Sample:
    client = make()
    try:
        client.get(url)  # connect outside the timing
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            client.get(url)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return n / wall, cpu / n * 1e6
    finally:
        client.close()


def _async(make: Callable[[], Any], n: int, url: str, *, aiohttp_style: bool) -> Sample:
    async def main() -> Sample:
        client = make()
        try:

            async def one() -> None:
                if aiohttp_style:
                    async with client.get(url) as r:
                        await r.read()
                else:
                    await client.get(url)  # these read the whole body before returning

            await one()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                await one()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            return n / wall, cpu / n * 1e6
        finally:
            if hasattr(client, "aclose"):
                await client.aclose()
            else:
                await client.close()

    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--path", default="/big?size=1024", help="what each GET asks for (default: 1 KiB)"
    )
    parser.add_argument(
        "--only", help="comma-separated clients: requests,httpx,httpx async,aiohttp"
    )
    parser.add_argument(
        "--no-guards",
        action="store_true",
        help="resetguard's clients without their per-origin breakers and budget",
    )
    args = parser.parse_args()
    policy = HTTPPolicy(breakers=None, budget=False) if args.no_guards else HTTPPolicy()
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be >= 1")
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}{args.path}"
        n = args.requests
        pairs: list[tuple[str, Callable[[], Sample], Callable[[], Sample]]] = [
            (
                "requests",
                lambda: _sync(_PlainSession, n, url),
                lambda: _sync(lambda: Session(policy=policy), n, url),
            ),
            (
                "httpx",
                lambda: _sync(lambda: httpx.Client(timeout=HTTPX_TIMEOUT), n, url),
                lambda: _sync(lambda: Client(policy=policy), n, url),
            ),
            (
                "httpx async",
                lambda: _async(
                    lambda: httpx.AsyncClient(timeout=HTTPX_TIMEOUT), n, url, aiohttp_style=False
                ),
                lambda: _async(lambda: AsyncClient(policy=policy), n, url, aiohttp_style=False),
            ),
            (
                "aiohttp",
                lambda: _async(
                    lambda: aiohttp.ClientSession(timeout=AIOHTTP_TIMEOUT),
                    n,
                    url,
                    aiohttp_style=True,
                ),
                lambda: _async(lambda: RetrySession(policy=policy), n, url, aiohttp_style=False),
            ),
        ]
        guards = "without" if args.no_guards else "with"
        print(
            f"{n} sequential GETs per round, {args.rounds} rounds, alternating; "
            f"resetguard {guards} its per-origin breakers and budget\n"
        )
        print(
            "| client | plain req/s (best) | resetguard req/s (best) "
            "| plain CPU µs/req (min) | resetguard CPU µs/req (min) "
            "| CPU overhead, median of paired rounds [IQR] |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        if args.only:
            wanted = set(args.only.split(","))
            pairs = [p for p in pairs if p[0] in wanted]
        for name, plain, ours in pairs:
            a: list[Sample] = []
            b: list[Sample] = []
            for i in range(args.rounds):
                # alternate which one goes first, so neither always runs on a warmer cache
                if i % 2:
                    b.append(ours())
                    a.append(plain())
                else:
                    a.append(plain())
                    b.append(ours())
            ratios = sorted(y[1] / x[1] - 1 for x, y in zip(a, b, strict=True))
            q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            print(
                f"| {name} | {max(x[0] for x in a):,.0f} | {max(x[0] for x in b):,.0f} "
                f"| {min(x[1] for x in a):,.0f} | {min(x[1] for x in b):,.0f} "
                f"| {q[1] * 100:+.1f} % [{q[0] * 100:+.1f}, {q[2] * 100:+.1f}] |",
                flush=True,
            )
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
