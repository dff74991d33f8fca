"""resetguard.http.Session / RetryAdapter as drop-ins for requests': proxies from the
environment and from ``proxies=``, mounted adapters, ``verify``, ``cert`` and streamed
uploads, on real loopback servers (plain and TLS) and a real forward proxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from resetguard import Retry
from resetguard.http import HTTPPolicy
from resetguard.http._requests import RetryAdapter, Session
from tests._faketime import FakeTime

from ._proxy import ForwardProxy
from ._server import FaultServer
from ._tls import TLSServer


def _policy(fake: FakeTime, **kw: Any) -> HTTPPolicy:
    return HTTPPolicy(retry=Retry(attempts=3, **fake.options()), **kw)  # type: ignore[arg-type]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy or CA bundle settings from the machine (requests lets a CA bundle in the
    environment win over ``session.verify``)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- proxies


def test_environment_proxy_is_used_and_a_reset_through_it_is_retried(
    clean_env: pytest.MonkeyPatch,
) -> None:
    fake = FakeTime()
    with FaultServer() as srv, ForwardProxy(rst_first=1) as proxy:
        clean_env.setenv("HTTP_PROXY", proxy.url)
        with Session(policy=_policy(fake)) as s:
            r = s.get(srv.url + "/ok", headers={"X-Req-Id": "e"})
            assert r.status_code == 200
            assert proxy.count("/ok") == 2
            assert srv.executions["e"] == 1
            # the proxy's connections are pooled by resetguard's pools: idle expiry applies
            (manager,) = s.retry_adapter.proxy_manager.values()
            assert manager.pool_classes_by_scheme["http"].__name__ == "ResetGuardHTTPPool"
            s.trust_env = False  # requests' switch: the environment is ignored
            assert s.get(srv.url + "/ok").status_code == 200
            assert proxy.count("/ok") == 2
    assert len(fake.sleeps) == 1


def test_no_proxy_is_honoured(clean_env: pytest.MonkeyPatch) -> None:
    with FaultServer() as srv, ForwardProxy() as proxy:
        clean_env.setenv("HTTP_PROXY", proxy.url)
        clean_env.setenv("NO_PROXY", "127.0.0.1")
        with Session() as s:
            assert s.get(srv.url + "/ok", headers={"X-Req-Id": "d"}).status_code == 200
        assert proxy.requests == []
        assert srv.executions["d"] == 1


def test_explicit_proxies_with_a_retry(clean_env: pytest.MonkeyPatch) -> None:
    fake = FakeTime()
    with FaultServer() as srv, ForwardProxy(rst_first=1) as proxy:
        with Session(policy=_policy(fake)) as s:
            r = s.get(srv.url + "/ok", proxies={"http": proxy.url}, headers={"X-Req-Id": "p"})
            assert r.status_code == 200
        assert proxy.count("/ok") == 2
        assert srv.executions["p"] == 1


# --------------------------------------------------------------------------- mounts


def test_mounted_adapters_follow_requests_rules(clean_env: pytest.MonkeyPatch) -> None:
    fake = FakeTime()
    with FaultServer() as srv, Session(policy=_policy(fake)) as s:
        strict = RetryAdapter(policy=_policy(fake, idle_timeout=1.0))
        s.mount(f"{srv.url}/rst", strict)
        plain = HTTPAdapter()
        s.mount(f"{srv.url}/plain", plain)
        assert s.get_adapter(f"{srv.url}/rst?times=1") is strict
        r = s.get(f"{srv.url}/rst?times=1", headers={"X-Req-Id": "m"})
        assert r.status_code == 200
        assert srv.executions["m"] == 2
        assert strict.idle_limits.limit(f"127.0.0.1:{srv.port}") == 1.0
        # a plain adapter you mount is yours: requests' behaviour, no retries
        assert s.get_adapter(f"{srv.url}/plain") is plain
        assert s.get(f"{srv.url}/plain").status_code == 200
        assert s.get_adapter(f"{srv.url}/ok") is s.retry_adapter


# --------------------------------------------------------------------------- uploads


def test_streamed_upload_is_sent_chunked_and_never_replayed() -> None:
    fake = FakeTime()

    def chunks() -> Iterator[bytes]:
        yield b"a" * 1000
        yield b"b" * 500

    with FaultServer() as srv, Session(policy=_policy(fake)) as s:
        r = s.post(srv.url + "/echo", data=chunks(), headers={"X-Req-Id": "ok"})
        assert r.text == "1500"
        assert srv.bodies["ok"] == [b"a" * 1000 + b"b" * 500]
        with pytest.raises(requests.ConnectionError):
            s.put(srv.url + "/rst?times=1", data=chunks(), headers={"X-Req-Id": "g"})
        assert srv.executions["g"] == 1


def test_file_upload_is_rewound_when_a_retry_replays_it(tmp_path: Path) -> None:
    fake = FakeTime()
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789" * 5000)
    with FaultServer() as srv, Session(policy=_policy(fake)) as s, path.open("rb") as file:
        r = s.put(srv.url + "/rst?times=1", data=file, headers={"X-Req-Id": "f"})
        assert r.status_code == 200
        assert srv.bodies["f"] == [path.read_bytes()] * 2
        headers = {"X-Req-Id": "mf", "Idempotency-Key": "k"}
        r = s.post(srv.url + "/rst?times=1", files={"f": path.open("rb")}, headers=headers)
        assert r.status_code == 200
        first, second = srv.bodies["mf"]
        assert first == second
        assert path.read_bytes() in first


# --------------------------------------------------------------------------- TLS: verify, cert


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_is_requests_own(tls_files: tuple[str, str], clean_env: pytest.MonkeyPatch) -> None:
    cert, key = tls_files
    fake = FakeTime()
    with TLSServer(cert, key) as srv, Session(policy=_policy(fake)) as s:
        with pytest.raises(requests.exceptions.SSLError):
            s.get(srv.url + "/ok")  # self-signed: refused, as requests refuses it
        assert s.get(srv.url + "/ok", verify=False).status_code == 200
        s.verify = cert
        r = s.get(srv.url + "/rst")  # reset after the handshake: retried over TLS
        assert r.status_code == 200
        assert srv.seen.count("/rst") == 2


def test_client_cert_is_sent(tls_files: tuple[str, str], clean_env: pytest.MonkeyPatch) -> None:
    cert, key = tls_files
    with TLSServer(cert, key, client_ca=cert) as srv, Session() as s:
        s.verify = cert
        with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
            s.get(srv.url + "/ok")  # no client certificate: the server refuses
        assert s.get(srv.url + "/ok", cert=(cert, key)).status_code == 200
        s.cert = (cert, key)
        assert s.get(srv.url + "/ok").status_code == 200
        assert srv.seen.count("/ok") == 2


def test_https_through_a_connect_proxy_with_a_retry(
    tls_files: tuple[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    cert, key = tls_files
    fake = FakeTime()
    with TLSServer(cert, key) as srv, ForwardProxy() as proxy:
        clean_env.setenv("HTTPS_PROXY", proxy.url)
        with Session(policy=_policy(fake)) as s:
            s.verify = cert
            r = s.get(srv.url + "/rst")  # reset inside the tunnel: retried, new tunnel
            assert r.status_code == 200
        assert srv.seen.count("/rst") == 2
        assert proxy.count("CONNECT") >= 2
