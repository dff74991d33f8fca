"""redis-py (sync and asyncio, default retry and ``Retry(NoBackoff(), 0)``): each research
record reproduced against the real Redis, then classified.

Clients are killed with ``CLIENT KILL ID <id>`` (found by a unique client name). F3 (server
restart) is reproduced without restarting the shared server: on SIGTERM Redis closes every
client connection, which the client sees as the same FIN as ``CLIENT KILL`` ("Connection
closed by server."). F4 does not touch the global ``timeout``: the client connects through a
loopback proxy that closes connections idle for more than 0.3 s, which is what Redis's
``timeout`` does (a FIN without a reply).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._records import Record, check_record, records_for
from ._servers import FaultProxy, LoopThread
from .conftest import RedisAdmin, tag

pytestmark = pytest.mark.redis

REDIS = ("127.0.0.1", 6379)
IDLE_CLOSE = 0.3
BLOCK_S = 0.5  # BLMOVE timeout in seconds: the "slow statement" (Redis >= 6 takes fractions)


class Case:
    def __init__(self, record: Record, admin: RedisAdmin, unused_port: int) -> None:
        self.record = record
        self.fault = record["fault"]
        self.admin = admin
        self.name = tag("redis")
        self.key = self.name
        proxy_needed = self.fault in ("F4", "F6", "F6-reply-lost")
        self.proxy = (
            FaultProxy(REDIS, idle_close=IDLE_CLOSE if self.fault == "F4" else None)
            if proxy_needed
            else None
        )
        self.port = self.proxy.port if self.proxy else REDIS[1]
        if self.fault == "F5":
            self.port = unused_port
        key = record["driver_key"]
        driver = record["driver"]
        self.no_retry = key.endswith("-noretry") or "NoBackoff" in driver
        self.asyncio = key.startswith("redis-asyncio") or "asyncio" in driver

    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": REDIS[0],
            "port": self.port,
            "client_name": self.name,
            "socket_connect_timeout": 2,
        }
        if self.no_retry:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            kwargs["retry"] = Retry(NoBackoff(), 0)
        return kwargs

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        self.admin.client.delete(self.key, self.key + ":dst")


@pytest.fixture
def case(
    request: pytest.FixtureRequest, redis_admin: RedisAdmin, unused_port: int
) -> Iterator[Case]:
    c = Case(request.node.callspec.params["record"], redis_admin, unused_port)
    try:
        yield c
    finally:
        c.close()


def _in_flight_fault(case: Case) -> Callable[[], None]:
    def act() -> None:
        case.admin.wait_cmd(case.name, "blmove")
        if case.fault == "F2":
            case.admin.kill(case.name)
        else:
            assert case.proxy is not None
            assert case.proxy.reset_all() >= 1

    return act


def sync_scenario(case: Case) -> BaseException | None:
    import redis

    client = redis.Redis(**case.kwargs())
    try:
        if case.fault == "F5":
            try:
                client.ping()
            except Exception as exc:
                return exc
            return None
        client.ping()
        if case.fault == "F6-reply-lost":
            assert case.proxy is not None
            case.proxy.arm_reply_loss(rst_after=0.3)
            try:
                client.incr(case.key)
            except Exception as exc:
                return exc
            return None
        if case.fault in ("F1", "F3"):
            case.admin.kill(case.name)
            time.sleep(0.1)
        elif case.fault == "F4":
            time.sleep(IDLE_CLOSE * 2)
        if case.fault in ("F1", "F3", "F4"):
            try:
                client.set(case.key, "1")
            except Exception as exc:
                return exc
            return None
        errors: list[BaseException] = []

        def side() -> None:
            try:
                _in_flight_fault(case)()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=side, daemon=True)
        thread.start()
        try:
            client.blmove(case.key, case.key + ":dst", BLOCK_S, "LEFT", "RIGHT")  # type: ignore[arg-type]
        except Exception as exc:
            return exc
        finally:
            thread.join(5)
            if errors:
                raise errors[0]
        return None
    finally:
        client.close()


def async_scenario(case: Case, loop: LoopThread) -> BaseException | None:
    import redis.asyncio as aredis

    async def scenario() -> BaseException | None:
        client = aredis.Redis(**case.kwargs())
        try:
            if case.fault == "F5":
                try:
                    await client.ping()
                except Exception as exc:
                    return exc
                return None
            await client.ping()
            if case.fault == "F6-reply-lost":
                assert case.proxy is not None
                case.proxy.arm_reply_loss(rst_after=0.3)
                try:
                    await client.incr(case.key)
                except Exception as exc:
                    return exc
                return None
            if case.fault in ("F1", "F3"):
                await asyncio.to_thread(case.admin.kill, case.name)
                await asyncio.sleep(0.1)
            elif case.fault == "F4":
                await asyncio.sleep(IDLE_CLOSE * 2)
            if case.fault in ("F1", "F3", "F4"):
                try:
                    await client.set(case.key, "1")
                except Exception as exc:
                    return exc
                return None
            side = asyncio.ensure_future(asyncio.to_thread(_in_flight_fault(case)))
            try:
                await client.blmove(case.key, case.key + ":dst", BLOCK_S, "LEFT", "RIGHT")  # type: ignore[arg-type]
            except Exception as exc:
                return exc
            finally:
                await asyncio.wait_for(side, 5)
            return None
        finally:
            await client.aclose()

    return loop.run(scenario(), timeout=15)


REDIS_DRIVERS = ("redis", "redis-noretry", "redis-asyncio", "redis-asyncio-noretry", "redis-extra")


def _params() -> list[Any]:
    params = []
    for p in records_for(*REDIS_DRIVERS):
        record = p.values[0]
        marks = list(p.marks)
        # Default retry backs off ~3-4 s before giving up on a refused port.
        if record and record["fault"] == "F5" and "noretry" not in record["driver_key"]:
            marks.append(pytest.mark.slow)
        params.append(pytest.param(record, id=p.id, marks=marks))
    return params


@pytest.mark.parametrize("record", _params())
def test_redis_record(record: Record, case: Case, loop_thread: LoopThread) -> None:
    exc = async_scenario(case, loop_thread) if case.asyncio else sync_scenario(case)
    check_record(record, exc)
    value = case.admin.client.get(case.key)
    if record["fault"] == "F6-reply-lost":
        # INCR ran once, and a second time when the default retry re-sent it.
        assert int(value or 0) == record["incr_executions_on_server"]
    elif record["fault"] in ("F1", "F3", "F4"):
        assert (value is not None) == bool(record["executed_on_server"])
