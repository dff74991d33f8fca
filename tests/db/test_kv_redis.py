"""resetguard.db.redis_client / async_redis_client against the real Redis.

Faults: ``resetguard.proxy`` resets replies on their way back (the server ran the command,
the client never hears), refuses connections (nothing sent); ``CLIENT KILL`` of our own
named connections; a private redis-server with ``timeout 1`` for idle closes. Every test
uses its own key and kills only its own connections.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

import resetguard
from resetguard import Backoff, Retry
from resetguard.db import async_redis_client, is_safe_command, redis_client
from resetguard.proxy import Down, FaultProxy, ResetPeer
from tests.driver_faults._servers import FaultProxy as ReplyLossProxy

from ._kv_fixtures import *  # noqa: F403  (the fixtures: admin, key, private_redis…)
from ._kv_fixtures import kill_clients

pytestmark = [
    pytest.mark.redis,
    # lib_name=None is how redis-py 8.1 skips CLIENT SETINFO (deprecated, still working).
    pytest.mark.filterwarnings("ignore:Call to '__init__':DeprecationWarning"),
]

REDIS = ("127.0.0.1", 6379)
# Clients that send no handshake (no HELLO: RESP2; no CLIENT SETINFO): the first reply on a
# connection is then the reply to the caller's command, which a downstream reset_peer drops.
QUIET: dict[str, Any] = {"lib_name": None, "lib_version": None, "protocol": 2}
# Many fast attempts: the randomised tests must not depend on backoff luck.
PATIENT = Retry(attempts=10, deadline=20.0, backoff=Backoff.none())


def _count(admin: Any, key: str) -> int:
    return int(admin.get(key) or 0)


# -- the research fact, verified with the installed redis-py ---------------------------------


def test_plain_redis_py_runs_an_incr_twice_after_a_lost_reply(admin: Any, key: str) -> None:
    import redis

    with ReplyLossProxy(REDIS) as proxy:
        client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_connect_timeout=2)
        try:
            client.ping()
            proxy.arm_reply_loss(rst_after=0.3)
            client.incr(key)  # no error: redis-py re-sent it on a new connection
        finally:
            client.close()
    assert _count(admin, key) == 2


def test_guarded_client_applies_the_incr_once_and_says_the_outcome_is_unknown(
    admin: Any, key: str
) -> None:
    import redis

    with ReplyLossProxy(REDIS) as proxy:
        client = redis_client(f"redis://127.0.0.1:{proxy.port}/0", server_timeout=None)
        try:
            client.ping()
            proxy.arm_reply_loss(rst_after=0.3)
            with pytest.raises(redis.ConnectionError) as raised:
                client.incr(key)
            assert resetguard.outcome_unknown(raised.value)
            assert _count(admin, key) == 1
            assert client.incr(key) == 2  # the client recovers on a fresh connection
        finally:
            client.close()


# -- exactly once per acknowledged call, under random lost replies ---------------------------


def _stress_sync(url: str, key: str, n: int, quiet: bool = True) -> tuple[int, int]:
    import redis

    acked = 0
    unknown: list[BaseException] = []
    client = redis_client(url, policy=PATIENT, server_timeout=None, **(QUIET if quiet else {}))
    try:
        for _ in range(n):
            client.connection_pool.disconnect()  # a new connection: a new draw of the toxic
            try:
                client.incr(key)
                acked += 1
            except redis.ConnectionError as exc:
                unknown.append(exc)
            assert client.get(key) is not None  # reads always get through (retried)
    finally:
        client.close()
    assert all(resetguard.outcome_unknown(exc) for exc in unknown)
    return acked, len(unknown)


def _stress_async(url: str, key: str, n: int) -> tuple[int, int]:
    import redis

    async def main() -> tuple[int, int]:
        acked = 0
        unknown: list[BaseException] = []
        client = await async_redis_client(url, policy=PATIENT, server_timeout=None, **QUIET)
        try:
            for _ in range(n):
                await client.connection_pool.disconnect()
                try:
                    await client.incr(key)
                    acked += 1
                except redis.ConnectionError as exc:
                    unknown.append(exc)
                assert await client.get(key) is not None
        finally:
            await client.aclose()
        assert all(resetguard.outcome_unknown(exc) for exc in unknown)
        return acked, len(unknown)

    return asyncio.run(main())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_incr_goes_up_exactly_once_per_acknowledged_call(admin: Any, key: str, mode: str) -> None:
    n = 120
    admin.set(key, 0)
    with FaultProxy(f"{REDIS[0]}:{REDIS[1]}") as proxy:
        # A fifth of the connections lose their first reply and are reset: the server ran
        # the command, the client cannot know.
        proxy.add_toxic(ResetPeer(stream="downstream", toxicity=0.2))
        url = f"redis://{proxy.host}:{proxy.port}/0"
        acked, unknown = (_stress_sync if mode == "sync" else _stress_async)(url, key, n)
    assert acked + unknown == n
    assert unknown > 0, "no reply was lost: the test proved nothing"
    assert acked > n // 2
    # Each lost reply belonged to an INCR the server ran once, and none ran twice.
    assert _count(admin, key) == acked + unknown


# -- retried when proven unsent ---------------------------------------------------------------


def test_resets_during_the_handshake_are_rerun_and_every_incr_is_acknowledged(
    admin: Any, key: str
) -> None:
    # With redis-py's handshake (HELLO 3, CLIENT SETINFO) the first reply on a connection is
    # the handshake's: a reset there comes before the INCR was written, so it is rerun.
    n = 60
    with FaultProxy(f"{REDIS[0]}:{REDIS[1]}") as proxy:
        proxy.add_toxic(ResetPeer(stream="downstream", toxicity=0.3))
        url = f"redis://{proxy.host}:{proxy.port}/0"
        acked, unknown = _stress_sync(url, key, n, quiet=False)
        connections = proxy.stats()["connections_total"]
    assert (acked, unknown) == (n, 0)
    assert _count(admin, key) == n
    assert connections > n + 5, "hardly any connection was reset: the test proved nothing"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_write_refused_at_connect_is_retried(admin: Any, key: str, mode: str) -> None:
    policy = Retry(attempts=40, deadline=20.0, backoff=Backoff.constant(0.05))
    events: list[resetguard.Event] = []
    resetguard.add_hook(events.append)
    try:
        with FaultProxy(f"{REDIS[0]}:{REDIS[1]}") as proxy:
            url = f"redis://{proxy.host}:{proxy.port}/0"
            proxy.add_toxic(Down(name="down"))
            lift = threading.Timer(0.4, proxy.remove_toxic, args=("down",))
            lift.start()
            try:
                if mode == "sync":
                    client = redis_client(url, policy=policy, server_timeout=None)
                    assert client.incr(key) == 1
                    client.close()
                else:

                    async def main() -> int:
                        c = await async_redis_client(url, policy=policy, server_timeout=None)
                        try:
                            return int(await c.incr(key))
                        finally:
                            await c.aclose()

                    assert asyncio.run(main()) == 1
            finally:
                lift.join(5)
    finally:
        resetguard.remove_hook(events.append)
    assert _count(admin, key) == 1
    refused = [
        e
        for e in events
        if isinstance(e, resetguard.ConnectionEvent) and e.name == "redis" and e.failure
    ]
    assert refused, "the refused connects were not reported"
    assert all(e.failure is not None and e.failure.nothing_sent for e in refused)


def test_default_client_rides_out_a_restart(admin: Any, key: str) -> None:
    # Refused for ~1 s (a restart): the default policy's 5 s of patience waits for the
    # server without spending attempts; the INCR runs once.
    with FaultProxy(f"{REDIS[0]}:{REDIS[1]}") as proxy:
        client = redis_client(f"redis://{proxy.host}:{proxy.port}/0")
        try:
            assert client.incr(key) == 1
            proxy.add_toxic(Down(name="down"))
            client.connection_pool.disconnect()
            lift = threading.Timer(1.0, proxy.remove_toxic, args=("down",))
            lift.start()
            try:
                started = time.monotonic()
                assert client.incr(key) == 2
                assert time.monotonic() - started >= 0.9
            finally:
                lift.join(5)
        finally:
            client.close()
    assert _count(admin, key) == 2


# -- the server drops the connection: CLIENT KILL and the idle timeout -------------------------


def test_client_kill_while_idle_sync(admin: Any, key: str, redis_url: str) -> None:
    name = f"rg-kv-{uuid.uuid4().hex[:8]}"
    client = redis_client(redis_url, client_name=name)
    try:
        assert client.incr(key) == 1
        assert kill_clients(admin, name) == 1
        time.sleep(0.1)
        assert client.incr(key) == 2
    finally:
        client.close()
    assert _count(admin, key) == 2


def test_client_kill_while_idle_async_is_caught_by_the_health_check(
    admin: Any, key: str, redis_url: str
) -> None:
    name = f"rg-kv-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        # As if the server's timeout were 1 s: PING after 0.5 s idle, before the command.
        client = await async_redis_client(redis_url, client_name=name, server_timeout=1.0)
        try:
            assert await client.incr(key) == 1
            assert await asyncio.to_thread(kill_clients, admin, name) == 1
            await asyncio.sleep(0.7)
            assert await client.incr(key) == 2  # the PING failed, the INCR was never sent
        finally:
            await client.aclose()

    asyncio.run(main())
    assert _count(admin, key) == 2


def test_client_kill_without_a_due_health_check_is_an_unknown_outcome_async(
    admin: Any, key: str, redis_url: str
) -> None:
    # The control for the test above: with no PING due, redis.asyncio writes the INCR on the
    # dead connection and only the read fails. Nothing tells whether it arrived: unknown.
    import redis

    name = f"rg-kv-{uuid.uuid4().hex[:8]}"

    async def main() -> BaseException:
        client = await async_redis_client(redis_url, client_name=name, server_timeout=None)
        try:
            assert await client.incr(key) == 1
            assert await asyncio.to_thread(kill_clients, admin, name) == 1
            await asyncio.sleep(0.2)
            with pytest.raises(redis.ConnectionError) as raised:
                await client.incr(key)
            assert await client.get(key) == b"1"  # a read is simply retried
            return raised.value
        finally:
            await client.aclose()

    exc = asyncio.run(main())
    assert resetguard.outcome_unknown(exc)
    assert _count(admin, key) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_idle_timeout_of_a_private_server(private_redis: str, mode: str) -> None:
    import redis

    async def run_async() -> tuple[float, int]:
        client = await async_redis_client(private_redis)  # reads CONFIG GET timeout = 1
        try:
            assert await client.incr("rg:idle") == 1
            await asyncio.sleep(2.5)  # Redis closes connections idle > 1 s (in 1-2 s)
            value = int(await client.incr("rg:idle"))
            return client.connection_pool.connection_kwargs["health_check_interval"], value
        finally:
            await client.aclose()

    if mode == "sync":
        client = redis_client(private_redis)
        try:
            assert client.incr("rg:idle") == 1
            time.sleep(2.5)
            interval = client.connection_pool.connection_kwargs["health_check_interval"]
            value = int(client.incr("rg:idle"))
        finally:
            client.close()
    else:
        interval, value = asyncio.run(run_async())
    assert interval == pytest.approx(0.5)  # below the server's 1 s
    assert value == 2
    plain = redis.Redis.from_url(private_redis)
    assert int(plain.get("rg:idle") or 0) == 2
    plain.close()


def test_config_unavailable_falls_back_to_30_s(private_redis_without_config: str) -> None:
    # The server closes idle connections after 1 s but will not say so: the client still
    # works, with the 30 s fallback (resetguard doctor measures the real timeout).
    client = redis_client(private_redis_without_config)
    try:
        assert client.connection_pool.connection_kwargs["health_check_interval"] == 30.0
        assert client.incr("rg:noconfig") == 1
    finally:
        client.close()


def test_config_get_refused_falls_back(unused_port: int) -> None:
    # Nothing listens: CONFIG GET fails, the client still builds with the 30 s fallback.
    client = redis_client(f"redis://127.0.0.1:{unused_port}/0")
    assert client.connection_pool.connection_kwargs["health_check_interval"] == 30.0
    client.close()


# -- events, options, bad input ---------------------------------------------------------------


def test_raise_unknown_true_raises_outcome_unknown(admin: Any, key: str) -> None:
    import redis

    with ReplyLossProxy(REDIS) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        client = redis_client(url, server_timeout=None, raise_unknown=True)
        try:
            client.ping()
            proxy.arm_reply_loss(rst_after=0.3)
            with pytest.raises(resetguard.OutcomeUnknown) as raised:
                client.incr(key)
            assert isinstance(raised.value.__cause__, redis.ConnectionError)
        finally:
            client.close()
    assert _count(admin, key) == 1


def test_the_password_never_reaches_errors_notes_or_events(admin: Any, key: str) -> None:
    import redis

    # The local default user is "nopass": any password logs in; it must still never show.
    seen: list[resetguard.Event] = []
    resetguard.add_hook(seen.append)
    try:
        with ReplyLossProxy(REDIS) as proxy:
            url = f"redis://default:TopSecret42@127.0.0.1:{proxy.port}/0"
            client = redis_client(url)
            try:
                client.ping()
                proxy.arm_reply_loss(rst_after=0.3)
                with pytest.raises(redis.ConnectionError) as raised:
                    client.incr(key)
            finally:
                client.close()
    finally:
        resetguard.remove_hook(seen.append)
    exc = raised.value
    shown = [str(exc), *getattr(exc, "__notes__", []), *map(repr, seen)]
    assert seen
    assert not [text for text in shown if "TopSecret42" in text]


def test_connection_loss_feeds_the_monitor(key: str) -> None:
    from redis import RedisError

    with FaultProxy(f"{REDIS[0]}:{REDIS[1]}") as proxy:
        url = f"redis://{proxy.host}:{proxy.port}/0"
        client = redis_client(url, server_timeout=None, **QUIET)
        with resetguard.Monitor() as monitor:
            try:
                client.set(key, "v")
                with proxy.toxic(ResetPeer(stream="downstream")), pytest.raises(RedisError):
                    client.incr(key)
            finally:
                client.close()
    report = monitor.report()
    assert report.connections["failed"] >= 1
    assert report.sources["redis"] >= 1
    assert report.gave_up["unsafe"] == 1


@pytest.mark.parametrize(
    ("args", "safe"),
    [
        (("GET", "k"), True),
        ((b"mget", "a", "b"), True),
        (("CONFIG GET", "timeout"), True),
        (("CONFIG", "GET", "timeout"), True),
        (("config", "set", "timeout", 0), False),
        (("INCR", "k"), False),
        (("SET", "k", "v"), False),
        (("EVAL", "return 1", 0), False),
        (("EVAL_RO", "return 1", 0), True),
        (("BLPOP", "k", 1), False),
        ((), False),
    ],
)
def test_safe_commands(args: tuple[object, ...], safe: bool) -> None:
    assert is_safe_command(*args) is safe


def test_redis_py_retries_are_refused() -> None:
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry as RedisRetry

    with pytest.raises(ValueError, match="retry="):
        redis_client("redis://127.0.0.1:1/0", retry=RedisRetry(ExponentialBackoff(), 3))
    with pytest.raises(ValueError, match="retry_on_timeout"):
        redis_client("redis://127.0.0.1:1/0", retry_on_timeout=True)
    with pytest.raises(ValueError, match="-2"):
        redis_client("redis://127.0.0.1:1/0", server_timeout=-2)
    with pytest.raises(TypeError, match="'fast'"):
        redis_client("redis://127.0.0.1:1/0", policy="fast")  # type: ignore[arg-type]
