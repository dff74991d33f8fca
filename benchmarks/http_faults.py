"""HTTP clients under connection faults: errors surfaced, duplicates, executions, latency.

Run: .venv/bin/python benchmarks/http_faults.py [--quick] [--json FILE]

Every client runs the same workloads against the same loopback fault server (tests/http/
_server.py), in one run:

  plain requests · requests + urllib3 Retry · resetguard Session
  plain httpx    · httpx-retries           · resetguard Client
  plain aiohttp  · aiohttp-retry           · resetguard RetrySession

Scenarios (GET and POST alternate; every request carries a unique X-Req-Id):
  race-fin / race-rst   server closes keep-alive connections idle 100 ms (FIN / RST);
                        requests are seen 25 ms late, spaced 50-100 ms: the stale race
  rst-10%               server RSTs 10 % of requests after executing them
  mid-body              GET only: the first response of each request breaks mid-body (RST)
  restart               server restarted (300 ms down) while requests flow every 20 ms
  outage                nothing listens: 20 GETs (resetguard with a breaker)

Reported per client: errors surfaced (GET / POST), POST executed twice ("dup"), server
executions per logical request, p50 / p99 latency, and how often the race fired.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import socket
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import httpx_retries  # noqa: E402
import requests  # noqa: E402
from aiohttp_retry import ExponentialRetry, RetryClient  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402
from tests.http._server import FaultServer  # noqa: E402
from urllib3.util.retry import Retry as Urllib3Retry  # noqa: E402

from resetguard import Backoff, CircuitBreaker, Retry  # noqa: E402
from resetguard.http import HTTPPolicy  # noqa: E402
from resetguard.http._aiohttp import RetrySession  # noqa: E402
from resetguard.http._httpx import Client  # noqa: E402
from resetguard.http._requests import Session  # noqa: E402

logging.getLogger("resetguard").setLevel(logging.ERROR)
logging.getLogger("aiohttp_retry").setLevel(logging.ERROR)
logging.getLogger("urllib3").setLevel(logging.ERROR)

# The same schedule for every retrying client: 3 attempts, 0.1 s doubling backoff.
ATTEMPTS = 3


@dataclass
class Result:
    client: str
    scenario: str
    get_errors: int = 0
    post_errors: int = 0
    post_dups: int = 0
    executions_per_request: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    race_hits: int = 0
    requests: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)


# --------------------------------------------------------------------------- clients
# Each factory returns (send, close) where send(method, url, headers, body) raises on error.


def plain_requests() -> Any:
    s = requests.Session()
    return lambda m, u, h, b: s.request(m, u, headers=h, data=b, timeout=(5, 30)), s.close


def requests_urllib3_retry() -> Any:
    s = requests.Session()
    retry = Urllib3Retry(
        total=ATTEMPTS - 1, backoff_factor=0.1, status_forcelist=[429, 502, 503, 504]
    )
    s.mount("http://", HTTPAdapter(max_retries=retry))
    return lambda m, u, h, b: s.request(m, u, headers=h, data=b, timeout=(5, 30)), s.close


def rg_requests(breaker: bool = False) -> Any:
    s = Session(policy=_policy(breaker))
    return lambda m, u, h, b: s.request(m, u, headers=h, data=b), s.close


def plain_httpx() -> Any:
    c = httpx.Client()
    return lambda m, u, h, b: c.request(m, u, headers=h, content=b).read(), c.close


def httpx_retries_client() -> Any:
    retry = httpx_retries.Retry(total=ATTEMPTS - 1, backoff_factor=0.1)
    c = httpx.Client(transport=httpx_retries.RetryTransport(retry=retry))
    return lambda m, u, h, b: c.request(m, u, headers=h, content=b).read(), c.close


def rg_httpx(breaker: bool = False) -> Any:
    c = Client(policy=_policy(breaker))
    return lambda m, u, h, b: c.request(m, u, headers=h, content=b), c.close


def _policy(breaker: bool) -> HTTPPolicy:
    retry = Retry(attempts=ATTEMPTS, backoff=Backoff(initial=0.1), deadline=10)
    if breaker:
        retry = Retry(
            attempts=ATTEMPTS,
            backoff=Backoff(initial=0.1),
            deadline=10,
            breaker=CircuitBreaker("bench", failure_threshold=5),
        )
    return HTTPPolicy(retry=retry)


class _Loop:
    """Runs an aiohttp client on a private event loop thread, called synchronously."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = self.run(self._make(make))

    async def _make(self, make: Callable[[], Any]) -> Any:
        return make()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self, closer: Callable[[], Any]) -> None:
        self.run(closer())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


def plain_aiohttp() -> Any:
    lp = _Loop(aiohttp.ClientSession)

    async def send(m: str, u: str, h: dict[str, str], b: bytes | None) -> None:
        async with lp.client.request(m, u, headers=h, data=b) as r:
            await r.read()

    return lambda m, u, h, b: lp.run(send(m, u, h, b)), lambda: lp.close(lp.client.close)


def aiohttp_retry_client() -> Any:
    lp = _Loop(
        lambda: RetryClient(retry_options=ExponentialRetry(attempts=ATTEMPTS, start_timeout=0.1))
    )

    async def send(m: str, u: str, h: dict[str, str], b: bytes | None) -> None:
        async with lp.client.request(m, u, headers=h, data=b) as r:
            await r.read()

    return lambda m, u, h, b: lp.run(send(m, u, h, b)), lambda: lp.close(lp.client.close)


