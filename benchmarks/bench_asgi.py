"""Server CPU cost of resetguard.asgi.CancelOnDisconnect on a hello-world request.

Run: python benchmarks/bench_asgi.py [--rounds 15] [--requests 1000]

One uvicorn process per setup (httptools + uvloop, one worker), all started at once.
Round by round, the same load is sent to each setup in turn (the order rotates), and the
server process's CPU time (from /proc/<pid>/schedstat summed over its threads, in ns) is
read before and after. The load: 4 keep-alive connections, one request in flight on each.
Reported: median server CPU µs per request and the overhead against the bare app.

Setups: a raw ASGI hello app and a Starlette hello route, each bare, wrapped by
CancelOnDisconnect, and wrapped with detect_how=False (no FIN/RST probe descriptor).

Then, in this process and without a server, the middleware's own cost per request: the raw
app called with no-op receive/send, bare and wrapped, interleaved (best of 5 x 20000).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the apps


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello"})


def _starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def index(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", index)])


def app_factory(name: str) -> Any:
    from resetguard.asgi import CancelOnDisconnect

    kind, _, variant = name.partition(":")
    base = hello if kind == "raw" else _starlette()
    if variant == "bare":
        return base
    if variant == "guarded":
        return CancelOnDisconnect(base, log=False)
    if variant == "noprobe":
        return CancelOnDisconnect(base, log=False, detect_how=False)
    raise ValueError(name)


# --------------------------------------------------------------------------- the driver

SETUPS = [f"{k}:{v}" for k in ("raw", "starlette") for v in ("bare", "guarded", "noprobe")]
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def cpu_ns(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


async def load(port: int, requests: int, conns: int = 4) -> None:
    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(n):
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(one(requests // conns) for _ in range(conns)))


class Server:
    def __init__(self, setup: str) -> None:
        self.setup = setup
        # Not --fd: uvicorn takes an inherited descriptor for a Unix socket, so accepted
        # connections would miss TCP_NODELAY and every response would wait 40 ms for an ACK.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--factory",
                f"benchmarks.bench_asgi:factory_{setup.replace(':', '_')}",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--http", "httptools", "--loop", "uvloop",
                "--log-level", "warning", "--no-access-log", "--lifespan", "off",
            ],
            env=env, cwd=ROOT,
        )  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                asyncio.run(load(self.port, 4, conns=1))
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.setup} did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


for _setup in SETUPS:
    globals()[f"factory_{_setup.replace(':', '_')}"] = (lambda s: lambda: app_factory(s))(_setup)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    servers = [Server(s) for s in SETUPS]
    try:
        for server in servers:
            server.wait_ready()
        for server in servers:  # warm-up
            asyncio.run(load(server.port, 400))
        per_request: dict[str, list[float]] = {s: [] for s in SETUPS}
        for r in range(args.rounds):
            order = servers[r % len(servers) :] + servers[: r % len(servers)]
            for server in order:
                before = cpu_ns(server.proc.pid)
                asyncio.run(load(server.port, args.requests))
                spent = cpu_ns(server.proc.pid) - before
                per_request[server.setup].append(spent / args.requests / 1000)
    finally:
        for server in servers:
            server.stop()
    print(
        f"server CPU per hello-world request, uvicorn httptools+uvloop; {args.rounds} rounds"
        f" x {args.requests} requests, medians (µs)"
    )
    print(f"{'setup':22s} {'µs/req':>8s} {'min':>7s} {'max':>7s} {'vs bare':>8s}")
    for setup in SETUPS:
        values = per_request[setup]
        median = statistics.median(values)
        bare = statistics.median(per_request[setup.split(":")[0] + ":bare"])
        print(
            f"{setup:22s} {median:8.1f} {min(values):7.1f} {max(values):7.1f}"
            f" {100 * (median / bare - 1):+7.1f}%"
        )


def in_process() -> None:
    from resetguard.asgi import CancelOnDisconnect

    wrapped = CancelOnDisconnect(hello, log=False)
    scope = {"type": "http", "method": "GET", "path": "/", "client": ("127.0.0.1", 1)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def run() -> dict[str, float]:
        best = {"bare": float("inf"), "guarded": float("inf")}
        for _ in range(5):
            for label, app in (("bare", hello), ("guarded", wrapped)):
                start = time.perf_counter_ns()
                for _ in range(20000):
                    await app(scope, receive, send)
                    await asyncio.sleep(0)  # one loop iteration per request, as in a server
                best[label] = min(best[label], (time.perf_counter_ns() - start) / 20000 / 1000)
        return best

    import uvloop

    best = uvloop.run(run())
    print(
        f"in process (uvloop, no server): bare {best['bare']:.2f} µs, guarded"
        f" {best['guarded']:.2f} µs per request: the middleware adds"
        f" {best['guarded'] - best['bare']:.2f} µs"
    )


if __name__ == "__main__":
    main()
    in_process()
