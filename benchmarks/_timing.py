"""The one timing loop the micro-benchmarks share (run as scripts: ``python benchmarks/x.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["best_ns"]


def best_ns(fn: Callable[[], object], n: int, repeats: int = 3) -> float:
    """Nanoseconds per call of ``fn``: the best of ``repeats`` runs of ``n`` calls."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e9
