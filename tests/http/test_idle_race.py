"""The keep-alive race stops once the idle limit is learned, counted by the server itself.

``FlakyServer(idle_close=0.15, lateness=0.03)`` closes connections idle for 150 ms and
treats request bytes as arriving 30 ms late: anything reaching it on a connection idle for
120 to 150 ms loses the race (``race_hits``). That includes a client's own FIN: a client that
retires an expired connection only when the next request wants it closes it right in that
window. After two lost races resetguard learns ~100 ms and closes idle connections as soon
as they pass it, so the server sees almost no further race; the plain clients, run at the
same time against their own servers, keep losing it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import httpx
import pytest
import requests

from resetguard.demo import FlakyServer
from resetguard.http import Client, HTTPPolicy, Session
from tests.http._server import FaultServer

REQUESTS = 25
SPACING = (0.12, 0.18)  # what `resetguard demo --scenario idle` uses
MAX_RG_RACES = 4  # up to two teach the limit; a little room for a loaded machine


def _drive(server: FlakyServer, send: Callable[[str], object], errors: list[BaseException]) -> None:
    rng = random.Random(7)
    for i in range(REQUESTS):
        time.sleep(rng.uniform(*SPACING))
        try:
            send(f"{server.url}/items/{i}")
        except Exception as exc:  # counted, as the demo counts what reaches the caller
            errors.append(exc)


def _side_by_side(
    guarded: Callable[[str], object], plain: Callable[[str], object]
) -> tuple[FlakyServer, list[BaseException], FlakyServer, list[BaseException]]:
    """Both workloads at once (each on its own server): the test takes one run's time."""
    with (
        FlakyServer(idle_close=0.15, lateness=0.03) as rg_server,
        FlakyServer(idle_close=0.15, lateness=0.03) as plain_server,
    ):
        rg_errors: list[BaseException] = []
        plain_errors: list[BaseException] = []
        thread = threading.Thread(target=_drive, args=(plain_server, plain, plain_errors))
        thread.start()
        try:
            _drive(rg_server, guarded, rg_errors)
        finally:
            thread.join(30)
        assert not thread.is_alive()
    return rg_server, rg_errors, plain_server, plain_errors


def test_httpx_client_stops_the_race_once_learned():
    with Client(timeout=5.0) as client, httpx.Client(timeout=5.0) as plain:
        rg, rg_errors, base, base_errors = _side_by_side(client.get, plain.get)
        (origin,) = client.retry_transport.idle_limits.snapshot()
    assert rg_errors == []
    assert rg.stats.requests == REQUESTS
    assert origin.learned is not None
    assert origin.learned < 0.12
    assert rg.stats.race_hits <= MAX_RG_RACES, rg.stats
    # the race is real: plain httpx keeps losing it (and surfaces it as errors)
    assert base.stats.race_hits >= rg.stats.race_hits + 3, (rg.stats, base.stats)
    assert len(base_errors) >= 3


def test_requests_session_stops_the_race_once_learned():
    with Session(timeout=5.0) as session, requests.Session() as plain:
        rg, rg_errors, base, _ = _side_by_side(session.get, lambda u: plain.get(u, timeout=5.0))
        (origin,) = session.retry_adapter.idle_limits.snapshot()
    assert rg_errors == []
    assert rg.stats.requests == REQUESTS
    assert origin.learned is not None
    assert origin.learned < 0.12
    assert rg.stats.race_hits <= MAX_RG_RACES, rg.stats
    assert base.stats.race_hits >= rg.stats.race_hits + 3, (rg.stats, base.stats)


def _wait_until(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def test_reaper_closes_idle_connections_but_never_one_in_use():
    policy = HTTPPolicy(idle_timeout=0.05)
    with FlakyServer() as server, Client(policy=policy) as client:
        pool = client.retry_transport._inner._pool  # type: ignore[attr-defined]
        with client.stream("GET", f"{server.url}/a") as response:
            time.sleep(0.2)  # in use well past the idle limit: the reaper must leave it
            assert response.read()
        assert client.get(f"{server.url}/b").status_code == 200
        assert len(pool.connections) == 1
        # idle past 50 ms: closed with no pool activity to trigger it
        assert _wait_until(lambda: not pool.connections)
        assert server.stats.requests == 2


def test_reaper_in_requests_session_spares_a_streamed_response():
    policy = HTTPPolicy(idle_timeout=0.05)
    with FlakyServer() as server, Session(policy=policy) as session:
        response = session.get(f"{server.url}/a", stream=True)
        time.sleep(0.2)  # in use well past the idle limit: the reaper must leave it
        assert response.content
        assert session.get(f"{server.url}/b").status_code == 200
        (pool,) = session.retry_adapter._pools

        def idle_sockets() -> int:
            return sum(1 for c in list(pool.pool.queue) if c is not None and c.sock is not None)

        assert idle_sockets() == 1
        assert _wait_until(lambda: idle_sockets() == 0)
        assert server.stats.requests == 2


def test_reaper_wakes_for_an_origin_whose_limit_is_lower_than_the_rest():
    # The reaper is scheduled for the lowest limit in force: a connection to an origin
    # that announced a short Keep-Alive is closed in time, although the other origin's
    # connection (30 s limit) was pooled first and had the reaper sleeping far longer.
    long_lived = FaultServer().start()
    short = FaultServer(keep_alive_header="timeout=1.1").start()  # limit 0.1 s
    try:
        with Client(policy=HTTPPolicy(idle_timeout=30.0)) as client:
            pool = client.retry_transport._inner._pool  # type: ignore[attr-defined]
            assert client.get(f"{long_lived.url}/a").status_code == 200
            for path in ("b", "c"):  # the first response teaches the hint
                assert client.get(f"{short.url}/{path}").status_code == 200
            assert client.idle_limits.limit(f"127.0.0.1:{short.port}") == pytest.approx(0.1)
            assert {c._origin.port for c in pool.connections} == {long_lived.port, short.port}
            # closed by the reaper, with no pool activity to trigger it
            assert _wait_until(lambda: len(pool.connections) == 1)
            assert [c._origin.port for c in pool.connections] == [long_lived.port]
    finally:
        short.stop()
        long_lived.stop()
