"""Before/after in one process: the in-process breaker and budget of another git revision
(extracted with ``git archive`` and imported as ``resetguard_base``) against the working
tree's ``resetguard``, timed interleaved in the same run so that the machine's load hits
both alike.

Run: PYTHONPATH=src python benchmarks/bench_ab.py [--base REV] [--rounds N]

Rows (+ns per call over the bare call, best of the rounds): ``@breaker`` success,
``@breaker`` failure + success pair, the engine ``@retry(breaker=, budget=, attempts=1)``
success, and ``budget.deposit()`` (absolute).
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from _timing import best_ns

ROOT = Path(__file__).resolve().parent.parent
RESET = ConnectionResetError(104, "Connection reset by peer")


def target() -> int:
    return 1


def load_base(rev: str, into: Path) -> ModuleType:
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src/resetguard"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    (into / "src" / "resetguard").rename(into / "resetguard_base")
    sys.path.insert(0, str(into))
    return importlib.import_module("resetguard_base")


def rows_for(mod: Any) -> dict[str, tuple[Callable[[], Any], bool]]:
    breaker = mod.CircuitBreaker("ab", failure_threshold=10**9)
    budget = mod.RetryBudget("ab")
    engine = mod.retry(breaker=breaker, budget=budget, attempts=1, backoff=mod.Backoff.none())
    guarded = breaker(target)
    state = [0]

    @breaker
    def flaky() -> int:
        state[0] += 1
        if state[0] % 2:
            raise RESET
        return 1

    def pair() -> None:
        try:  # noqa: SIM105 -- the same for both sides
            flaky()
        except ConnectionResetError:
            pass
        flaky()

    return {
        "@breaker success": (guarded, True),
        "@breaker failure + success": (pair, True),
        "engine @retry(breaker, budget) success": (engine(target), True),
        "budget.deposit()": (budget.deposit, False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("-n", type=int, default=100_000, help="calls per timing")
    args = parser.parse_args()
    import resetguard

    with tempfile.TemporaryDirectory() as tmp:
        base = load_base(args.base, Path(tmp))
        sides = {f"base ({args.base})": rows_for(base), "this tree": rows_for(resetguard)}
        bare = min(best_ns(target, args.n) for _ in range(3))
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):
            for side, rows in sides.items():
                for what, (fn, relative) in rows.items():
                    n = args.n // 4 if "failure" in what else args.n
                    cost = best_ns(fn, n) - (bare if relative else 0.0)
                    best[(side, what)] = min(best.get((side, what), float("inf")), cost)
    names = list(sides)
    print(f"\nbare call {bare:.0f} ns; best of {args.rounds} interleaved rounds\n")
    print(f"| ns per call | {names[0]} | {names[1]} |")
    print("|---|---:|---:|")
    for what in sides[names[0]]:
        print(f"| {what} | {best[(names[0], what)]:.0f} | {best[(names[1], what)]:.0f} |")


if __name__ == "__main__":
    main()
