"""resetguard.http.Client / AsyncClient as drop-ins for httpx's, on every route a request takes.

Real loopback servers, a real forward proxy started in the test, real httpx transports.
"""

from __future__ import annotations

import asyncio
import io
import re
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from resetguard import Retry
from resetguard.http import HTTPPolicy
from resetguard.http._httpx import AsyncClient, AsyncRetryTransport, Client, RetryTransport
from tests._faketime import FakeTime

from ._proxy import ForwardProxy
from ._server import FaultServer
from ._tls import TLSServer

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy settings from the machine: each test sets exactly what it means."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def _policy(fake: FakeTime) -> HTTPPolicy:
    return HTTPPolicy(retry=Retry(attempts=3, **fake.options()))  # type: ignore[arg-type]


def _get(client: Any, url: str, req_id: str) -> httpx.Response:
    if isinstance(client, httpx.AsyncClient):

        async def main() -> httpx.Response:
            async with client:
                return await client.get(url, headers={"X-Req-Id": req_id})

        return asyncio.run(main())
    with client:
        return client.get(url, headers={"X-Req-Id": req_id})


def _client(kind: str, **kwargs: Any) -> Any:
    return (Client if kind == "sync" else AsyncClient)(**kwargs)


# --------------------------------------------------------------------------- uploads


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_multipart_upload(kind: str) -> None:
    async def upload_async(url: str) -> httpx.Response:
        async with AsyncClient() as c:
            return await c.post(url, files={"f": b"data"}, headers={"X-Req-Id": "m"})

    with FaultServer() as srv:
        if kind == "sync":
            with Client() as c:
                r = c.post(srv.url + "/echo", files={"f": b"data"}, headers={"X-Req-Id": "m"})
        else:
            r = asyncio.run(upload_async(srv.url + "/echo"))
        assert r.status_code == 200
        (body,) = srv.bodies["m"]
    assert b'name="f"' in body
    assert b"\r\n\r\ndata\r\n" in body
    assert int(r.text) == len(body)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_multipart_file_object_is_rewound_when_a_retry_replays_it(
    kind: str, tmp_path: Path
) -> None:
    fake = FakeTime()
    path = tmp_path / "upload.bin"
    path.write_bytes(b"0123456789" * 5000)
    headers = {"X-Req-Id": "f", "Idempotency-Key": "k-1"}

    async def upload_async(url: str) -> httpx.Response:
        async with AsyncClient(policy=_policy(fake)) as c:
            with path.open("rb") as file:
                return await c.post(url, files={"f": file}, headers=headers)

    with FaultServer() as srv:
        url = srv.url + "/rst?times=1"  # executes, then resets: the retry must resend it all
        if kind == "sync":
            with Client(policy=_policy(fake)) as c, path.open("rb") as file:
                r = c.post(url, files={"f": file}, headers=headers)
        else:
            r = asyncio.run(upload_async(url))
        assert r.status_code == 200
        first, second = srv.bodies["f"]
    assert srv.executions["f"] == 2
    assert first == second
    assert path.read_bytes() in first
    assert len(fake.sleeps) == 1


def test_file_content_is_rewound_when_a_retry_replays_it(tmp_path: Path) -> None:
    fake = FakeTime()
    path = tmp_path / "body.bin"
    path.write_bytes(b"payload" * 3000)
    with FaultServer() as srv, Client(policy=_policy(fake)) as c, path.open("rb") as file:
        r = c.put(srv.url + "/rst?times=1", content=file, headers={"X-Req-Id": "p"})
        assert r.status_code == 200
        assert srv.bodies["p"] == [b"payload" * 3000] * 2


def test_a_generator_body_is_sent_once() -> None:
    """A body that cannot be rewound is never replayed once sending it started."""
    fake = FakeTime()

    def chunks() -> Any:
        yield b"a" * 1000
        yield b"b" * 1000

    with FaultServer() as srv, Client(policy=_policy(fake)) as c:
        with pytest.raises(httpx.TransportError):
            c.put(srv.url + "/rst?times=1", content=chunks(), headers={"X-Req-Id": "g"})
        assert srv.executions["g"] == 1