def rg_aiohttp(breaker: bool = False) -> Any:
    lp = _Loop(lambda: RetrySession(policy=_policy(breaker)))

    async def send(m: str, u: str, h: dict[str, str], b: bytes | None) -> None:
        await lp.client.request(m, u, headers=h, data=b)

    return lambda m, u, h, b: lp.run(send(m, u, h, b)), lambda: lp.close(lp.client.close)


CLIENTS: dict[str, Callable[..., Any]] = {
    "requests": plain_requests,
    "requests+urllib3.Retry": requests_urllib3_retry,
    "resetguard Session": rg_requests,
    "httpx": plain_httpx,
    "httpx-retries": httpx_retries_client,
    "resetguard Client": rg_httpx,
    "aiohttp": plain_aiohttp,
    "aiohttp-retry": aiohttp_retry_client,
    "resetguard RetrySession": rg_aiohttp,
}
RESETGUARD = {"resetguard Session", "resetguard Client", "resetguard RetrySession"}


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    name: str
    server: dict[str, Any]
    n: int
    gap: tuple[float, float] = (0.0, 0.0)
    methods: tuple[str, ...] = ("GET", "POST")
    path: str = "/ok"
    restart: bool = False
    outage: bool = False


def scenarios(quick: bool) -> list[Scenario]:
    k = 0.5 if quick else 1.0
    race = {"idle_close": 0.1, "read_delay": 0.025}
    return [
        Scenario("race-fin", race, int(40 * k), gap=(0.05, 0.1)),
        Scenario("race-rst", {**race, "idle_rst": True}, int(40 * k), gap=(0.05, 0.1)),
        Scenario("rst-10%", {"rst_rate": 0.1, "seed": 11}, int(80 * k)),
        Scenario("mid-body", {}, int(20 * k), methods=("GET",), path="/midbody"),
        Scenario("restart", {}, int(50 * k), gap=(0.02, 0.02), restart=True),
        Scenario("outage", {}, int(20 * k), methods=("GET",), outage=True),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_one(client: str, sc: Scenario, seed: int) -> Result:
    res = Result(client=client, scenario=sc.name)
    factory = CLIENTS[client]
    send, close = factory(True) if (sc.outage and client in RESETGUARD) else factory()
    srv = FaultServer(**sc.server)
    if not sc.outage:
        srv.start()
        base = srv.url
    else:
        base = f"http://127.0.0.1:{_free_port()}"
    timer = None
    if sc.restart:
        timer = threading.Timer(0.3, srv.restart, kwargs={"downtime": 0.3})
        timer.start()
    rnd = random.Random(seed)
    ids: dict[str, str] = {}
    try:
        for i in range(sc.n):
            method = sc.methods[i % len(sc.methods)]
            rid = uuid.uuid4().hex
            ids[rid] = method
            body = b"payload" if method == "POST" else None
            t0 = time.perf_counter()
            try:
                response = send(method, base + sc.path, {"X-Req-Id": rid}, body)
                status = getattr(response, "status_code", getattr(response, "status", 200))
                if isinstance(status, int) and status >= 500:
                    raise RuntimeError(f"HTTP {status}")
            except Exception:
                if method == "GET":
                    res.get_errors += 1
                else:
                    res.post_errors += 1
            res.latencies.append(time.perf_counter() - t0)
            pause = rnd.uniform(*sc.gap)
            if pause:
                time.sleep(pause)
    finally:
        if timer is not None:
            timer.join(timeout=10)
        close()
        if not sc.outage:
            srv.stop()
    res.requests = sc.n
    if not sc.outage:
        executed = [srv.executions[r] for r in ids]
        res.executions_per_request = sum(executed) / len(executed)
        res.post_dups = sum(1 for r, m in ids.items() if m == "POST" and srv.executions[r] > 1)
        res.race_hits = srv.race_hits
    lat = sorted(res.latencies)
    res.p50_ms = statistics.median(lat) * 1000
    res.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    return res


def table(results: list[Result]) -> str:
    lines = []
    for name in dict.fromkeys(r.scenario for r in results):
        lines.append(f"\n**{name}**\n")
        lines.append(
            "| client | GET errors | POST errors | POST dup | exec/request "
            "| p50 ms | p99 ms | race hits |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            if r.scenario != name:
                continue
            lines.append(
                f"| {r.client} | {r.get_errors} | {r.post_errors} | {r.post_dups} | "
                f"{r.executions_per_request:.2f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
                f"| {r.race_hits} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="half the requests per scenario")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--only", help="comma-separated scenario names")
    args = parser.parse_args()
    chosen = scenarios(args.quick)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s.name for s in chosen}
        if unknown:
            parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        chosen = [s for s in chosen if s.name in wanted]
    results = []
    for i, sc in enumerate(chosen):
        for client in CLIENTS:
            r = run_one(client, sc, seed=100 + i)
            results.append(r)
            print(
                f"{sc.name:9} {client:24} GET err {r.get_errors:3} POST err {r.post_errors:3} "
                f"dup {r.post_dups:2} exec {r.executions_per_request:.2f} "
                f"p50 {r.p50_ms:7.1f} p99 {r.p99_ms:7.1f} hits {r.race_hits}",
                file=sys.stderr,
                flush=True,
            )
    print(table(results))
    if args.json:
        payload = [{k: v for k, v in asdict(r).items() if k != "latencies"} for r in results]
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
