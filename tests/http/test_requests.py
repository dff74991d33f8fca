"""requests (RetryAdapter / Session) against real loopback servers that misbehave on demand."""

from __future__ import annotations

import io
import threading
import time

import pytest
import requests

import resetguard
from resetguard import Backoff, CircuitBreaker, Kind, Retry
from resetguard.http import HTTPPolicy, outcome_unknown
from resetguard.http._requests import RetryAdapter, Session
from resetguard.http._run import STALE_REPLAYS
from tests._faketime import FakeTime

from ._server import FaultServer
from ._workload import run

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


def _sender(session: requests.Session, base: str):
    def send(method, path, headers, body):
        r = session.request(method, base + path, headers=headers, data=body)
        r.raise_for_status()
        return r

    return send


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("key", [False, True], ids=["post", "post-with-key"])
def test_keepalive_race(rst, key):
    with (
        FaultServer(**RACE, idle_rst=rst) as srv,
        Session(policy=HTTPPolicy(learn_idle=False)) as s,
    ):
        out = run(_sender(s, srv.url), n=16, gap=GAP, key=key)
    assert srv.race_hits >= 2, "the race never fired: the test proves nothing"
    assert out.count("GET") == 0, out.errors.get("GET")
    assert srv.duplicates("POST") == 0
    assert out.max_executions(srv, "POST") <= 1
    if key:
        assert out.count("POST") == 0, out.errors.get("POST")
    for exc in out.errors.get("POST", []):
        assert isinstance(exc, requests.ConnectionError)
        assert outcome_unknown(exc)


def test_plain_requests_surfaces_the_race():
    with FaultServer(**RACE) as srv, requests.Session() as s:
        out = run(_sender(s, srv.url), n=16, gap=GAP, methods=("GET",))
    assert srv.race_hits >= 2
    assert out.count("GET") >= 1


def test_learned_idle_limit_stops_the_race():
    with FaultServer(**RACE) as srv, Session() as s:
        run(_sender(s, srv.url), n=10, gap=(0.08, 0.1), methods=("GET",))
        hits = srv.race_hits
        out = run(_sender(s, srv.url), n=10, gap=(0.08, 0.1), methods=("GET",))
        (origin,) = s.retry_adapter.idle_limits.snapshot()
    assert hits >= 1
    assert origin.learned is not None
    assert origin.learned < 0.1
    assert srv.race_hits == hits
    assert out.count("GET") == 0


def test_idle_expiry_keep_alive_hint_and_max_age():
    with FaultServer() as srv, Session(policy=HTTPPolicy(idle_timeout=0.05)) as s:
        s.get(srv.url + "/ok")
        s.get(srv.url + "/ok")
        time.sleep(0.1)
        s.get(srv.url + "/ok")
    assert srv.connections == 2
    with FaultServer(keep_alive_header="timeout=1") as srv, Session() as s:
        for _ in range(3):
            s.get(srv.url + "/ok")
            time.sleep(0.01)
    assert srv.connections == 3
    with FaultServer() as srv, Session(policy=HTTPPolicy(max_age=0.05)) as s:
        s.get(srv.url + "/ok")
        time.sleep(0.06)
        s.get(srv.url + "/ok")
    assert srv.connections == 2


def test_server_idle_close_is_learned_from_the_pool_check():
    # The server FINs idle connections after 0.1 s; the client finds them dropped.
    with FaultServer(idle_close=0.1) as srv, Session() as s:
        for _ in range(4):
            s.get(srv.url + "/ok")
            time.sleep(0.15)
        (origin,) = s.retry_adapter.idle_limits.snapshot()
    assert origin.observations >= 2
    assert origin.learned is not None
    assert origin.learned < 0.15


def test_rst_before_response_on_a_share_of_requests():
    fake = FakeTime()
    with (
        FaultServer(rst_rate=0.3, seed=3) as srv,
        Session(policy=_fake_policy(fake, retry={"attempts": 8})) as s,
    ):
        out = run(_sender(s, srv.url), n=30)
    assert srv.requests > 30
    assert out.count("GET") == 0, out.errors.get("GET")
    assert out.max_executions(srv, "GET") <= 8 + STALE_REPLAYS
    assert srv.duplicates("POST") == 0
    assert out.count("POST") >= 1
    assert all(outcome_unknown(e) for e in out.errors["POST"])


def test_mid_body_reset_retried_unless_streamed():
    fake = FakeTime()
    with FaultServer() as srv, Session(policy=_fake_policy(fake)) as s:
        r = s.get(srv.url + "/midbody", headers={"X-Req-Id": "g"})
        assert len(r.content) == 100000
        assert srv.executions["g"] == 2
        with pytest.raises(requests.RequestException) as info:
            s.post(srv.url + "/midbody", headers={"X-Req-Id": "p"}, data=b"x")
        assert outcome_unknown(info.value)
        assert srv.executions["p"] == 1
        r = s.get(srv.url + "/midbody", headers={"X-Req-Id": "s"}, stream=True)
        with pytest.raises(requests.RequestException):
            r.content  # noqa: B018
        assert srv.executions["s"] == 1
    with (
        FaultServer() as srv,
        requests.Session() as s,
        pytest.raises(requests.RequestException),
    ):
        s.get(srv.url + "/midbody")


