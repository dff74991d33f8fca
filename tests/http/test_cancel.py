"""Breaker tickets in the HTTP transports: each attempt's is handed back, and refusals.

An attempt ended by cancellation (or an interrupt) hands its breaker ticket back.
Otherwise a half-open probe cancelled mid-flight keeps its slot for good, and the breaker
rejects every later request. Each test: open the breaker with a refused connection, let
the open period pass (fake time), start the probe against a real server that delays its
answer, end it with a BaseException while the server holds it, then send one more request.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import aiohttp
import httpx
import pytest
import requests

import resetguard
from resetguard import CircuitBreaker, CircuitState, Retry
from resetguard.http import HTTPPolicy
from resetguard.http._aiohttp import RetrySession
from resetguard.http._httpx import AsyncClient, Client
from resetguard.http._requests import Session
from tests._faketime import FakeTime

from ._server import FaultServer

SLOW = "/slow?ms=400"


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt / gevent.Timeout: a BaseException, not an Exception."""


def _half_open(fake: FakeTime) -> tuple[CircuitBreaker, HTTPPolicy]:
    breaker = CircuitBreaker(
        "cancel", failure_threshold=1, open_duration=1.0, jitter=0, clock=fake.clock
    )
    # no patience: the refused request must fail at once and open the breaker
    policy = HTTPPolicy(retry=Retry(attempts=1, breaker=breaker, **fake.options()), patience=0)
    return breaker, policy


def _open_then_wait(
    fake: FakeTime, breaker: CircuitBreaker, error: type[Exception], fail: Callable[[], object]
) -> None:
    with pytest.raises(error):
        fail()
    assert breaker.state is CircuitState.OPEN
    fake.now += 2.0  # the open period is over: the next request is the half-open probe
    assert breaker.state is CircuitState.HALF_OPEN


async def _await_arrival(srv: FaultServer, before: int) -> None:
    """Until the server holds the probe (bounded: 5 s)."""
    end = time.monotonic() + 5
    while srv.requests == before:
        assert time.monotonic() < end, "the probe never reached the server"
        await asyncio.sleep(0.005)


@contextmanager
def _interrupt_after(seconds: float) -> Iterator[None]:
    """Raise _Interrupt in the main thread after ``seconds`` (a real signal, like Ctrl-C)."""

    def handler(signum: int, frame: object) -> None:
        raise _Interrupt

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_async_httpx_cancelled_probe_gives_its_slot_back(unused_port: int) -> None:
    fake = FakeTime()
    breaker, policy = _half_open(fake)

    async def main() -> int:
        with FaultServer() as srv:
            async with AsyncClient(policy=policy) as client:
                await _aopen(client)
                before = srv.requests
                probe = asyncio.create_task(client.get(srv.url + SLOW))
                await _await_arrival(srv, before)
                probe.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await probe
                response = await client.get(srv.url + "/ok")  # not CircuitOpen
                return response.status_code

    async def _aopen(client: AsyncClient) -> None:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{unused_port}/x")
        fake.now += 2.0
        assert breaker.state is CircuitState.HALF_OPEN

    assert asyncio.run(main()) == 200
    assert breaker.state is CircuitState.CLOSED


def test_aiohttp_cancelled_probe_gives_its_slot_back(unused_port: int) -> None:
    fake = FakeTime()
    breaker, policy = _half_open(fake)

    async def main() -> int:
        with FaultServer() as srv:
            async with RetrySession(policy=policy) as session:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await session.get(f"http://127.0.0.1:{unused_port}/x")
                fake.now += 2.0
                assert breaker.state is CircuitState.HALF_OPEN
                before = srv.requests
                probe = asyncio.create_task(session.get(srv.url + SLOW))
                await _await_arrival(srv, before)
                probe.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await probe
                response = await session.get(srv.url + "/ok")  # not CircuitOpen
                return response.status

    assert asyncio.run(main()) == 200
    assert breaker.state is CircuitState.CLOSED


