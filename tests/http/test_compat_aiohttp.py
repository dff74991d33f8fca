"""RetrySession as a drop-in for aiohttp.ClientSession: both request forms, proxies,
connector options and multipart uploads, on real loopback servers and a real proxy."""

from __future__ import annotations

import asyncio
import gc
import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from resetguard import Retry
from resetguard.http import HTTPPolicy
from resetguard.http._aiohttp import RequestContext, RetrySession
from tests._faketime import FakeTime

from ._proxy import ForwardProxy
from ._server import FaultServer
from ._workload import arun

VERBS = ["get", "head", "options", "post", "put", "patch", "delete"]


def _policy(fake: FakeTime, **kw: Any) -> HTTPPolicy:
    return HTTPPolicy(retry=Retry(attempts=3, **fake.options()), **kw)  # type: ignore[arg-type]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- async with


@pytest.mark.parametrize("verb", [*VERBS, "request"])
def test_async_with_and_await_both_work_and_retry(
    verb: str, recwarn: pytest.WarningsRecorder
) -> None:
    fake = FakeTime()

    def call(s: RetrySession, url: str, req_id: str) -> RequestContext:
        headers = {"X-Req-Id": req_id, "Idempotency-Key": req_id}
        if verb == "request":
            return s.request("GET", url, headers=headers)
        return getattr(s, verb)(url, headers=headers)

    async def main() -> tuple[list[int], aiohttp.ClientResponse, aiohttp.ClientResponse]:
        async with RetrySession(policy=_policy(fake)) as s:
            # the server executes, then resets: the retry must happen in both forms
            async with call(s, srv.url + "/rst?times=1", "with") as entered:
                statuses = [entered.status]
                assert entered.connection is not None or entered.closed
            awaited = await call(s, srv.url + "/rst?times=1", "await")
            statuses.append(awaited.status)
            awaited.release()
            return statuses, entered, awaited

    with FaultServer() as srv:
        statuses, entered, awaited = asyncio.run(main())
        assert statuses == [200, 200]
        assert srv.executions["with"] == 2
        assert srv.executions["await"] == 2
    assert entered.connection is None  # released when the block ended
    assert awaited.connection is None
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_async_with_releases_the_response_when_the_block_raises() -> None:
    async def main() -> aiohttp.ClientResponse:
        async with RetrySession() as s:
            with pytest.raises(LookupError):
                async with s.get(srv.url + "/ok", read=False) as response:
                    raise LookupError("user code failed")
            # the connection went back to the pool: the next request reuses it
            async with s.get(srv.url + "/ok") as again:
                assert again.status == 200
            return response

    with FaultServer() as srv:
        response = asyncio.run(main())
        assert srv.connections == 1
    assert response.connection is None


def test_a_request_context_never_used_does_not_leak_a_warning(
    recwarn: pytest.WarningsRecorder,
) -> None:
    async def main() -> None:
        async with RetrySession() as s:
            response = await s.get(srv.url + "/ok")
            assert await response.text() == "ok"

    with FaultServer() as srv:
        asyncio.run(main())
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_async_with_on_a_retried_status() -> None:
    fake = FakeTime()

    async def main() -> tuple[int, str]:
        async with RetrySession(policy=_policy(fake)) as s:
            url = srv.url + "/status?code=503&times=2"
            async with s.get(url, headers={"X-Req-Id": "s"}) as response:
                return response.status, await response.text()

    with FaultServer() as srv:
        assert asyncio.run(main()) == (200, "ok")
        assert srv.executions["s"] == 3


# --------------------------------------------------------------------------- proxies


def test_trust_env_proxy_is_used_and_a_reset_through_it_is_retried(
    clean_env: pytest.MonkeyPatch,
) -> None:
    fake = FakeTime()

    async def main(**options: Any) -> int:
        async with (
            RetrySession(policy=_policy(fake), **options) as s,
            s.get(srv.url + "/ok", headers={"X-Req-Id": "e"}) as response,
        ):
            return response.status

    with FaultServer() as srv, ForwardProxy(rst_first=1) as proxy:
        clean_env.setenv("HTTP_PROXY", proxy.url)
        assert asyncio.run(main(trust_env=True)) == 200
        assert proxy.count("/ok") == 2
        assert srv.executions["e"] == 1
        assert len(fake.sleeps) == 1
        # without trust_env (aiohttp's default) the environment is ignored
        assert asyncio.run(main()) == 200
        assert proxy.count("/ok") == 2
        # NO_PROXY honoured
        clean_env.setenv("NO_PROXY", "127.0.0.1")
        assert asyncio.run(main(trust_env=True)) == 200
        assert proxy.count("/ok") == 2
        assert srv.executions["e"] == 3


def test_explicit_proxy_argument_with_a_retry(clean_env: pytest.MonkeyPatch) -> None:
    fake = FakeTime()

    async def main() -> int:
        async with RetrySession(policy=_policy(fake)) as s:
            response = await s.get(srv.url + "/ok", proxy=proxy.url, headers={"X-Req-Id": "p"})
            return response.status

    with FaultServer() as srv, ForwardProxy(rst_first=1) as proxy:
        assert asyncio.run(main()) == 200
        assert proxy.count("/ok") == 2
        assert srv.executions["p"] == 1


# --------------------------------------------------------------------------- connector


