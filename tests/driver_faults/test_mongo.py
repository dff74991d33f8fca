"""pymongo: each research record reproduced without a MongoDB server, then classified.

The research ran pymongo against raw TCP listeners and mockupdb. Here the same faults come
from :class:`RawListener` (refused / accept-then-RST / accept-then-FIN, with and without
reading the handshake) and :class:`FakeMongo`, a minimal wire-protocol server (the stand-in
for mockupdb: ``hangup`` is the same ``shutdown(SHUT_RDWR)`` FIN), behind the RST proxy for
the F1-like / F6 records. The commands the server saw are compared with the research too,
so a change in pymongo's own retries is noticed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from ._records import Record, check_record, records_for
from ._servers import FakeMongo, FaultProxy, RawListener, wait_until

# Where the server never answers, selection fails after this; where it does, pymongo's own
# retry has to wait for the monitor's next check (at least 500 ms after the last one), so
# those clients get a longer budget, as the research's 1.5 s.
SELECTION_MS = 300
RETRY_SELECTION_MS = 2000


def _client(port: int, **kwargs: Any) -> Any:
    from pymongo import MongoClient

    options: dict[str, Any] = {
        "serverSelectionTimeoutMS": RETRY_SELECTION_MS,
        "connectTimeoutMS": 1000,
        "socketTimeoutMS": 2000,
        "heartbeatFrequencyMS": 500,
    }
    options.update(kwargs)
    direct = "replicaSet" not in options
    return MongoClient(f"mongodb://127.0.0.1:{port}/", directConnection=direct, **options)


def _operation(record: Record) -> Callable[[Any], object]:
    desc = record["fault_desc"]
    if "find_one" in desc:
        return lambda client: client.test.coll.find_one({})
    if "insert_one" in desc:
        return lambda client: client.test.coll.insert_one({"x": 1})
    return lambda client: client.admin.command("ping")


def _raised(fn: Callable[[], object]) -> BaseException | None:
    try:
        fn()
    except Exception as exc:
        return exc
    return None


def raw_listener_scenario(record: Record, unused_port: int) -> tuple[BaseException | None, Any]:
    """F5 / RAW-RST / RAW-FIN: no MongoDB handshake ever completes."""
    if record["fault"] == "F5":
        client = _client(unused_port, serverSelectionTimeoutMS=SELECTION_MS)
        try:
            return _raised(lambda: client.admin.command("ping")), None
        finally:
            client.close()
    reads = "reads handshake" in record["fault_desc"]
    mode = ("read-" if reads else "") + ("rst" if record["fault"] == "RAW-RST" else "fin")
    with RawListener(mode) as listener:
        client = _client(listener.port, serverSelectionTimeoutMS=SELECTION_MS)
        try:
            return _raised(lambda: client.admin.command("ping")), None
        finally:
            client.close()


def fake_server_scenario(record: Record) -> tuple[BaseException | None, list[str]]:
    """mockupdb-compat-default / F2-like / F2-like-RS: the fault is in the server's reply."""
    fault, desc = record["fault"], record["fault_desc"]
    op = _operation(record)
    if fault == "mockupdb-compat-default":
        with FakeMongo(max_wire_version=6) as server:
            client = _client(server.port)
            try:
                return _raised(lambda: op(client)), server.seen
            finally:
                client.close()
    command = "find" if "find_one" in desc else "insert" if "insert_one" in desc else "ping"
    action = "hangup-once" if command in ("find", "insert") else "hangup"
    replica_set = fault == "F2-like-RS"
    with FakeMongo(faults={command: action}, replica_set=replica_set, show_txn=replica_set) as srv:
        kwargs: dict[str, Any] = {"replicaSet": "rs0"} if replica_set else {}
        client = _client(srv.port, **kwargs)
        try:
            if command == "insert" and not replica_set:
                srv.faults[command] = "hangup"  # standalone: no retryable writes
            return _raised(lambda: op(client)), list(srv.seen)
        finally:
            client.close()


def proxy_scenario(record: Record) -> tuple[BaseException | None, list[str]]:
    """F1-like / F6: the RST proxy resets pymongo's pooled connection idle or mid-command."""
    fault, desc = record["fault"], record["fault_desc"]
    op = _operation(record)
    command = "find" if "find_one" in desc else "ping"
    with FakeMongo() as server, FaultProxy(("127.0.0.1", server.port)) as proxy:
        client = _client(proxy.port, socketTimeoutMS=5000)
        try:
            client.admin.command("ping")  # a pooled, idle application connection
            if fault == "F6":
                server.arm(command, "delay")

                def reset_when_seen() -> None:
                    wait_until(lambda: command in server.seen, timeout=3, what=command)
                    proxy.reset_all()

                side = threading.Thread(target=reset_when_seen, daemon=True)
                side.start()
                exc = _raised(lambda: op(client))
                side.join(5)
                return exc, list(server.seen)
            server.seen.clear()
            proxy.reset_all()
            time.sleep(1.2 if "1.5s" in desc else 0.3)
            return _raised(lambda: op(client)), list(server.seen)
        finally:
            client.close()


@pytest.mark.parametrize("record", records_for("pymongo"))
def test_pymongo_record(record: Record, unused_port: int) -> None:
    fault = record["fault"]
    if fault in ("F5", "RAW-RST", "RAW-FIN"):
        exc, seen = raw_listener_scenario(record, unused_port)
    elif fault in ("F1-like", "F6"):
        exc, seen = proxy_scenario(record)
    else:
        exc, seen = fake_server_scenario(record)
    check_record(record, exc)
    expected_seen = record.get("commands_seen_by_server")
    if expected_seen is not None:
        assert seen == expected_seen