def test_sync_httpx_interrupted_probe_gives_its_slot_back(unused_port: int) -> None:
    fake = FakeTime()
    breaker, policy = _half_open(fake)
    with FaultServer() as srv, Client(policy=policy) as client:
        _open_then_wait(
            fake,
            breaker,
            httpx.ConnectError,
            lambda: client.get(f"http://127.0.0.1:{unused_port}/x"),
        )
        with pytest.raises(_Interrupt), _interrupt_after(0.1):
            client.get(srv.url + SLOW)
        assert srv.requests == 1  # the server held the probe when it was interrupted
        assert client.get(srv.url + "/ok").status_code == 200  # not CircuitOpen
    assert breaker.state is CircuitState.CLOSED


def test_requests_interrupted_probe_gives_its_slot_back(unused_port: int) -> None:
    fake = FakeTime()
    breaker, policy = _half_open(fake)
    with FaultServer() as srv, Session(policy=policy) as session:
        _open_then_wait(
            fake,
            breaker,
            requests.ConnectionError,
            lambda: session.get(f"http://127.0.0.1:{unused_port}/x"),
        )
        with pytest.raises(_Interrupt), _interrupt_after(0.1):
            session.get(srv.url + SLOW)
        assert srv.requests == 1
        assert session.get(srv.url + "/ok").status_code == 200  # not CircuitOpen
    assert breaker.state is CircuitState.CLOSED


# --------------------------------------------------------------------------- refusals


def _refusing(fake: FakeTime) -> tuple[CircuitBreaker, HTTPPolicy]:
    """The first failure opens the breaker, which then refuses the scheduled retry.

    No patience: with it, a probe 30 s away is known to be out of reach before any sleep,
    and the request gives up at once (tests/test_engine.py covers that)."""
    breaker = CircuitBreaker("refuse", failure_threshold=1, jitter=0, clock=fake.clock)
    retry = Retry(attempts=3, breaker=breaker, **fake.options())
    return breaker, HTTPPolicy(retry=retry, patience=0)


def _check_refused_retry(error: BaseException, breaker: CircuitBreaker, fake: FakeTime) -> None:
    # The user's own error, not CircuitOpen: the request did fail, once.
    assert len(resetguard.history(error)) == 1
    assert any("circuit breaker open" in note for note in error.__notes__)
    assert breaker.statistics().rejected == 1
    assert len(fake.sleeps) == 1  # the retry was scheduled, then refused


def test_refused_retry_surfaces_the_connection_error_httpx(unused_port: int) -> None:
    fake = FakeTime()
    breaker, policy = _refusing(fake)
    with Client(policy=policy) as client, pytest.raises(httpx.ConnectError) as info:
        client.get(f"http://127.0.0.1:{unused_port}/x")
    _check_refused_retry(info.value, breaker, fake)


def test_refused_retry_surfaces_the_connection_error_httpx_async(unused_port: int) -> None:
    fake = FakeTime()
    breaker, policy = _refusing(fake)

    async def main() -> None:
        async with AsyncClient(policy=policy) as client:
            await client.get(f"http://127.0.0.1:{unused_port}/x")

    with pytest.raises(httpx.ConnectError) as info:
        asyncio.run(main())
    _check_refused_retry(info.value, breaker, fake)


def test_refused_retry_surfaces_the_connection_error_requests(unused_port: int) -> None:
    fake = FakeTime()
    breaker, policy = _refusing(fake)
    with Session(policy=policy) as session, pytest.raises(requests.ConnectionError) as info:
        session.get(f"http://127.0.0.1:{unused_port}/x")
    _check_refused_retry(info.value, breaker, fake)


def test_refused_retry_surfaces_the_connection_error_aiohttp(unused_port: int) -> None:
    fake = FakeTime()
    breaker, policy = _refusing(fake)

    async def main() -> None:
        async with RetrySession(policy=policy) as session:
            await session.get(f"http://127.0.0.1:{unused_port}/x")

    with pytest.raises(aiohttp.ClientConnectorError) as info:
        asyncio.run(main())
    _check_refused_retry(info.value, breaker, fake)
