"""aiohttp (RetrySession) against real loopback servers that misbehave on demand."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

import resetguard
from resetguard import Kind, Retry
from resetguard.http import HTTPPolicy, outcome_unknown
from resetguard.http._aiohttp import RetrySession
from tests._faketime import FakeTime

from ._server import FaultServer
from ._workload import arun

RACE = dict(idle_close=0.1, read_delay=0.025)
GAP = (0.05, 0.1)


def _fake_policy(fake: FakeTime, **kw) -> HTTPPolicy:
    retry_kw = {"attempts": 3, **fake.options()}
    retry_kw.update(kw.pop("retry", {}))
    # These tests pin the attempt mechanics under fake time; patience (on by default) and
    # the per-origin breakers are tested with real restarts in test_defaults.py.
    kw.setdefault("patience", 0)
    kw.setdefault("breakers", None)
    return HTTPPolicy(retry=Retry(**retry_kw), **kw)


def _sender(session: RetrySession, base: str):
    async def send(method, path, headers, body):
        r = await session.request(method, base + path, headers=headers, data=body)
        r.raise_for_status()
        return r

    return send


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
def test_keepalive_race(rst):
    async def main():
        async with RetrySession(policy=HTTPPolicy(learn_idle=False)) as s:
            return await arun(_sender(s, srv.url), n=16, gap=GAP)

    with FaultServer(**RACE, idle_rst=rst) as srv:
        out = asyncio.run(main())
    assert srv.race_hits >= 2, "the race never fired: the test proves nothing"
    assert out.count("GET") == 0, out.errors.get("GET")
    assert srv.duplicates("POST") == 0
    assert out.max_executions(srv, "POST") <= 1
    for exc in out.errors.get("POST", []):
        assert isinstance(exc, aiohttp.ClientError)
        assert outcome_unknown(exc)


def test_aiohttp_silent_replay_is_off():
    """Plain aiohttp re-sends a GET by itself; under RetrySession only our rules count."""
    fake = FakeTime()

    async def plain():
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):
                await s.get(srv.url + "/rst?times=9", headers={"X-Req-Id": "plain"})

    async def ours():
        async with RetrySession(policy=_fake_policy(fake, retry={"attempts": 2})) as s:
            with pytest.raises(aiohttp.ClientError) as info:
                await s.get(srv.url + "/rst?times=9", headers={"X-Req-Id": "ours"})
            return info.value

    with FaultServer() as srv:
        asyncio.run(plain())
        exc = asyncio.run(ours())
    assert srv.executions["plain"] == 2  # aiohttp's hidden retry
    assert srv.executions["ours"] == 2  # attempts=2, nothing hidden on top
    assert len(resetguard.history(exc)) == 2


def test_mid_body_reset_and_post_outcome_unknown():
    fake = FakeTime()

    async def main():
        async with RetrySession(policy=_fake_policy(fake)) as s:
            r = await s.get(srv.url + "/midbody", headers={"X-Req-Id": "g"})
            body = await r.read()
            with pytest.raises(aiohttp.ClientError) as info:
                await s.post(srv.url + "/midbody", headers={"X-Req-Id": "p"}, data=b"x")
            r = await s.post(
                srv.url + "/rst", headers={"X-Req-Id": "k", "Idempotency-Key": "k"}, data=b"x"
            )
            return body, info.value, r.status

    with FaultServer() as srv:
        body, exc, status = asyncio.run(main())
    assert len(body) == 100000
    assert srv.executions["g"] == 2
    assert outcome_unknown(exc)
    assert srv.executions["p"] == 1
    assert status == 200
    assert srv.executions["k"] == 2


def test_rst_share_refused_and_retry_after(unused_port):
    fake = FakeTime()

    async def share(url):
        async with RetrySession(policy=_fake_policy(fake, retry={"attempts": 8})) as s:
            return await arun(_sender(s, url), n=20)

    async def others(url):
        async with RetrySession(policy=_fake_policy(fake, retry={"deadline": 5})) as s:
            r = await s.get(
                url + "/status?code=503&retry_after=2&times=1", headers={"X-Req-Id": "ra"}
            )
            with pytest.raises(aiohttp.ClientConnectorError) as info:
                await s.post(f"http://127.0.0.1:{unused_port}/x", data=b"1")
        return r.status, info.value

    with FaultServer(rst_rate=0.3, seed=5) as srv:
        out = asyncio.run(share(srv.url))
    assert srv.requests > 20
    assert out.count("GET") == 0, out.errors.get("GET")
    assert srv.duplicates("POST") == 0
    assert all(outcome_unknown(e) for e in out.errors.get("POST", []))
    with FaultServer() as srv:
        status, refused = asyncio.run(others(srv.url))
    assert status == 200
    assert 2.0 in fake.sleeps
    attempts = resetguard.history(refused)
    assert len(attempts) == 3
    assert attempts[0].failure.kind is Kind.REFUSED


def test_validation():
    with pytest.raises(TypeError, match="either policy= or retry="):
        RetrySession(policy=HTTPPolicy(), retry=Retry())


def test_learned_idle_limit_and_keep_alive_hint_are_enforced():
    async def race(url):
        async with RetrySession() as s:
            send = _sender(s, url)
            await arun(send, n=10, gap=(0.08, 0.1), methods=("GET",))
            hits = srv.race_hits
            out = await arun(send, n=10, gap=(0.08, 0.1), methods=("GET",))
            return hits, out, s.idle_limits.snapshot()

    with FaultServer(**RACE) as srv:
        hits, out, snapshot = asyncio.run(race(srv.url))
    assert hits >= 1
    assert srv.race_hits == hits, "the race kept happening after the limit was learned"
    assert out.count("GET") == 0
    (origin,) = snapshot
    assert origin.learned is not None
    assert origin.learned < 0.1

    async def hinted(url):
        async with RetrySession() as s:
            for _ in range(3):
                await s.get(url + "/ok")
                await asyncio.sleep(0.01)

    with FaultServer(keep_alive_header="timeout=1") as srv:
        asyncio.run(hinted(srv.url))
    assert srv.connections == 3
