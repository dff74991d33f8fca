"""Instructions per request, plain client vs resetguard's, counted by valgrind (callgrind).

Run: .venv/bin/python benchmarks/http_instructions.py [--no-guards] [httpx requests ...]

``--no-guards`` builds resetguard's clients without their per-origin breakers and retry
budget (``HTTPPolicy(breakers=None, budget=False)``): the layer as it was before issue 11
gave every client those defaults.

CPU time on a shared 2-core machine moves by ±10 % between rounds; an instruction count
does not (the same binary and inputs give the same count, whatever else runs). Each client
makes N sequential GETs of a 1 KiB response over one keep-alive connection to a loopback
server in another process (not counted); the count for N = 0 (start-up, 50 warm-up
requests) is subtracted, so what is left is the cost per request. Needs ``valgrind``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 50
REQUESTS = 300
SERVER = (
    "import sys; sys.path.insert(0, sys.argv[1]);"
    "from tests.http._server import FaultServer;"
    "s = FaultServer().start(); print(s.port, flush=True); sys.stdin.read(); s.stop()"
)
LIBRARIES = ("httpx", "requests", "httpx_async", "aiohttp")


def _client(lib: str, mode: str, n: int, url: str) -> None:
    """What runs under valgrind: ``n`` GETs after the warm-up, plain or resetguard
    (``resetguard-noguards``: without the per-origin breakers and the client's budget)."""
    from resetguard.http import HTTPPolicy

    count = WARMUP + n
    policy = HTTPPolicy(breakers=None, budget=False) if mode == "resetguard-noguards" else None
    if lib == "httpx":
        import httpx

        from resetguard.http import Client

        timeout = httpx.Timeout(30.0, connect=5.0)
        with Client(policy=policy) if mode != "plain" else httpx.Client(timeout=timeout) as c:
            for _ in range(count):
                c.get(url)
    elif lib == "requests":
        import requests

        from resetguard.http import Session

        with Session(policy=policy) if mode != "plain" else requests.Session() as s:
            for _ in range(count):
                s.get(url, timeout=(5.0, 30.0))
    elif lib == "httpx_async":
        import httpx

        from resetguard.http import AsyncClient

        async def main() -> None:
            timeout = httpx.Timeout(30.0, connect=5.0)
            plain = mode == "plain"
            client = httpx.AsyncClient(timeout=timeout) if plain else AsyncClient(policy=policy)
            async with client as c:
                for _ in range(count):
                    await c.get(url)

        asyncio.run(main())
    else:
        import aiohttp

        from resetguard.http import RetrySession

        async def amain() -> None:
            if mode != "plain":
                async with RetrySession(policy=policy) as rs:
                    for _ in range(count):
                        async with rs.get(url) as r:
                            await r.read()
                return
            timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=30.0)
            async with aiohttp.ClientSession(timeout=timeout) as s:
                for _ in range(count):
                    async with s.get(url) as r:
                        await r.read()

        asyncio.run(amain())


def _instructions(lib: str, mode: str, n: int, url: str) -> int:
    fd, out = tempfile.mkstemp(suffix=".callgrind")
    os.close(fd)
    try:
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--client",
                lib,
                mode,
                str(n),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
    finally:
        os.unlink(out)
    found = re.search(r"Collected : (\d+)", run.stderr)
    assert found is not None, run.stderr[-2000:]
    return int(found.group(1))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--client"]:
        lib, mode, n, url = argv[1], argv[2], int(argv[3]), argv[4]
        sys.path.insert(0, str(ROOT / "src"))
        _client(lib, mode, n, url)
        return 0
    guards = "--no-guards" not in argv
    argv = [a for a in argv if a != "--no-guards"]
    ours = "resetguard" if guards else "resetguard-noguards"
    libs = argv or list(LIBRARIES)
    unknown = sorted(set(libs) - set(LIBRARIES))
    if unknown:
        print(f"unknown client(s) {unknown}; known: {', '.join(LIBRARIES)}", file=sys.stderr)
        return 2
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/big?size=1024"
        print(f"{REQUESTS} sequential GETs of 1 KiB, instructions per request (callgrind)\n")
        print("| client | plain | resetguard | overhead |")
        print("|---|---:|---:|---:|")
        for lib in libs:
            per = {}
            for mode in ("plain", ours):
                runs = _instructions(lib, mode, REQUESTS, url) - _instructions(lib, mode, 0, url)
                per[mode] = runs / REQUESTS
            ratio = per[ours] / per["plain"] - 1
            print(
                f"| {lib} | {per['plain']:,.0f} | {per[ours]:,.0f} | {ratio:+.2%} |",
                flush=True,
            )
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