def test_a_non_seekable_multipart_file_is_sent_once() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.left = [b"x" * 100, b""]

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self.left.pop(0) if self.left else b""

    fake = FakeTime()
    headers = {"X-Req-Id": "n", "Idempotency-Key": "k-2"}
    with FaultServer() as srv, Client(policy=_policy(fake)) as c:
        with pytest.raises(httpx.TransportError):
            c.post(srv.url + "/rst?times=1", files={"f": Pipe()}, headers=headers)
        assert srv.executions["n"] == 1


# --------------------------------------------------------------------------- proxies


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
def test_environment_proxy_is_used_and_a_reset_through_it_is_retried(
    kind: str, variable: str, clean_env: pytest.MonkeyPatch
) -> None:
    fake = FakeTime()
    with FaultServer() as srv, ForwardProxy(rst_first=1) as proxy:
        clean_env.setenv(variable, proxy.url)
        r = _get(_client(kind, policy=_policy(fake)), srv.url + "/ok", "e")
        assert r.status_code == 200
        assert proxy.count("/ok") == 2  # the first attempt was reset by the proxy
        assert srv.executions["e"] == 1
    assert len(fake.sleeps) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_no_proxy_is_honoured(kind: str, clean_env: pytest.MonkeyPatch) -> None:
    with FaultServer() as srv, ForwardProxy() as proxy:
        clean_env.setenv("HTTP_PROXY", proxy.url)
        clean_env.setenv("NO_PROXY", "127.0.0.1")
        r = _get(_client(kind), srv.url + "/ok", "direct")
        assert r.status_code == 200
        assert proxy.requests == []
        assert srv.executions["direct"] == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_trust_env_false_ignores_environment_proxies(
    kind: str, clean_env: pytest.MonkeyPatch
) -> None:
    with FaultServer() as srv, ForwardProxy() as proxy:
        clean_env.setenv("HTTP_PROXY", proxy.url)
        r = _get(_client(kind, trust_env=False), srv.url + "/ok", "t")
        assert r.status_code == 200
        assert proxy.requests == []


def _proxy_pool(client: Any) -> Any:
    (transport,) = [t for t in client._mounts.values() if t is not None]
    wrapped = isinstance(transport, RetryTransport | AsyncRetryTransport)
    assert wrapped is isinstance(client, Client | AsyncClient)
    return transport._inner._pool if wrapped else transport._pool


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_explicit_proxy_keeps_its_settings_and_retries(
    kind: str, clean_env: pytest.MonkeyPatch
) -> None:
    fake = FakeTime()
    options: dict[str, Any] = dict(verify=False, http2=True, limits=httpx.Limits(max_connections=7))
    with FaultServer() as srv, ForwardProxy(rst_first=1) as proxy:
        ours = _client(kind, proxy=proxy.url, policy=_policy(fake), **options)
        plain = (httpx.Client if kind == "sync" else httpx.AsyncClient)(proxy=proxy.url, **options)
        mine, theirs = _proxy_pool(ours), _proxy_pool(plain)
        assert type(mine) is type(theirs)
        assert mine._max_connections == theirs._max_connections == 7
        assert mine._http2 is theirs._http2 is True
        assert mine._ssl_context.verify_mode == theirs._ssl_context.verify_mode == ssl.CERT_NONE
        r = _get(ours, srv.url + "/ok", "x")
        assert r.status_code == 200
        assert proxy.count("/ok") == 2
        assert srv.executions["x"] == 1
    assert len(fake.sleeps) == 1


# --------------------------------------------------------------------------- mounts, transport=


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_mounted_transport_retries(kind: str, clean_env: pytest.MonkeyPatch) -> None:
    fake = FakeTime()
    with FaultServer() as srv:
        inner = httpx.HTTPTransport() if kind == "sync" else httpx.AsyncHTTPTransport()
        client = _client(kind, policy=_policy(fake), mounts={f"http://127.0.0.1:{srv.port}": inner})
        route = client._transport_for_url(httpx.URL(srv.url))
        assert route is not client.retry_transport
        assert route._inner is inner
        r = _get(client, srv.url + "/rst?times=1", "mnt")
        assert r.status_code == 200
        assert srv.executions["mnt"] == 2
    assert len(fake.sleeps) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_transport_with_verify_cert_http2_limits_is_accepted(kind: str) -> None:
    fake = FakeTime()
    with FaultServer() as srv:
        inner = httpx.HTTPTransport() if kind == "sync" else httpx.AsyncHTTPTransport()
        client = _client(
            kind,
            transport=inner,
            policy=_policy(fake),
            verify=False,
            cert=None,
            http2=False,
            limits=httpx.Limits(max_connections=3),
        )
        assert client.retry_transport._inner is inner
        r = _get(client, srv.url + "/rst?times=1", "tv")
        assert r.status_code == 200
        assert srv.executions["tv"] == 2


