"""The documented idle-limit accessor of every client shows a limit learned from a real
server that closes idle keep-alive connections (docs/http.md, "The learned idle limit")."""

from __future__ import annotations

import asyncio
import time

import pytest

from resetguard.http import IdleLimits
from resetguard.http._aiohttp import RetrySession
from resetguard.http._httpx import AsyncClient, Client
from resetguard.http._requests import Session

from ._server import FaultServer

IDLE_CLOSE = 0.2
PAUSE = 0.3


def _sync(client_class: type, url: str) -> IdleLimits:
    with client_class() as client:
        for _ in range(3):
            client.get(url + "/ok")
            time.sleep(PAUSE)
        limits: IdleLimits = client.idle_limits
        return limits


async def _httpx_async(url: str) -> IdleLimits:
    async with AsyncClient() as client:
        for _ in range(3):
            await client.get(url + "/ok")
            await asyncio.sleep(PAUSE)
        return client.idle_limits


async def _aiohttp(url: str) -> IdleLimits:
    async with RetrySession() as session:
        for _ in range(3):
            async with session.get(url + "/ok") as response:
                assert response.status == 200
            await asyncio.sleep(PAUSE)
        return session.idle_limits


@pytest.mark.parametrize("client", ["httpx", "httpx-async", "requests", "aiohttp"])
def test_every_client_shows_the_learned_limit(client: str) -> None:
    with FaultServer(idle_close=IDLE_CLOSE) as srv:
        if client == "httpx":
            limits = _sync(Client, srv.url)
        elif client == "requests":
            limits = _sync(Session, srv.url)
        elif client == "httpx-async":
            limits = asyncio.run(_httpx_async(srv.url))
        else:
            limits = asyncio.run(_aiohttp(srv.url))
        assert srv.idle_closes >= 2
    (origin,) = limits.snapshot()
    assert origin.origin == f"127.0.0.1:{srv.port}"
    assert origin.learned is not None
    assert IDLE_CLOSE * 0.8 <= origin.learned <= 2.0
    assert origin.limit == origin.learned
