"""The exactly-once stress (benchmarks/bench_db_exactly_once.py) at a small N: keyed units
through a proxy that resets ~5 % of units, ~40 % of those at COMMIT. Nothing lost,
duplicated or torn; with keys nothing surfaced as unknown; without keys the unknown
outcomes are surfaced and still nothing is duplicated."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.mysql, pytest.mark.slow]

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_db_exactly_once.py"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_db_exactly_once", _PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()
UNITS = 200


@pytest.mark.parametrize("keyed", [True, False], ids=["keys", "no-keys"])
@pytest.mark.parametrize("driver", BENCH.STRESS_DRIVERS)
def test_exactly_once_under_resets(admin: Any, driver: str, keyed: bool) -> None:
    r = BENCH.run_stress(driver, UNITS, keyed=keyed, seed=7)
    assert r["faults"] >= 1, r  # the proxy did reset connections
    assert r["lost"] == 0, r
    assert r["duplicated"] == 0, r
    assert r["torn"] == 0, r
    assert r["failed_but_committed"] == 0, r
    if keyed:
        assert r["unknown"] == 0, r
        assert r["failed"] == 0, r