class _Counting(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __enter__(self) -> _Counting:
        self.calls.append("enter")
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.calls.append("exit")
        super().__exit__(*exc)

    def close(self) -> None:
        self.calls.append("close")
        super().close()


class _AsyncCounting(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def __aenter__(self) -> _AsyncCounting:
        self.calls.append("enter")
        return await super().__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.calls.append("exit")
        await super().__aexit__(*exc)

    async def aclose(self) -> None:
        self.calls.append("close")
        await super().aclose()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_user_transport_is_entered_and_exited_once_like_httpx(kind: str) -> None:
    def calls(client_class: Any) -> list[str]:
        inner = _Counting() if kind == "sync" else _AsyncCounting()
        _get(client_class(transport=inner), srv.url + "/ok", "c")
        return inner.calls

    with FaultServer() as srv:
        plain = calls(httpx.Client if kind == "sync" else httpx.AsyncClient)
        ours = calls(Client if kind == "sync" else AsyncClient)
    assert ours.count("enter") == 1
    assert ours.count("exit") == 1
    assert ours == plain


def test_closing_without_with_closes_every_route_once(clean_env: pytest.MonkeyPatch) -> None:
    inner, mounted = _Counting(), _Counting()
    client = Client(transport=inner, mounts={"http://example.invalid": mounted})
    client.close()
    assert inner.calls == mounted.calls == ["close"]


def test_a_retry_transport_passed_in_is_not_wrapped_twice() -> None:
    fake = FakeTime()
    mine = RetryTransport(policy=_policy(fake))
    with FaultServer() as srv:
        client = Client(transport=mine)
        assert client.retry_transport is mine
        _get(client, srv.url + "/rst?times=2", "once")
        # two resets, three attempts: one layer of retries, not 3 x 3
        assert srv.executions["once"] == 3


def test_clients_expose_policy_and_shared_idle_limits(clean_env: pytest.MonkeyPatch) -> None:
    policy = HTTPPolicy(idle_timeout=2.5)
    client = Client(policy=policy, proxy="http://127.0.0.1:9", mounts={"all://x": None})
    try:
        assert client.policy is policy
        assert client.idle_limits is client.retry_transport.idle_limits
        proxy_route = client._transport_for_url(httpx.URL("http://example.org"))
        assert proxy_route is not client.retry_transport
        assert proxy_route.idle_limits is client.idle_limits
        assert proxy_route.guards is client.guards  # one budget and breaker set per client
        assert client.idle_limits.limit("example.org:80") == 2.5
    finally:
        client.close()


# --------------------------------------------------------------------------- same as httpx


def _scenarios(url: str) -> dict[str, Any]:
    """Calls made the same way on httpx's client and ours: (options, call)."""

    def hooks_seen(seen: list[str]) -> dict[str, Any]:
        return {
            "event_hooks": {
                "request": [lambda r: seen.append(f"request {r.method}")],
                "response": [lambda r: seen.append(f"response {r.status_code}")],
            }
        }

    seen: list[str] = []
    return {
        "base_url+params": ({"base_url": url, "params": {"a": "1"}}, lambda c: c.get("/ok")),
        "headers+cookies": (
            {"headers": {"X-A": "1"}, "cookies": {"c": "v"}},
            lambda c: c.get(url + "/ok"),
        ),
        "auth": ({"auth": ("user", "secret")}, lambda c: c.get(url + "/ok")),
        "json": ({}, lambda c: c.post(url + "/echo", json={"k": [1, 2]})),
        "form": ({}, lambda c: c.post(url + "/echo", data={"k": "v"})),
        "multipart+data": (
            {},
            lambda c: c.post(url + "/echo", data={"k": "v"}, files={"f": ("a.txt", b"abc")}),
        ),
        "bytes": ({}, lambda c: c.put(url + "/echo", content=b"x" * 1000)),
        "iterator": ({}, lambda c: c.put(url + "/echo", content=iter([b"ab", b"cd"]))),
        "stream": ({}, lambda c: _streamed(c, url + "/big?size=5000")),
        "event_hooks": (hooks_seen(seen), lambda c: (c.get(url + "/ok"), list(seen))[1]),
        "status": ({}, lambda c: c.get(url + "/status?code=404")),
        "timeout": ({"timeout": httpx.Timeout(2.0)}, lambda c: c.get(url + "/slow?ms=10")),
        "build_request+send": ({}, lambda c: c.send(c.build_request("GET", url + "/ok"))),
        "default_encoding": ({"default_encoding": "latin-1"}, lambda c: c.get(url + "/ok")),
    }


def _streamed(client: httpx.Client, url: str) -> tuple[int, int]:
    with client.stream("GET", url) as response:
        return response.status_code, sum(len(chunk) for chunk in response.iter_bytes())


def _outcome(result: Any) -> Any:
    if isinstance(result, httpx.Response):
        sent = {
            k: re.sub(r"boundary=\w+", "boundary=*", v) for k, v in result.request.headers.items()
        }
        return (
            result.status_code,
            result.text,
            result.encoding,
            result.request.method,
            str(result.request.url),
            sent,
        )
    return result


@pytest.mark.parametrize(
    "name",
    [
        "base_url+params",
        "headers+cookies",
        "auth",
        "json",
        "form",
        "multipart+data",
        "bytes",
        "iterator",
        "stream",
        "event_hooks",
        "status",
        "timeout",
        "build_request+send",
        "default_encoding",
    ],
)
def test_same_outcome_as_httpx(name: str, clean_env: pytest.MonkeyPatch) -> None:
    with FaultServer() as srv:
        outcomes = []
        for client_class in (httpx.Client, Client):
            options, call = _scenarios(srv.url)[name]
            with client_class(**options) as c:
                outcomes.append(_outcome(call(c)))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_https_through_a_connect_proxy_with_a_retry(
    kind: str, tls_files: tuple[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    cert, key = tls_files
    fake = FakeTime()
    with TLSServer(cert, key) as srv, ForwardProxy() as proxy:
        context = ssl.create_default_context(cafile=cert)
        client = _client(kind, proxy=proxy.url, verify=context, policy=_policy(fake))
        r = _get(client, srv.url + "/rst", "tls")  # reset inside the tunnel: retried
        assert r.status_code == 200
        assert srv.seen.count("/rst") == 2
        assert proxy.count("CONNECT") >= 2


def test_a_file_body_followed_through_a_redirect_is_rewound_for_a_retry(tmp_path: Path) -> None:
    fake = FakeTime()
    path = tmp_path / "body.bin"
    path.write_bytes(b"payload" * 3000)
    with FaultServer() as srv, Client(policy=_policy(fake)) as c, path.open("rb") as file:
        r = c.put(
            srv.url + "/redirect?code=307&to=/rst%3Ftimes%3D2",
            content=file,
            headers={"X-Req-Id": "rd"},
            follow_redirects=True,
        )
        assert r.status_code == 200
        assert srv.executions["rd"] == 3  # the redirect, the reset attempt, its retry
        assert srv.bodies["rd"] == [b"payload" * 3000] * 3


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_verify_on_the_default_route_is_httpx_own(
    kind: str, tls_files: tuple[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    cert, key = tls_files
    fake = FakeTime()
    with TLSServer(cert, key) as srv:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(_client(kind, policy=_policy(fake)), srv.url + "/ok", "v")  # self-signed
        context = ssl.create_default_context(cafile=cert)
        r = _get(_client(kind, verify=context, policy=_policy(fake)), srv.url + "/rst", "v")
        assert r.status_code == 200
        assert srv.seen == ["/rst", "/rst"]  # reset over TLS, retried
