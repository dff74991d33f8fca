"""The ``resetguard demo`` sub-command."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any, TextIO

from ._scenarios import CLIENTS, SCENARIOS, ClientResult, Scenario, run_scenario

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="show resets absorbed safely, side by side with plain clients",
        description=(
            "Start local servers that fail like production ones (idle keep-alive close, "
            "random resets, a restart, a dead dependency), run the same requests through "
            "plain httpx, httpx with a naive retry loop, and resetguard, and compare."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[s.key for s in SCENARIOS],
        help="run only this scenario (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=7, help="workload seed (default 7)")


def run(args: argparse.Namespace) -> int:
    try:
        import httpx  # noqa: F401
    except ModuleNotFoundError:
        from ..cli import UsageError

        raise UsageError("the demo needs httpx: pip install 'resetguard[all]'") from None
    chosen = [s for s in SCENARIOS if not args.scenario or s.key in args.scenario]
    out = sys.stdout
    live = sys.stderr.isatty() and not args.json
    if not args.json:
        total = sum(s.requests for s in chosen)
        out.write(
            f"resetguard demo: {total} requests per client against local servers that fail "
            "like production ones\n\n"
        )
        out.flush()
    started = time.monotonic()
    results: list[ClientResult] = []
    for scenario in chosen:
        results.extend(_run_clients(scenario, args.seed, live, sys.stderr, quiet=args.json))
    elapsed = time.monotonic() - started
    if args.json:
        json.dump(_as_json(chosen, results, elapsed), out, indent=2)
        out.write("\n")
    else:
        out.write(_table(chosen, results))
        out.write(_summary(results, elapsed))
    return 0


def _run_clients(
    scenario: Scenario, seed: int, live: bool, err: TextIO, *, quiet: bool
) -> list[ClientResult]:
    done = {name: 0 for name, _ in CLIENTS}
    results: dict[str, ClientResult] = {}
    lock = threading.Lock()

    def progress(name: str) -> Any:
        def update(n: int) -> None:
            with lock:
                done[name] = n
                if live:
                    line = " · ".join(f"{k} {v}/{scenario.requests}" for k, v in done.items())
                    err.write(f"\r  {scenario.key:<8} {line}   ")
                    err.flush()

        return update

    def work(name: str, factory: Any) -> None:
        results[name] = run_scenario(scenario, name, factory, seed=seed, progress=progress(name))

    if not quiet:
        err.write(f"- {scenario.title}\n")
        err.flush()
    threads = [threading.Thread(target=work, args=(name, f), daemon=True) for name, f in CLIENTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if live:
        err.write("\r" + " " * 100 + "\r")
        err.flush()
    missing = [name for name, _ in CLIENTS if name not in results]
    if missing:
        raise RuntimeError(f"demo client(s) did not finish: {', '.join(missing)}")
    return [results[name] for name, _ in CLIENTS]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _table(scenarios: list[Scenario], results: list[ClientResult]) -> str:
    header = (
        f"{'scenario':<12}{'client':<22}{'errors':>10}{'of them POST?':>15}{'dup POSTs':>11}"
        f"{'server load':>13}{'p50':>11}{'p99':>11}\n"
    )
    lines = ["", header, "-" * (len(header) - 1) + "\n"]
    for scenario in scenarios:
        first = True
        for r in (r for r in results if r.scenario == scenario.key):
            label = scenario.key if first else ""
            first = False
            lines.append(
                f"{label:<12}{r.client:<22}{f'{r.errors}/{r.requests}':>10}"
                f"{r.unsafe_errors:>15}{r.duplicates:>11}"
                f"{f'{r.attempts_per_request:.2f}x':>13}{_ms(r.percentile(0.5)):>11}"
                f"{_ms(r.percentile(0.99)):>11}\n"
            )
    lines.append(
        "\nerrors: failures that reached the caller. POST?: of those, POSTs without an "
        "Idempotency-Key\nthat may have run (outcome unknown: never replayed by resetguard). "
        "dup POSTs: orders the server\nran twice. server load: requests the server received "
        "per request made.\n"
    )
    return "".join(lines)


def _summary(results: list[ClientResult], elapsed: float) -> str:
    """Two sentences: failures a caller saw while the server lived, load while it was dead."""
    alive: dict[str, list[int]] = {}
    for r in results:
        if r.scenario != "outage":
            errors, unsafe, dups = alive.setdefault(r.client, [0, 0, 0])
            alive[r.client] = [errors + r.errors, unsafe + r.unsafe_errors, dups + r.duplicates]
    lines = []
    if alive:
        lines.append("While the servers lived:")
        lines.extend(
            f"  {name:<22}{e:>3} errors ({u} POSTs with an unknown outcome), {d} duplicated POSTs"
            for name, (e, u, d) in alive.items()
        )
    outage = [r for r in results if r.scenario == "outage"]
    if outage:
        parts = [f"{r.client} {r.attempts_per_request:.2f}x" for r in outage]
        lines.append("Load sent to the dead dependency per request: " + ", ".join(parts) + ".")
    lines.append(f"Done in {elapsed:.1f} s; every server stopped.")
    return "\n" + "\n".join(lines) + "\n"


def _as_json(
    scenarios: list[Scenario], results: list[ClientResult], elapsed: float
) -> dict[str, Any]:
    return {
        "elapsed_s": round(elapsed, 3),
        "scenarios": [
            {
                "key": s.key,
                "title": s.title,
                "clients": [
                    {
                        "client": r.client,
                        "requests": r.requests,
                        "errors": r.errors,
                        "error_types": r.error_types,
                        "errors_on_unkeyed_posts": r.unsafe_errors,
                        "duplicated_posts": r.duplicates,
                        "server_attempts": r.server_attempts,
                        "server_attempts_per_request": round(r.attempts_per_request, 3),
                        "keepalive_race_hits": r.race_hits,
                        "p50_ms": round(r.percentile(0.5) * 1000, 3),
                        "p99_ms": round(r.percentile(0.99) * 1000, 3),
                    }
                    for r in results
                    if r.scenario == s.key
                ],
            }
            for s in scenarios
        ],
    }
