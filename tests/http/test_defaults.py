"""The HTTP clients' defaults against real loopback servers: restarts ridden out, outages
cut short by the per-origin breaker, recovery, and other origins unaffected.

Real time (restarts take seconds): these are the slowest HTTP tests.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

import resetguard
from resetguard import CircuitState
from resetguard.http import AsyncClient, Client

from ._server import FaultServer

pytestmark = pytest.mark.slow


class _Attempts:
    """Counts the attempts that failed, by origin, from the engine's events."""

    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, event: resetguard.Event) -> None:
        if isinstance(event, resetguard.AttemptFailed):
            self.failed += 1


def _restarts(
    srv: FaultServer, times: int, downtime: float, up: float
) -> tuple[threading.Thread, list[float]]:
    """Restart ``srv`` ``times`` times, each refusing connections for ``downtime`` seconds
    (stopping the server's threads counts in the downtime, so it stays ``downtime``), with
    ``up`` seconds of service before each.

    ``up`` stays at 2 s: an origin's breaker, open by the end of a restart, probes after
    open periods of up to 1.7 s by then, so a server back for less than that between two
    restarts can go unseen, and the two restarts are one outage of more than 4 s to the
    client (0.5 s between them surfaced an error about once in three loaded runs)."""

    def run() -> None:
        for _ in range(times):
            time.sleep(up)
            down = time.monotonic()
            srv.stop()
            time.sleep(max(0.0, downtime - (time.monotonic() - down)))
            srv.start()
            outages.append(time.monotonic() - down)

    outages: list[float] = []
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outages


def test_sync_client_rides_out_two_second_restarts() -> None:
    errors: list[BaseException] = []
    done = 0
    with FaultServer() as srv, Client() as client:
        restarts, outages = _restarts(srv, times=2, downtime=2.0, up=2.0)
        deadline = time.monotonic() + 20
        while restarts.is_alive() and time.monotonic() < deadline:
            try:
                assert client.get(srv.url + "/ok").status_code == 200
                done += 1
            except httpx.HTTPError as exc:
                errors.append(exc)
            time.sleep(0.02)
        restarts.join(timeout=10)
    assert errors == []
    assert done > 10
    assert len(outages) == 2
    assert all(o < 2.3 for o in outages), outages  # the restarts were 2 s ones


def test_async_client_rides_out_two_second_restarts() -> None:
    errors: list[BaseException] = []

    async def main(srv: FaultServer) -> int:
        done = 0
        restarts, outages = _restarts(srv, times=2, downtime=2.0, up=2.0)
        deadline = time.monotonic() + 20
        async with AsyncClient() as client:
            while restarts.is_alive() and time.monotonic() < deadline:
                try:
                    response = await client.get(srv.url + "/ok")
                    assert response.status_code == 200
                    done += 1
                except httpx.HTTPError as exc:
                    errors.append(exc)
                await asyncio.sleep(0.02)
        restarts.join(timeout=10)
        assert len(outages) == 2
        assert all(o < 2.3 for o in outages), outages  # the restarts were 2 s ones
        return done

    with FaultServer() as srv:
        done = asyncio.run(main(srv))
    assert errors == []
    assert done > 10


@pytest.mark.parametrize("outage", ["refused", "rst"])
def test_an_outage_is_cut_short_per_origin_and_recovers(outage: str) -> None:
    counter = _Attempts()
    with FaultServer() as dead, FaultServer() as other, Client() as client:
        origin = f"127.0.0.1:{dead.port}"
        for _ in range(10):
            assert client.get(dead.url + "/ok").status_code == 200
        if outage == "refused":
            dead.stop()
        else:
            dead.rst_rate = 1.0  # every request: executed, then the connection is RST
        connections_before = dead.connections
        resetguard.add_hook(counter)
        other_errors = 0
        failed = 0
        try:
            for _ in range(25):
                try:
                    client.get(dead.url + "/ok")
                except (httpx.HTTPError, resetguard.CircuitOpen):
                    failed += 1
                try:
                    assert client.get(other.url + "/ok").status_code == 200
                except httpx.HTTPError:
                    other_errors += 1
        finally:
            resetguard.remove_hook(counter)
        assert failed == 25
        assert other_errors == 0  # the other origin has a breaker of its own
        # refused: every attempt at the dead origin failed; rst: each one was a connection
        refused = outage == "refused"
        attempts = counter.failed if refused else dead.connections - connections_before
        print(f"{outage}: {attempts / 25:.2f} attempts per request")
        assert attempts <= 1.5 * 25, attempts
        breaker = client.retry_transport.guards.breaker(origin)
        assert breaker is not None
        assert breaker.state is CircuitState.OPEN
        assert (
            client.retry_transport.guards.states()[f"127.0.0.1:{other.port}"] is CircuitState.CLOSED
        )
        # the outage ends: service resumes within the breaker's open period
        if outage == "refused":
            dead.start()
        else:
            dead.rst_rate = 0.0
        opened_for = breaker.statistics().retry_after or 0.0
        ended = time.monotonic()
        recovered = None
        while time.monotonic() - ended < opened_for + 5.0:
            try:
                client.get(dead.url + "/ok")
            except (httpx.HTTPError, resetguard.CircuitOpen):
                time.sleep(0.05)
                continue
            recovered = time.monotonic() - ended
            break
        assert recovered is not None
        print(f"{outage}: recovered {recovered:.2f} s after the end (open for {opened_for:.2f} s)")
        assert recovered <= opened_for + 0.5, (recovered, opened_for)


def test_every_client_has_its_own_budget_and_per_origin_breakers() -> None:
    import aiohttp  # noqa: F401 - the aiohttp session below needs it installed

    from resetguard.http import HTTPPolicy, RetrySession, Session

    with FaultServer() as srv:
        origin = f"127.0.0.1:{srv.port}"
        with Session() as session:
            assert session.get(srv.url + "/ok").status_code == 200
            guards = session.retry_adapter.guards
            assert guards.states() == {origin: CircuitState.CLOSED}
            assert isinstance(guards.budget, resetguard.RetryBudget)

        async def aio() -> dict[str, CircuitState]:
            async with RetrySession() as s:
                response = await s.get(srv.url + "/ok")
                assert response.status == 200
                assert isinstance(s.guards.budget, resetguard.RetryBudget)
                return s.guards.states()

        assert asyncio.run(aio()) == {origin: CircuitState.CLOSED}
        off = HTTPPolicy(breakers=None, budget=False)
        with Client(policy=off) as client:
            assert client.get(srv.url + "/ok").status_code == 200
            assert client.retry_transport.guards.states() == {}
            assert client.retry_transport.guards.budget is None
        shared = resetguard.CircuitBreaker("shared")
        with Client(retry=resetguard.Retry(breaker=shared)) as client:
            assert client.get(srv.url + "/ok").status_code == 200
            assert client.retry_transport.guards.states() == {}  # the policy's breaker wins
            assert shared.statistics().successes == 1


def test_bad_defaults_are_refused_with_the_value() -> None:
    from resetguard.http import HTTPPolicy

    with pytest.raises(TypeError, match="'many'"):
        HTTPPolicy(breakers="many")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="-1"):
        HTTPPolicy(patience=-1)
    with pytest.raises(TypeError, match="budget"):
        HTTPPolicy(budget="yes")  # type: ignore[arg-type]
