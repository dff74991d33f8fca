"""pymongo with resetguard.db's options and listeners, against mockupdb (no MongoDB server here).

mockupdb speaks the wire protocol on a real loopback socket; ``hangup()`` closes the
connection (a FIN) with the request unanswered, and the RST proxy from the driver-fault tests
resets it. Current pymongo needs ``maxWireVersion`` >= 9 and a ``hello`` responder.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

import resetguard
from resetguard.db import mongo_client_options
from tests.driver_faults._servers import FaultProxy

mockupdb = pytest.importorskip("mockupdb")

_HELLO: dict[str, Any] = {
    "ismaster": True,
    "isWritablePrimary": True,
    "minWireVersion": 0,
    "maxWireVersion": 21,
}


def _server(port: int = 0, **extra: Any) -> Any:
    hello = {**_HELLO, **extra}
    server = mockupdb.MockupDB(port=port or None, auto_ismaster=hello)
    server.autoresponds("hello", **hello)
    server.autoresponds("ping")
    server.run()
    return server


@pytest.fixture
def server() -> Iterator[Any]:
    srv = _server()
    try:
        yield srv
    finally:
        srv.stop()


def _client(port: int, monitor: resetguard.Monitor, **kwargs: Any) -> Any:
    from pymongo import MongoClient

    options = mongo_client_options(
        hook=monitor, serverSelectionTimeoutMS=3000, heartbeatFrequencyMS=500, **kwargs
    )
    direct = "replicaSet" not in kwargs
    return MongoClient(f"mongodb://127.0.0.1:{port}/", directConnection=direct, **options)


def _batch(*docs: dict[str, Any]) -> dict[str, Any]:
    return {"cursor": {"id": 0, "firstBatch": list(docs), "ns": "test.coll"}}


def _events(monitor: resetguard.Monitor) -> dict[str, int]:
    return dict(monitor.report().connections)


def test_a_read_hung_up_on_is_retried_by_pymongo_and_counted(server: Any) -> None:
    monitor = resetguard.Monitor()
    client = _client(server.port, monitor)
    try:
        future = mockupdb.go(client.test.coll.find_one, {})
        server.receives(timeout=5).hangup()
        server.receives(timeout=5).ok(**_batch({"x": 1}))
        assert future(timeout=5) == {"x": 1}
    finally:
        client.close()
    report = monitor.report()
    assert report.connections["failed"] >= 1  # the find that lost its connection
    assert report.connections["closed"] >= 1  # pymongo discarded that connection
    assert report.sources["pymongo"] >= 1
    assert report.phases["unknown"] >= 1


def test_listener_events_carry_pymongo_reason_and_the_fault(server: Any) -> None:
    seen: list[resetguard.Event] = []
    client = _client(server.port, resetguard.Monitor(), event_listeners=[])
    client.close()
    from pymongo import MongoClient

    options = mongo_client_options(hook=seen.append, serverSelectionTimeoutMS=3000)
    client = MongoClient(f"mongodb://127.0.0.1:{server.port}/", directConnection=True, **options)
    try:
        future = mockupdb.go(client.test.coll.find_one, {})
        server.receives(timeout=5).hangup()
        server.receives(timeout=5).ok(**_batch())
        assert future(timeout=5) is None
    finally:
        client.close()
    events = [e for e in seen if isinstance(e, resetguard.ConnectionEvent)]
    closed = [e for e in events if e.action == "closed"]
    failed = [e for e in events if e.action == "failed"]
    assert any(e.reason == "error" for e in closed), closed
    (find_failure,) = [e for e in failed if e.reason.startswith("find:")]
    assert find_failure.failure is not None
    assert find_failure.failure.kind is resetguard.Kind.CLOSED
    assert find_failure.peer.endswith(f":{server.port}")


def test_a_standalone_write_hung_up_on_is_not_retried_and_its_outcome_is_unknown(
    server: Any,
) -> None:
    from pymongo.errors import AutoReconnect

    monitor = resetguard.Monitor()
    client = _client(server.port, monitor)
    try:
        future = mockupdb.go(client.test.coll.insert_one, {"x": 1})
        server.receives(timeout=5).hangup()
        with pytest.raises(AutoReconnect) as raised:
            future(timeout=5)
        # pymongo sent the insert once and did not send it again (standalone: no retryable
        # writes), and resetguard classifies it as sent: no layer may retry it blindly.
        with pytest.raises(AssertionError):
            server.receives(timeout=0.5)
    finally:
        client.close()
    failure = resetguard.classify(raised.value)
    assert failure is not None
    assert not failure.nothing_sent
    assert monitor.report().connections["failed"] >= 1


def test_a_replica_set_write_is_retried_by_pymongo_with_the_same_transaction_number() -> None:
    # Why retryWrites=True is right: the retry carries the same lsid + txnNumber, so a real
    # server applies the write once even though it arrived twice.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    me = f"127.0.0.1:{port}"
    srv = _server(
        port,
        setName="rs0",
        hosts=[me],
        me=me,
        primary=me,
        logicalSessionTimeoutMinutes=30,
    )
    monitor = resetguard.Monitor()
    client = _client(srv.port, monitor, replicaSet="rs0")
    try:
        future = mockupdb.go(client.test.coll.insert_one, {"x": 1})
        first = srv.receives(timeout=5)
        first.hangup()
        second = srv.receives(timeout=5)
        second.ok(n=1)
        future(timeout=5)
        assert first.doc["insert"] == second.doc["insert"] == "coll"
        assert first.doc["txnNumber"] == second.doc["txnNumber"]
        assert first.doc["lsid"] == second.doc["lsid"]
    finally:
        client.close()
        srv.stop()
    assert monitor.report().connections["failed"] >= 1


def test_a_reset_mid_command_is_counted_with_its_errno(server: Any) -> None:
    monitor = resetguard.Monitor()
    with FaultProxy(("127.0.0.1", server.port)) as proxy:
        client = _client(proxy.port, monitor)
        try:
            future = mockupdb.go(client.test.coll.find_one, {})
            server.receives(timeout=5)  # in flight: the server holds the request
            assert proxy.reset_all() >= 1
            server.receives(timeout=5).ok(**_batch({"y": 2}))
            assert future(timeout=5) == {"y": 2}
        finally:
            client.close()
    report = monitor.report()
    assert report.connections["failed"] >= 1
    assert report.calls.total == 0  # events, not calls: nothing was double-counted as a call


def test_a_failed_heartbeat_is_reported_with_the_fault() -> None:
    seen: list[resetguard.Event] = []
    srv = _server()
    from pymongo import MongoClient

    options = mongo_client_options(
        hook=seen.append, heartbeatFrequencyMS=500, serverSelectionTimeoutMS=500
    )
    client = MongoClient(f"mongodb://127.0.0.1:{srv.port}/", directConnection=True, **options)
    try:
        client.admin.command("ping")
        srv.stop()  # the server goes away: the next heartbeats fail
        deadline = time.monotonic() + 10
        beats: list[resetguard.ConnectionEvent] = []
        while not beats and time.monotonic() < deadline:
            beats = [
                e
                for e in seen
                if isinstance(e, resetguard.ConnectionEvent) and e.reason.startswith("heartbeat")
            ]
            time.sleep(0.05)
        assert beats, "no failed heartbeat reported within 10 s"
        assert beats[0].action == "failed"
        assert beats[0].failure is not None
        assert beats[0].failure.source == "pymongo"
    finally:
        client.close()


def test_idle_connections_are_retired_below_the_path_idle_timeout(server: Any) -> None:
    # A load balancer dropping flows idle for 1 s: maxIdleTimeMS = 500, and pymongo's pool
    # closes the idle connection itself (reason "idle"), before the path would.
    from pymongo import MongoClient

    seen: list[resetguard.Event] = []
    options = mongo_client_options(
        server_idle_timeout=1.0, hook=seen.append, heartbeatFrequencyMS=500
    )
    assert options["maxIdleTimeMS"] == 500
    client = MongoClient(f"mongodb://127.0.0.1:{server.port}/", directConnection=True, **options)
    try:
        client.admin.command("ping")
        deadline = time.monotonic() + 10
        closed: list[resetguard.ConnectionEvent] = []
        while not closed and time.monotonic() < deadline:
            closed = [
                e
                for e in seen
                if isinstance(e, resetguard.ConnectionEvent) and e.action == "closed"
            ]
            time.sleep(0.05)
        assert [e.reason for e in closed] == ["idle"]
        client.admin.command("ping")  # and the next command gets a fresh connection
    finally:
        client.close()


def test_options_are_the_pool_settings_and_keep_extra_listeners() -> None:
    from pymongo import monitoring

    class Extra(monitoring.ServerListener):
        def opened(self, event: Any) -> None: ...
        def description_changed(self, event: Any) -> None: ...
        def closed(self, event: Any) -> None: ...

    extra = Extra()
    options = mongo_client_options(
        server_idle_timeout=120, event_listeners=[extra], retryWrites=False
    )
    assert options["maxIdleTimeMS"] == 114_000  # below the 120 s idle drop of the path
    assert options["retryWrites"] is False  # an override wins
    assert options["retryReads"] is True
    assert extra in options["event_listeners"]
    assert len(options["event_listeners"]) == 4
    with pytest.raises(ValueError, match="-5"):
        mongo_client_options(server_idle_timeout=-5)