def test_a_plain_connector_keeps_its_options_and_gains_idle_expiry() -> None:
    async def main() -> tuple[int, bool]:
        connector = aiohttp.TCPConnector(limit=3, keepalive_timeout=30)
        policy = HTTPPolicy(idle_timeout=0.2)
        async with RetrySession(policy=policy, connector=connector) as s:
            assert s.session.connector is connector
            for _ in range(2):
                async with s.get(srv.url + "/ok") as response:
                    assert response.status == 200
                await asyncio.sleep(0.5)  # past our idle limit, far below keepalive_timeout
            return connector.limit, connector.force_close

    with FaultServer() as srv:
        assert asyncio.run(main()) == (3, False)
        assert srv.connections == 2  # the idle connection was retired, not reused


# --------------------------------------------------------------------------- uploads


def _form(kind: str, file: Any) -> Any:
    if kind == "formdata":
        form = aiohttp.FormData()
        form.add_field("note", "hello")
        form.add_field("f", file, filename="upload.bin")
        return form
    return {"note": "hello", "f": file}


@pytest.mark.parametrize("kind", ["formdata", "dict", "file"])
def test_file_is_rewound_when_a_retry_replays_it_and_closed_after(
    kind: str, tmp_path: Path
) -> None:
    fake = FakeTime()
    path = tmp_path / "upload.bin"
    path.write_bytes(b"0123456789" * 5000)

    async def main() -> tuple[int, bool]:
        async with RetrySession(policy=_policy(fake)) as s:
            file = path.open("rb")
            data = file if kind == "file" else _form(kind, file)
            async with s.put(
                srv.url + "/rst?times=1", data=data, headers={"X-Req-Id": "f"}
            ) as response:
                status = response.status
            await asyncio.sleep(0.05)  # aiohttp closes file bodies in a worker thread
            return status, file.closed

    with FaultServer() as srv:
        status, closed = asyncio.run(main())
        first, second = srv.bodies["f"]
    assert status == 200
    assert closed  # as aiohttp does, once the request is over
    assert srv.executions["f"] == 2
    assert path.read_bytes() in first
    assert path.read_bytes() in second
    if kind == "file":
        assert first == second == path.read_bytes()
    else:
        assert b"hello" in second


def test_multipart_upload_without_retry(tmp_path: Path) -> None:
    async def main() -> str:
        async with RetrySession() as s:
            form = aiohttp.FormData()
            form.add_field("f", b"data", filename="f.bin")
            async with s.post(srv.url + "/echo", data=form, headers={"X-Req-Id": "m"}) as r:
                return await r.text()

    with FaultServer() as srv:
        length = asyncio.run(main())
        (body,) = srv.bodies["m"]
    assert int(length) == len(body)
    assert b"\r\n\r\ndata\r\n" in body


def test_a_form_with_an_unseekable_stream_is_sent_once() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.left = [b"x" * 100]

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def read(self, size: int = -1) -> bytes:
            return self.left.pop(0) if self.left else b""

    fake = FakeTime()

    async def main() -> None:
        async with RetrySession(policy=_policy(fake)) as s:
            await s.put(srv.url + "/rst?times=1", data={"f": Pipe()}, headers={"X-Req-Id": "n"})

    with FaultServer() as srv:
        with pytest.raises(aiohttp.ClientError):
            asyncio.run(main())
        assert srv.executions["n"] == 1


def test_async_with_form_under_the_keepalive_race() -> None:
    """The stale keep-alive race, every request made with ``async with``."""

    async def main() -> Any:
        async with RetrySession(policy=HTTPPolicy(learn_idle=False)) as s:

            async def send(method: str, path: str, headers: Any, body: Any) -> int:
                async with s.request(method, srv.url + path, headers=headers, data=body) as r:
                    r.raise_for_status()
                    return r.status

            return await arun(send, n=16, gap=(0.05, 0.1))

    with FaultServer(idle_close=0.1, read_delay=0.025) as srv:
        out = asyncio.run(main())
    assert srv.race_hits >= 2, "the race never fired: the test proves nothing"
    assert out.count("GET") == 0, out.errors.get("GET")
    assert srv.duplicates("POST") == 0


def test_other_client_session_attributes_are_the_wrapped_sessions() -> None:
    async def main() -> tuple[Any, ...]:
        s = RetrySession(headers={"X-Team": "a"})
        try:
            before = s.closed
            assert s.cookie_jar is s.session.cookie_jar
            assert s.headers["X-Team"] == "a"
        finally:
            await s.close()
        return before, s.closed

    assert asyncio.run(main()) == (False, True)
    with pytest.raises(AttributeError):
        RetrySession.__new__(RetrySession).no_such_attribute  # noqa: B018


def test_base_url_requests_are_guarded_under_their_real_origin() -> None:
    # A relative URL is joined with base_url as aiohttp joins it: its breaker is the
    # server's, shared with an absolute URL to the same server (it was keyed "None:80").
    async def main(url: str) -> tuple[list[int], dict[str, Any]]:
        async with RetrySession(base_url=url) as s:
            async with s.get("/ok") as relative:
                first = relative.status
            absolute = await s.get(url + "/ok")
            return [first, absolute.status], s.guards.states()

    with FaultServer() as srv:
        statuses, states = asyncio.run(main(srv.url))
    assert statuses == [200, 200]
    assert list(states) == [f"127.0.0.1:{srv.port}"]


def test_an_invalid_url_fails_when_awaited_as_with_aiohttp() -> None:
    async def main() -> tuple[str, list[str]]:
        async with RetrySession() as s:
            pending = s.get("http://[bad")  # building the request raises nothing yet
            with pytest.raises(aiohttp.InvalidUrlClientError) as caught:
                await pending
            with pytest.raises(aiohttp.InvalidUrlClientError):
                await s.get("no host")
            return str(caught.value), list(s.guards.states())

    text, origins = asyncio.run(main())
    assert text == "http://[bad"
    assert origins == ["(invalid URL)"]
