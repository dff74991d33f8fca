"""The demo's workload: four failure causes, the same requests through each client."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._server import FlakyServer

__all__ = ["CLIENTS", "SCENARIOS", "ClientResult", "Scenario", "run_scenario"]


class DemoClient(Protocol):
    def request(self, method: str, path: str, headers: dict[str, str]) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One failure cause: how the server misbehaves and how requests are paced."""

    key: str
    title: str
    requests: int
    spacing: tuple[float, float]
    server: dict[str, Any] = field(default_factory=dict)
    restart_at: float | None = None  # seconds into the run
    restart_for: float = 0.0
    dead: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="idle",
        title="stale keep-alive (server closes idle connections after 150 ms)",
        requests=30,
        spacing=(0.12, 0.18),
        server={"idle_close": 0.15, "lateness": 0.03},
    ),
    Scenario(
        key="rst",
        title="random resets (10 % of requests RST, half after running)",
        requests=60,
        spacing=(0.005, 0.015),
        server={"rst_rate": 0.10},
    ),
    Scenario(
        key="restart",
        title="server restart (refuses connections for 0.8 s)",
        requests=40,
        spacing=(0.03, 0.05),
        restart_at=0.4,
        restart_for=0.8,
    ),
    Scenario(
        key="outage",
        title="dead dependency (every request reset)",
        requests=30,
        spacing=(0.03, 0.05),
        dead=True,
    ),
)


@dataclass(slots=True)
class ClientResult:
    """What one client experienced in one scenario, and what the server saw."""

    client: str
    scenario: str
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    server_attempts: int = 0
    duplicates: int = 0
    race_hits: int = 0
    unsafe_errors: int = 0  # errors on POSTs without Idempotency-Key: outcome unknown
    error_types: dict[str, int] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]

    @property
    def attempts_per_request(self) -> float:
        return self.server_attempts / self.requests if self.requests else 0.0


def _workload(scenario: Scenario, seed: int) -> list[tuple[str, str, dict[str, str], float]]:
    """The same request list (method, path, headers, wait before) for every client."""
    rng = random.Random(seed)
    plan = []
    for i in range(scenario.requests):
        wait = rng.uniform(*scenario.spacing)
        if rng.random() < 0.3:
            headers = {"X-Request-Id": str(uuid.UUID(int=rng.getrandbits(128)))}
            if rng.random() < 0.5:
                headers["Idempotency-Key"] = headers["X-Request-Id"]
            plan.append(("POST", "/orders", headers, wait))
        else:
            plan.append(("GET", f"/items/{i}", {}, wait))
    return plan


def run_scenario(
    scenario: Scenario,
    client_name: str,
    make_client: Callable[[str], DemoClient],
    *,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> ClientResult:
    """Run the scenario's workload through one client against its own fresh server."""
    result = ClientResult(client=client_name, scenario=scenario.key)
    with FlakyServer(seed=seed, **scenario.server) as server:
        server.dead = scenario.dead
        client = make_client(server.url)
        restarter = None
        if scenario.restart_at is not None:
            restarter = threading.Timer(
                scenario.restart_at, _restart, (server, scenario.restart_for)
            )
            restarter.daemon = True
            restarter.start()
        try:
            for n, (method, path, headers, wait) in enumerate(_workload(scenario, seed)):
                time.sleep(wait)
                started = time.perf_counter()
                try:
                    client.request(method, path, headers)
                except Exception as exc:  # the demo counts what reaches the caller
                    result.errors += 1
                    if method == "POST" and "Idempotency-Key" not in headers:
                        result.unsafe_errors += 1
                    name = type(exc).__name__
                    result.error_types[name] = result.error_types.get(name, 0) + 1
                result.latencies.append(time.perf_counter() - started)
                result.requests += 1
                if progress is not None:
                    progress(n + 1)
        finally:
            if restarter is not None:
                restarter.cancel()
                restarter.join(5)
            client.close()
        stats = server.stats
        result.server_attempts = stats.requests + stats.race_hits
        result.duplicates = stats.duplicates()
        result.race_hits = stats.race_hits
    return result


def _restart(server: FlakyServer, duration: float) -> None:
    server.down()
    time.sleep(duration)
    server.up()


# --------------------------------------------------------------------------- clients


class _HttpxPlain:
    def __init__(self, base_url: str) -> None:
        import httpx

        self._client = httpx.Client(base_url=base_url, timeout=5.0)

    def request(self, method: str, path: str, headers: dict[str, str]) -> int:
        response = self._client.request(method, path, headers=headers)
        return response.status_code

    def close(self) -> None:
        self._client.close()


class _HttpxNaiveRetry(_HttpxPlain):
    """What people write from the playbook: retry any transport error 3 times, any method."""

    def request(self, method: str, path: str, headers: dict[str, str]) -> int:
        import httpx

        for attempt in range(3):
            try:
                return super().request(method, path, headers)
            except httpx.TransportError:
                if attempt == 2:
                    raise
                time.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")


class _ResetGuard:
    """resetguard's httpx client with its defaults: nothing tuned for the demo."""

    def __init__(self, base_url: str) -> None:
        from resetguard import http as rg_http

        # The defaults ride out the restart (patience for a server that refuses
        # connections) and cut the outage short (the origin's breaker and the client's
        # retry budget); only the request timeout matches the other clients'.
        self._client = rg_http.Client(base_url=base_url, timeout=5.0)

    def request(self, method: str, path: str, headers: dict[str, str]) -> int:
        response = self._client.request(method, path, headers=headers)
        return int(response.status_code)

    def close(self) -> None:
        self._client.close()


CLIENTS: tuple[tuple[str, Callable[[str], DemoClient]], ...] = (
    ("httpx", _HttpxPlain),
    ("httpx + naive retry", _HttpxNaiveRetry),
    ("resetguard", _ResetGuard),
)