def test_server_restart_mid_run():
    policy = HTTPPolicy(retry=Retry(attempts=10, backoff=Backoff.constant(0.05), deadline=5))
    with FaultServer() as srv, Session(policy=policy) as s:
        restarter = threading.Timer(0.2, srv.restart, kwargs={"downtime": 0.25})
        restarter.start()
        try:
            out = run(_sender(s, srv.url), n=30, gap=(0.02, 0.02))
        finally:
            restarter.join(timeout=5)
    assert out.count("GET") == 0, out.errors.get("GET")
    assert srv.duplicates("POST") == 0
    assert all(outcome_unknown(e) for e in out.errors.get("POST", []))


def test_refused_and_outage_with_breaker(unused_port):
    fake = FakeTime()
    with (
        Session(policy=_fake_policy(fake)) as s,
        pytest.raises(requests.ConnectionError) as info,
    ):
        s.post(f"http://127.0.0.1:{unused_port}/x", data=b"1")
    assert len(resetguard.history(info.value)) == 3
    assert len(fake.sleeps) == 2
    assert resetguard.history(info.value)[0].failure.kind is Kind.REFUSED
    fake = FakeTime()
    breaker = CircuitBreaker("api", failure_threshold=3, clock=fake.clock, jitter=0)
    rejected = 0
    with Session(policy=_fake_policy(fake, retry={"breaker": breaker})) as s:
        for _ in range(10):
            try:
                s.get(f"http://127.0.0.1:{unused_port}/x")
            except resetguard.CircuitOpen:
                rejected += 1
            except requests.ConnectionError:
                pass
    assert rejected == 9
    assert len(fake.sleeps) == 2


def test_retry_after_and_status_rules():
    fake = FakeTime()
    with FaultServer() as srv, Session(policy=_fake_policy(fake, retry={"deadline": 3})) as s:
        r = s.get(srv.url + "/status?code=503&retry_after=2&times=1", headers={"X-Req-Id": "a"})
        assert r.status_code == 200
        assert fake.sleeps == [2.0]
        r = s.get(srv.url + "/status?code=429&retry_after=30&times=1", headers={"X-Req-Id": "b"})
        assert r.status_code == 200
        assert fake.sleeps[1] == 3.0
        r = s.post(srv.url + "/status?code=503&times=1", headers={"X-Req-Id": "c"})
        assert r.status_code == 503
    assert srv.executions["a"] == 2
    assert srv.executions["c"] == 1
    assert srv.connections == 1


def test_request_bodies():
    fake = FakeTime()

    def gen():
        yield b"abc"

    with FaultServer() as srv, Session(policy=_fake_policy(fake)) as s:
        with pytest.raises(requests.RequestException) as info:
            s.put(srv.url + "/rst", data=gen(), headers={"X-Req-Id": "gen"})
        assert "cannot be replayed" in "\n".join(info.value.__notes__)
        r = s.put(srv.url + "/rst", data=io.BytesIO(b"file body"), headers={"X-Req-Id": "file"})
        assert r.status_code == 200
        r = s.put(srv.url + "/echo", data=io.BytesIO(b"file body"))
        assert r.text == "9"
    assert srv.executions["gen"] == 1
    assert srv.executions["file"] == 2


def test_timeouts_classified(unused_port):
    fake = FakeTime()
    with (
        FaultServer() as srv,
        Session(policy=_fake_policy(fake, retry={"attempts": 2}), timeout=(1, 0.05)) as s,
    ):
        with pytest.raises(requests.ReadTimeout) as get:
            s.get(srv.url + "/slow?ms=300", headers={"X-Req-Id": "g"})
        with pytest.raises(requests.ReadTimeout) as post:
            s.post(srv.url + "/slow?ms=300", headers={"X-Req-Id": "p"})
        time.sleep(0.35)
    assert resetguard.classify(get.value).kind is Kind.TIMEOUT
    assert srv.executions["g"] == 2
    assert srv.executions["p"] == 1
    assert outcome_unknown(post.value)


def test_adapter_mounts_on_a_plain_session_and_validates():
    fake = FakeTime()
    with FaultServer() as srv, requests.Session() as s:
        s.mount("http://", RetryAdapter(policy=_fake_policy(fake)))
        assert s.get(srv.url + "/rst", headers={"X-Req-Id": "r"}).status_code == 200
    assert srv.executions["r"] == 2
    with pytest.raises(TypeError, match="either policy= or retry="):
        RetryAdapter(policy=HTTPPolicy(), retry=Retry())
    assert Session(retry=Retry(attempts=5)).retry_adapter.policy.retry.attempts == 5
    assert Session().timeout == (5.0, 30.0)


def test_session_pickles_with_its_policy():
    import pickle

    fake = FakeTime()
    session = Session(policy=HTTPPolicy(retry=Retry(attempts=4), idle_timeout=2.0))
    clone = pickle.loads(pickle.dumps(session))
    adapter = clone.get_adapter("http://x/")
    assert isinstance(adapter, RetryAdapter)
    assert adapter.policy.retry.attempts == 4
    assert adapter.idle_limits.limit("x:80") == 2.0
    adapter._policy = _fake_policy(fake)
    with FaultServer() as srv:
        assert clone.get(srv.url + "/rst", headers={"X-Req-Id": "p"}).status_code == 200
    assert srv.executions["p"] == 2
    clone.close()
    session.close()
