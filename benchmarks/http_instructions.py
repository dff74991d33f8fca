"""Instructions per request, plain client vs resetguard's, counted by valgrind (callgrind).

Run: .venv/bin/python benchmarks/http_instructions.py [--no-guards] [--layouts K]
[--src DIR] [httpx requests ...]

``--no-guards`` builds resetguard's clients without their per-origin breakers and retry
budget (``HTTPPolicy(breakers=None, budget=False)``): the layer as it was before issue 11
gave every client those defaults. ``--src`` measures another checkout's ``src/`` with this
same harness (leave ``--no-guards`` out for a source older than issue 11).

CPU time on a shared 2-core machine moves by ±10 % between rounds; an instruction count
does not depend on what else runs. It does depend on the process's type layout (see
``_shift``): each count is taken under ``--layouts`` layouts, with a fixed hash seed, and
the median is reported with its range. Each client makes N sequential GETs of a 1 KiB
response over one keep-alive connection to a loopback server in another process (not
counted); the count for N = 0 (start-up, 50 warm-up requests) is subtracted, so what is
left is the cost per request. Needs ``valgrind``; runs two counts at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
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


#: How many throwaway classes each layout creates before the client starts (see _shift).
SHIFTS = (0, 7, 19, 41, 67, 89, 113, 151, 199)


def _shift(count: int) -> list[type]:
    """Move every type's version tag by ``count`` before the client imports anything.

    CPython caches attribute lookups on types in a 4,096-entry table indexed by the
    type's version tag (handed out in order of first lookup) and the name's hash. Which
    hot lookups of a run collide there, and miss, depends on how many types were looked
    up first, so one count alone carries a layout bias of about ±8,000 instructions per
    request; a change that only imports one more module moves it. Counting under several
    layouts and taking the median measures the code rather than its luck.
    """
    kept = []
    for i in range(count):
        cls = type(f"_Layout{i}", (), {"x": i})
        cls().x  # noqa: B018 - the lookup is what hands the class its version tag
        kept.append(cls)
    return kept


def _instructions(lib: str, mode: str, n: int, url: str, shift: int, src: Path) -> int:
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
                str(shift),
                str(src),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same string hashes every run
        )
    finally:
        os.unlink(out)
    found = re.search(r"Collected : (\d+)", run.stderr)
    assert found is not None, run.stderr[-2000:]
    return int(found.group(1))


def _per_request(lib: str, mode: str, url: str, shift: int, src: Path) -> float:
    """Instructions per request under one layout: ``REQUESTS`` GETs less start-up."""
    full = _instructions(lib, mode, REQUESTS, url, shift, src)
    return (full - _instructions(lib, mode, 0, url, shift, src)) / REQUESTS


def main(argv: list[str]) -> int:
    if argv[:1] == ["--client"]:
        lib, mode, n, url, shift, src = argv[1:7]
        kept = _shift(int(shift))  # noqa: F841 - the classes must outlive the run
        sys.path.insert(0, src)
        _client(lib, mode, int(n), url)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("libs", nargs="*", metavar="client", help=", ".join(LIBRARIES))
    parser.add_argument(
        "--no-guards",
        action="store_true",
        help="resetguard's clients without their per-origin breakers and budget",
    )
    parser.add_argument(
        "--layouts",
        type=int,
        default=5,
        help=f"type layouts to count under, median reported (1 to {len(SHIFTS)}; default 5)",
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=ROOT / "src",
        help="the resetguard source to measure (another checkout's src/, to compare)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.libs) - set(LIBRARIES))
    if unknown:
        parser.error(f"unknown client(s) {unknown}; known: {', '.join(LIBRARIES)}")
    if not 1 <= args.layouts <= len(SHIFTS):
        parser.error(f"--layouts must be 1 to {len(SHIFTS)}, got {args.layouts}")
    if not (args.src / "resetguard" / "__init__.py").is_file():
        parser.error(f"--src {args.src} holds no resetguard package")
    ours = "resetguard-noguards" if args.no_guards else "resetguard"
    shifts = SHIFTS[: args.layouts]
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/big?size=1024"
        print(
            f"{REQUESTS} sequential GETs of 1 KiB, instructions per request (callgrind), "
            f"median of {len(shifts)} layout(s) [min, max]; source {args.src}\n"
        )
        print("| client | plain | resetguard | overhead | overhead per layout |")
        print("|---|---:|---:|---:|---|")
        # callgrind runs one thread: one run per core
        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            for lib in args.libs or LIBRARIES:
                runs = {
                    mode: [pool.submit(_per_request, lib, mode, url, s, args.src) for s in shifts]
                    for mode in ("plain", ours)
                }
                per = {mode: [f.result() for f in futures] for mode, futures in runs.items()}
                ratios = [b / a - 1 for a, b in zip(per["plain"], per[ours], strict=True)]
                plain, mine = statistics.median(per["plain"]), statistics.median(per[ours])
                print(
                    f"| {lib} | {plain:,.0f} [{min(per['plain']):,.0f}, "
                    f"{max(per['plain']):,.0f}] | {mine:,.0f} [{min(per[ours]):,.0f}, "
                    f"{max(per[ours]):,.0f}] | {mine / plain - 1:+.2%} "
                    f"| {', '.join(f'{r:+.2%}' for r in ratios)} |",
                    flush=True,
                )
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
