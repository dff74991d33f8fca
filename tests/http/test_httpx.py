"""httpx (sync and async) against real loopback servers that misbehave on demand."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

import resetguard
from resetguard import Backoff, CircuitBreaker, Kind, Retry, RetryBudget
from resetguard.http import HTTPPolicy, outcome_unknown
from resetguard.http._httpx import (
    AsyncClient,
    AsyncRetryTransport,
    Client,
    RetryTransport,
    _origin,
)
from resetguard.http._run import STALE_REPLAYS
from tests._faketime import FakeTime

from ._server import FaultServer
from ._workload import arun, run

RACE = dict(idle_close=0.1, read_delay=0.025)
GAP = (0.05, 0.1)  # about half the requests arrive "after" the server's idle timer fired


def _fake_policy(fake: FakeTime, **kw) -> HTTPPolicy:
    retry_kw = {"attempts": 3, **fake.options()}
    retry_kw.update(kw.pop("retry", {}))
    # These tests pin the attempt mechanics under fake time; patience (on by default) and
    # the per-origin breakers are tested with real restarts in test_defaults.py.
    kw.setdefault("patience", 0)
    kw.setdefault("breakers", None)
    return HTTPPolicy(retry=Retry(**retry_kw), **kw)


def _sender(client: httpx.Client, base: str):
    def send(method, path, headers, body):
        r = client.request(method, base + path, headers=headers, content=body)
        r.raise_for_status()
        return r

    return send


def _asender(client: httpx.AsyncClient, base: str):
    async def send(method, path, headers, body):
        r = await client.request(method, base + path, headers=headers, content=body)
        r.raise_for_status()
        return r

    return send


def _check_race(srv: FaultServer, out, *, key: bool) -> None:
    assert srv.race_hits >= 2, "the race never fired: the test proves nothing"
    assert out.count("GET") == 0, out.errors.get("GET")
    assert srv.duplicates("POST") == 0
    assert out.max_executions(srv, "POST") <= 1
    if key:
        assert out.count("POST") == 0, out.errors.get("POST")
    for exc in out.errors.get("POST", []):
        assert isinstance(exc, httpx.TransportError)
        assert outcome_unknown(exc)
        assert "outcome unknown" in "\n".join(exc.__notes__)


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("key", [False, True], ids=["post", "post-with-key"])
def test_keepalive_race_sync(rst, key):
    fake = FakeTime()  # only the waits are fake: a stale replay must not wait at all
    policy = HTTPPolicy(
        learn_idle=False, retry=Retry(sleep=fake.sleep, async_sleep=fake.async_sleep)
    )
    with FaultServer(**RACE, idle_rst=rst) as srv, Client(policy=policy) as c:
        out = run(_sender(c, srv.url), n=16, gap=GAP, key=key)
    _check_race(srv, out, key=key)
    assert fake.sleeps == []


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
def test_keepalive_race_async(rst):
    async def main():
        async with AsyncClient(policy=HTTPPolicy(learn_idle=False)) as c:
            return await arun(_asender(c, srv.url), n=16, gap=GAP)

    with FaultServer(**RACE, idle_rst=rst) as srv:
        out = asyncio.run(main())
    _check_race(srv, out, key=False)


def test_opt_in_replays_posts_on_the_stale_race():
    policy = HTTPPolicy(learn_idle=False, retry_stale_non_idempotent=True)
    with FaultServer(**RACE) as srv, Client(policy=policy) as c:
        out = run(_sender(c, srv.url), n=16, gap=GAP, methods=("POST",))
    assert srv.race_hits >= 2
    assert out.count("POST") == 0, out.errors.get("POST")
    assert srv.duplicates("POST") == 0  # the server never read a request it closed on


def test_ipv6_loopback_learns_per_origin():
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = FaultServer(host="::1", **RACE).start()
    except OSError:
        pytest.skip("::1 not available")
    try:
        with Client() as c:
            out = run(_sender(c, srv.url), n=12, gap=(0.08, 0.1), methods=("GET",))
            (origin,) = c.retry_transport.idle_limits.snapshot()
    finally:
        srv.stop()
    assert out.count("GET") == 0
    assert origin.origin == f"::1:{srv.port}"
    assert origin.learned is not None


def test_plain_httpx_surfaces_the_race():
    """The baseline: the same workload through a plain client does surface errors."""
    with FaultServer(**RACE) as srv, httpx.Client() as c:
        out = run(_sender(c, srv.url), n=16, gap=GAP, methods=("GET",))
    assert srv.race_hits >= 2
    assert out.count("GET") >= 1


def test_learned_idle_limit_stops_the_race():
    with FaultServer(**RACE) as srv, Client() as c:
        run(_sender(c, srv.url), n=10, gap=(0.08, 0.1), methods=("GET",))
        learned = c.retry_transport.idle_limits.snapshot()
        hits = srv.race_hits
        out = run(_sender(c, srv.url), n=10, gap=(0.08, 0.1), methods=("GET",))
    assert hits >= 1
    (origin,) = learned
    assert origin.learned is not None
    assert origin.learned < 0.1
    assert srv.race_hits == hits, "the race kept happening after the limit was learned"
    assert out.count("GET") == 0


def test_keep_alive_header_expires_connections_early():
    # Keep-Alive: timeout=1 -> expire after 0 s idle: every request gets a fresh connection.
    with FaultServer(keep_alive_header="timeout=1") as srv, Client() as c:
        for _ in range(3):
            c.get(srv.url + "/ok").raise_for_status()
            time.sleep(0.01)
        assert c.retry_transport.idle_limits.limit(f"127.0.0.1:{srv.port}") == 0.0
    assert srv.connections == 3


def test_idle_expiry_and_max_age_retire_connections():
    with FaultServer() as srv, Client(policy=HTTPPolicy(idle_timeout=0.05)) as c:
        first = c.get(srv.url + "/big?size=5000")
        assert first.content == b"z" * 5000
        assert first.elapsed.total_seconds() > 0  # the client still closes what we buffered
        c.get(srv.url + "/ok")  # immediately: reused
        time.sleep(0.1)
        c.get(srv.url + "/ok")  # idle past 50 ms: a new connection
    assert srv.connections == 2
    with FaultServer() as srv, Client(policy=HTTPPolicy(max_age=0.05)) as c:
        c.get(srv.url + "/ok")
        time.sleep(0.06)
        c.get(srv.url + "/ok")
    assert srv.connections == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_idle_limit_holds_when_the_pool_keeps_connections_longer(kind: str) -> None:
    # httpcore's keep-alive expiry (30 s here, the user's limits=) is longer than the idle
    # limit (50 ms): resetguard's own check must retire the connection. With the limit
    # alone, httpcore's expiry does it and that check reads no clock.
    policy = HTTPPolicy(idle_timeout=0.05)
    limits = httpx.Limits(keepalive_expiry=30.0)

    async def asend(url: str) -> None:
        async with AsyncClient(policy=policy, limits=limits) as c:
            (await c.get(url)).raise_for_status()
            (await c.get(url)).raise_for_status()  # immediately: reused
            await asyncio.sleep(0.15)
            (await c.get(url)).raise_for_status()  # idle past 50 ms: a new connection

    with FaultServer() as srv:
        url = srv.url + "/ok"
        if kind == "async":
            asyncio.run(asend(url))
        else:
            with Client(policy=policy, limits=limits) as c:
                c.get(url).raise_for_status()
                c.get(url).raise_for_status()
                time.sleep(0.15)
                c.get(url).raise_for_status()
    assert srv.connections == 2


def test_rst_before_response_on_a_share_of_requests():
    fake = FakeTime()
    policy = _fake_policy(fake, retry={"attempts": 8})
    with FaultServer(rst_rate=0.3, seed=3) as srv, Client(policy=policy) as c:
        out = run(_sender(c, srv.url), n=30)
    assert srv.requests > 30  # some were reset and replayed
    assert out.count("GET") == 0, out.errors.get("GET")
    assert out.max_executions(srv, "GET") <= 8 + STALE_REPLAYS
    assert srv.duplicates("POST") == 0
    assert out.count("POST") >= 1  # with p = 0.3 over 15 POSTs some must have failed
    for exc in out.errors["POST"]:
        assert outcome_unknown(exc)


def test_rst_before_response_post_with_idempotency_key_is_retried():
    fake = FakeTime()
    with FaultServer() as srv, Client(policy=_fake_policy(fake)) as c:
        r = c.post(
            srv.url + "/rst", headers={"Idempotency-Key": "k", "X-Req-Id": "a"}, content=b"1"
        )
        with pytest.raises(httpx.TransportError) as info:
            c.post(srv.url + "/rst", headers={"X-Req-Id": "b"}, content=b"1")
    assert r.status_code == 200
    assert srv.executions["a"] == 2
    assert srv.executions["b"] == 1
    assert outcome_unknown(info.value)


def test_reset_mid_body_is_retried_when_the_body_is_read_in_full():
    fake = FakeTime()
    with FaultServer() as srv, Client(policy=_fake_policy(fake)) as c:
        r = c.get(srv.url + "/midbody", headers={"X-Req-Id": "g"})
        assert len(r.content) == 100000
        assert srv.executions["g"] == 2
        with pytest.raises(httpx.TransportError) as info:
            c.post(srv.url + "/midbody", headers={"X-Req-Id": "p"}, content=b"x")
        assert outcome_unknown(info.value)
        assert srv.executions["p"] == 1
        with (
            c.stream("GET", srv.url + "/midbody", headers={"X-Req-Id": "s"}) as r,
            pytest.raises(httpx.TransportError),
        ):
            r.read()
        assert srv.executions["s"] == 1  # a streamed body is the caller's: never replayed
    assert len(fake.sleeps) == 1  # backoff only before the mid-body retry


def test_async_reset_mid_body_is_retried():
    fake = FakeTime()

    async def main():
        async with AsyncClient(policy=_fake_policy(fake)) as c:
            return await c.get(srv.url + "/midbody", headers={"X-Req-Id": "g"})

    with FaultServer() as srv:
        r = asyncio.run(main())
    assert len(r.content) == 100000
    assert srv.executions["g"] == 2


def test_plain_httpx_surfaces_mid_body_reset():
    with FaultServer() as srv, httpx.Client() as c, pytest.raises(httpx.TransportError):
        c.get(srv.url + "/midbody")


def test_server_restart_mid_run():
    policy = HTTPPolicy(retry=Retry(attempts=10, backoff=Backoff.constant(0.05), deadline=5))
    with FaultServer() as srv, Client(policy=policy) as c:
        restarter = threading.Timer(0.2, srv.restart, kwargs={"downtime": 0.25})
        restarter.start()
        try:
            out = run(_sender(c, srv.url), n=30, gap=(0.02, 0.02))
        finally:
            restarter.join(timeout=5)
    assert out.count("GET") == 0, out.errors.get("GET")
    assert srv.duplicates("POST") == 0
    for exc in out.errors.get("POST", []):
        assert outcome_unknown(exc)


def test_connection_refused_is_retried_then_surfaces(unused_port):
    fake = FakeTime()
    with Client(policy=_fake_policy(fake)) as c, pytest.raises(httpx.ConnectError) as info:
        c.post(f"http://127.0.0.1:{unused_port}/x", content=b"1")
    attempts = resetguard.history(info.value)
    assert len(attempts) == 3
    assert len(fake.sleeps) == 2
    assert attempts[0].failure.kind is Kind.REFUSED
    assert not outcome_unknown(info.value)


def test_total_outage_with_breaker_fails_fast(unused_port):
    fake = FakeTime()
    breaker = CircuitBreaker("api", failure_threshold=3, clock=fake.clock, jitter=0)
    policy = _fake_policy(fake, retry={"breaker": breaker})
    rejected = surfaced = 0
    with Client(policy=policy) as c:
        for _ in range(10):
            try:
                c.get(f"http://127.0.0.1:{unused_port}/x")
            except resetguard.CircuitOpen:
                rejected += 1
            except httpx.ConnectError:
                surfaced += 1
    assert surfaced == 1
    assert rejected == 9
    assert len(fake.sleeps) == 2  # only the first request paid the retry schedule


def test_total_outage_with_budget_stops_retrying(unused_port):
    fake = FakeTime()
    budget = RetryBudget("api", ratio=0.2, min_per_second=0, clock=fake.clock)
    with Client(policy=_fake_policy(fake, retry={"budget": budget})) as c:
        for _ in range(10):
            with pytest.raises(httpx.ConnectError):
                c.get(f"http://127.0.0.1:{unused_port}/x")
    assert len(fake.sleeps) <= 2  # 20 % of 10 requests, not 2 retries each


def test_retry_after_honoured_and_clamped():
    fake = FakeTime()
    with FaultServer() as srv, Client(policy=_fake_policy(fake, retry={"deadline": 4})) as c:
        r = c.get(srv.url + "/status?code=503&retry_after=2&times=1", headers={"X-Req-Id": "a"})
        assert r.status_code == 200
        assert fake.sleeps == [2.0]
        r = c.get(srv.url + "/status?code=429&retry_after=60&times=1", headers={"X-Req-Id": "b"})
        assert r.status_code == 200
        assert fake.sleeps[1] == 4.0
        date = "Thu, 01 Jan 2099 00:00:00 GMT"
        r = c.get(
            srv.url + f"/status?code=503&retry_after={date}&times=9", headers={"X-Req-Id": "c"}
        )
        # waits out the deadline once, then hands the last response to the caller
        assert r.status_code == 503
        assert fake.sleeps[2] == 4.0
        assert len(fake.sleeps) == 3
        r = c.post(srv.url + "/status?code=503&retry_after=1&times=1", headers={"X-Req-Id": "d"})
        assert r.status_code == 503  # never for a POST
    assert srv.executions["a"] == 2
    assert srv.executions["b"] == 2
    assert srv.executions["c"] == 2
    assert srv.executions["d"] == 1
    assert srv.connections == 1  # responses were read and closed, the connection kept


def test_consumed_streaming_body_is_not_replayed():
    fake = FakeTime()

    def body():
        yield b"part1"
        yield b"part2"

    with FaultServer() as srv, Client(policy=_fake_policy(fake)) as c:
        with pytest.raises(httpx.TransportError) as info:
            c.put(srv.url + "/rst", content=body(), headers={"X-Req-Id": "gen"})
        r = c.put(srv.url + "/rst", content=b"bytes", headers={"X-Req-Id": "bytes"})
    assert srv.executions["gen"] == 1
    assert "cannot be replayed" in "\n".join(info.value.__notes__)
    assert r.status_code == 200
    assert srv.executions["bytes"] == 2


def test_timeouts_are_classified_and_only_idempotent_ones_retried():
    fake = FakeTime()
    policy = _fake_policy(fake, retry={"attempts": 2})
    with FaultServer() as srv, Client(policy=policy, timeout=0.05) as c:
        with pytest.raises(httpx.ReadTimeout) as get:
            c.get(srv.url + "/slow?ms=300", headers={"X-Req-Id": "g"})
        with pytest.raises(httpx.ReadTimeout) as post:
            c.post(srv.url + "/slow?ms=300", headers={"X-Req-Id": "p"})
        time.sleep(0.35)  # let the server finish the slow handlers before counting
    assert resetguard.classify(get.value).kind is Kind.TIMEOUT
    assert len(resetguard.history(get.value)) == 2
    assert srv.executions["g"] == 2
    assert outcome_unknown(post.value)
    assert srv.executions["p"] == 1


def test_transport_wraps_any_transport_and_plain_clients():
    fake = FakeTime()
    inner = httpx.HTTPTransport()
    transport = RetryTransport(inner, policy=_fake_policy(fake))
    with FaultServer() as srv, httpx.Client(transport=transport) as c:
        r = c.get(srv.url + "/rst", headers={"X-Req-Id": "r"})
        assert r.status_code == 200
        assert srv.executions["r"] == 2
        # a plain httpx.Client reads the body outside the transport: not retried there
        with pytest.raises(httpx.ReadError):
            c.get(srv.url + "/midbody", headers={"X-Req-Id": "m"})
        assert srv.executions["m"] == 1
    assert RetryTransport(inner).instrumented
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    assert not RetryTransport(mock).instrumented
    with pytest.raises(TypeError, match="either policy= or retry="):
        RetryTransport(policy=HTTPPolicy(), retry=Retry())
    with pytest.raises(TypeError, match="verify"):
        RetryTransport(inner, verify=False)
    with pytest.raises(TypeError, match=r"httpx\.BaseTransport"):
        RetryTransport("nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"resetguard\.Retry"):
        Client(retry=3)  # type: ignore[arg-type]
    assert AsyncRetryTransport().instrumented


def test_monitor_counts_reused_resets_and_saved_requests():
    monitor = resetguard.Monitor(name="http-test").install()
    try:
        with FaultServer(**RACE) as srv, Client(policy=HTTPPolicy(learn_idle=False)) as c:
            out = run(_sender(c, srv.url), n=12, gap=(0.08, 0.1), methods=("GET",))
        report = monitor.report()
    finally:
        monitor.uninstall()
    assert out.count("GET") == 0
    assert srv.race_hits >= 1
    assert report.reused_faults >= srv.race_hits
    assert report.fresh_faults == 0
    assert report.recovered >= 1
    assert report.connections["reused"] >= 1
    assert report.failure_idle_age.count >= 1


def test_connection_events_report_reuse_and_idle_age():
    seen: list[object] = []
    resetguard.add_hook(seen.append)
    try:
        with FaultServer(**RACE) as srv, Client(policy=HTTPPolicy(learn_idle=False)) as c:
            run(_sender(c, srv.url), n=12, gap=(0.08, 0.1), methods=("GET",))
    finally:
        resetguard.remove_hook(seen.append)
    actions = {e.action for e in seen if isinstance(e, resetguard.ConnectionEvent)}
    assert {"opened", "reused", "failed"} <= actions
    failed = [e for e in seen if isinstance(e, resetguard.ConnectionEvent) and e.action == "failed"]
    assert all(e.failure.reused is True and e.idle_age > 0.05 for e in failed)
    assert any(isinstance(e, resetguard.RetrySucceeded) for e in seen)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://bücher.example/x", "xn--bcher-kva.example:80"),
        ("https://EXAMPLE.org/", "example.org:443"),
        ("http://[::1]:8080/x", "::1:8080"),
    ],
)
def test_origin_key_is_the_host_httpcore_dials(url: str, origin: str) -> None:
    # The breaker and idle limits of a request are keyed as its connection is: an IDN
    # host in its ASCII form (what httpcore passes to connect_tcp), not the Unicode one.
    parsed = httpx.URL(url)
    assert _origin(parsed) == origin
    assert origin.rpartition(":")[0] == parsed.raw_host.decode("ascii")
