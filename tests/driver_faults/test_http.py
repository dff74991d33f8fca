"""HTTP clients (requests, httpx sync/async, aiohttp) against a loopback fault server: each
research record reproduced, then classified; the requests the server saw are compared too
(so a client that starts or stops re-sending by itself is noticed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._records import Record, check_record, records_for
from ._servers import FaultHTTPServer, LoopThread

# fault -> the requests made on one client object, in order: (method, path)
PLAN: dict[str, list[tuple[str, str]]] = {
    "a-rst-before-response": [("GET", "/rst")],
    "b-fin-before-response": [("GET", "/fin")],
    "c-rst-mid-body": [("GET", "/rstbody")],
    "c2-fin-mid-body": [("GET", "/finbody")],
    "d-stale-keepalive": [("GET", "/ka"), ("GET", "/ok")],
    "e-reused-conn-fin": [("GET", "/ok"), ("GET", "/fin")],
    "g-post-reused-conn-fin": [("GET", "/ok"), ("POST", "/fin")],
}
STALE_WAIT = 0.3  # the server FINs an idle /ka connection after 0.1 s


@pytest.fixture
def server() -> Iterator[FaultHTTPServer]:
    with FaultHTTPServer() as srv:
        yield srv


def _run_plan(fault: str, request: Callable[[str, str], object]) -> BaseException | None:
    for i, (method, path) in enumerate(PLAN[fault]):
        if fault == "d-stale-keepalive" and i == 1:
            time.sleep(STALE_WAIT)
        try:
            request(method, path)
        except Exception as exc:
            return exc
    return None


def requests_scenario(fault: str, base: str) -> BaseException | None:
    import requests

    with requests.Session() as session:

        def request(method: str, path: str) -> None:
            data = b"payload" if method == "POST" else None
            session.request(method, base + path, data=data, timeout=2).raise_for_status()

        return _run_plan(fault, request)


def httpx_scenario(fault: str, base: str) -> BaseException | None:
    import httpx

    with httpx.Client(timeout=2) as client:

        def request(method: str, path: str) -> None:
            content = b"payload" if method == "POST" else None
            client.request(method, base + path, content=content).read()

        return _run_plan(fault, request)


def httpx_async_scenario(fault: str, base: str, loop: LoopThread) -> BaseException | None:
    import asyncio

    import httpx

    async def scenario() -> BaseException | None:
        async with httpx.AsyncClient(timeout=2) as client:
            for i, (method, path) in enumerate(PLAN[fault]):
                if fault == "d-stale-keepalive" and i == 1:
                    await asyncio.sleep(STALE_WAIT)
                content = b"payload" if method == "POST" else None
                try:
                    await (await client.request(method, base + path, content=content)).aread()
                except Exception as exc:
                    return exc
        return None

    return loop.run(scenario())


def aiohttp_scenario(fault: str, base: str, loop: LoopThread) -> BaseException | None:
    import asyncio

    import aiohttp

    async def scenario() -> BaseException | None:
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for i, (method, path) in enumerate(PLAN[fault]):
                if fault == "d-stale-keepalive" and i == 1:
                    await asyncio.sleep(STALE_WAIT)
                data = b"payload" if method == "POST" else None
                try:
                    async with session.request(method, base + path, data=data) as resp:
                        await resp.read()
                except Exception as exc:
                    return exc
        return None

    return loop.run(scenario())


def normalized(seen: list[str]) -> list[str]:
    """``conn23:/ok, conn23:/fin`` -> ``c1:/ok, c1:/fin``: connection identity by order."""
    order: dict[str, int] = {}
    out = []
    for item in seen:
        conn, _, path = item.partition(":")
        order.setdefault(conn, len(order) + 1)
        out.append(f"c{order[conn]}:{path}")
    return out


HTTP_DRIVERS = ("requests-session", "httpx-client", "httpx-asyncclient", "aiohttp-clientsession")


@pytest.mark.parametrize("record", records_for(*HTTP_DRIVERS))
def test_http_record(record: Record, server: FaultHTTPServer, loop_thread: LoopThread) -> None:
    fault, base = record["fault"], server.url
    scenarios: dict[str, Callable[[], BaseException | None]] = {
        "requests-session": lambda: requests_scenario(fault, base),
        "httpx-client": lambda: httpx_scenario(fault, base),
        "httpx-asyncclient": lambda: httpx_async_scenario(fault, base, loop_thread),
        "aiohttp-clientsession": lambda: aiohttp_scenario(fault, base, loop_thread),
    }
    exc = scenarios[record["driver_key"]]()
    check_record(record, exc)
    expected_seen: Any = record.get("requests_seen_by_server")
    if expected_seen:
        if all(":" in s for s in expected_seen):
            assert normalized(server.seen) == normalized(expected_seen)
        else:
            assert [s.partition(":")[2] for s in server.seen] == expected_seen
