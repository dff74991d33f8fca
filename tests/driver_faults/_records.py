"""The measured ground truth (``shared/research/driver-faults.json``) and what classify must say.

Each record is one driver x fault, measured against real servers. A test module reproduces
the record's fault with the real driver and hands the exception (or ``None`` when the driver
raised nothing) to :func:`check_record`, which asserts:

* the driver still raises what the research measured (same class, or nothing), so drift in
  a driver release is seen;
* the classification: kind, source, driver code, errno, and above all the phase *safety
  property*: a statement that may have run (F2, F6, a request the server read) is never
  classified ``Phase.CONNECT`` ("nothing sent"); one that cannot have run (F1, F3, F4) is
  never classified as sent-and-failed (SEND / AWAIT / RECEIVE); a refused connect is CONNECT.
"""

from __future__ import annotations

import errno as _errno
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from resetguard._classify import Failure, Kind, Phase, classify

Record = dict[str, Any]

# A copy of shared/research/driver-faults.json, so the suite is self-contained; point
# RESETGUARD_DRIVER_FAULTS at a fresh measurement to check it against the drivers.
_DEFAULT_PATH = Path(__file__).with_name("driver_faults.json")
RECORDS_PATH = Path(os.environ.get("RESETGUARD_DRIVER_FAULTS", _DEFAULT_PATH))


def _load() -> list[Record]:
    if not RECORDS_PATH.exists():
        return []
    records: list[Record] = json.loads(RECORDS_PATH.read_text())
    for index, record in enumerate(records):
        record["_id"] = f"{index:03d}-{record['driver_key']}-{record['fault']}"
    return records


RECORDS = _load()

# Which module must be importable for a record's driver (the library the scenario drives).
DRIVER_MODULE = {
    "psycopg": "psycopg",
    "psycopg-async": "psycopg",
    "psycopg_pool": "psycopg_pool",
    "psycopg_pool-check": "psycopg_pool",
    "asyncpg": "asyncpg",
    "asyncpg-pool": "asyncpg",
    "pymysql": "pymysql",
    "aiomysql": "aiomysql",
    "aiomysql-pool": "aiomysql",
    "mysql-connector": "mysql.connector",
    "mysql-connector-pool": "mysql.connector",
    "sa-psycopg": "sqlalchemy",
    "sa-psycopg-preping": "sqlalchemy",
    "sa-pymysql": "sqlalchemy",
    "sa-pymysql-preping": "sqlalchemy",
    "redis": "redis",
    "redis-noretry": "redis",
    "redis-asyncio": "redis",
    "redis-asyncio-noretry": "redis",
    "redis-extra": "redis",
    "pymongo": "pymongo",
    "requests-session": "requests",
    "httpx-client": "httpx",
    "httpx-asyncclient": "httpx",
    "aiohttp-clientsession": "aiohttp",
    "websockets-asyncio-connect": "websockets",
    "websockets-sync-connect": "websockets",
}

# Faults after which the statement cannot have run (the session was dead before it).
NOT_RUN = frozenset({"F1", "F3", "F4", "F1-like"})
# Faults that hit after the request/statement reached the server: outcome unknown.
SENT = frozenset(
    {
        "F2",
        "F6",
        "F6-reply-lost",
        "F2-like",
        "F2-like-RS",
        "a-rst-before-response",
        "b-fin-before-response",
        "c-rst-mid-body",
        "c2-fin-mid-body",
        "e-reused-conn-fin",
        "g-post-reused-conn-fin",
        "c-rst-mid-message",
        "c2-fin-mid-message",
        "f-fin-no-close-frame",
    }
)
# Faults where the connection was never established: nothing can have been sent.
NEVER_CONNECTED = frozenset({"F5", "RAW-RST", "RAW-FIN"})
# Records whose exception is not a connection fault at all.
NOT_A_FAULT = frozenset({"mockupdb-compat-default"})

_SOURCE_BY_ROOT = {
    "psycopg": "psycopg",
    "psycopg_pool": "psycopg_pool",
    "asyncpg": "asyncpg",
    "pymysql": "pymysql",
    "mysql": "mysql-connector",
    "sqlalchemy": "sqlalchemy",
    "redis": "redis",
    "pymongo": "pymongo",
    "requests": "requests",
    "httpx": "httpx",
    "aiohttp": "aiohttp",
    "websockets": "websockets",
}

_ERRNO_KIND = {"ECONNRESET": Kind.RESET, "ECONNREFUSED": Kind.REFUSED, "EPIPE": Kind.BROKEN_PIPE}


def records_for(*driver_keys: str) -> list[Any]:
    """``pytest.param`` per record of these drivers; skipped (naming the record) when the
    driver is not installed or the research file is absent."""
    if not RECORDS:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{RECORDS_PATH} not found"))]
    params = []
    for record in RECORDS:
        if record["driver_key"] not in driver_keys:
            continue
        module = DRIVER_MODULE[record["driver_key"]]
        marks = []
        if importlib.util.find_spec(module.split(".")[0]) is None:
            reason = f"record {record['_id']}: {module} is not installed"
            marks.append(pytest.mark.skip(reason=reason))
        params.append(pytest.param(record, id=record["_id"], marks=marks))
    return params


def expected_kinds(record: Record) -> set[Kind]:
    """The kind(s) the record's measured exception must classify as."""
    if record["errno_name"] in _ERRNO_KIND:
        return {_ERRNO_KIND[record["errno_name"]]}
    message = record.get("message") or ""
    if "[Errno 104]" in message or "(104," in message:
        return {Kind.RESET}
    if "[Errno 111]" in message or "Errno 111" in message:
        return {Kind.REFUSED}
    if record["fault"] == "F5":
        # A pool timeout hides the refusal (psycopg_pool): only the message tells.
        return {Kind.REFUSED} if "refused" in message.lower() else {Kind.TIMEOUT}
    return {Kind.CLOSED}


def expected_code(record: Record) -> str | None:
    """The driver code the research saw first (``SQLSTATE 57P01`` -> ``57P01``)."""
    code = record.get("code")
    if code:
        return str(code).split(",")[0].split()[-1]
    return None


def type_name(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def check_record(record: Record, exc: BaseException | None) -> Failure | None:
    """Assert the driver behaved as measured and classify() agrees with the table above."""
    rid = record["_id"]
    if record["first_call"] == "ok":
        assert exc is None, f"{rid}: research saw no error, the driver now raises {exc!r}"
        return None
    assert exc is not None, f"{rid}: research saw {record['exception']}, the driver raised nothing"
    expected_type = record["exception"]
    if "." not in expected_type:
        expected_type = f"builtins.{expected_type}"
    assert type_name(exc) == expected_type, f"{rid}: drift: got {type_name(exc)}: {exc!r}"

    failure = classify(exc)
    fault = record["fault"]
    if fault in NOT_A_FAULT:
        assert failure is None, f"{rid}: {exc!r} is not a connection fault, got {failure}"
        return None
    assert failure is not None, f"{rid}: {exc!r} not recognised as a connection fault"
    if fault in SENT:
        # The safety property: never claim "nothing sent" for what may have executed.
        assert failure.phase is not Phase.CONNECT, f"{rid}: may have run, got {failure}"
    elif fault in NOT_RUN:
        assert failure.phase in (Phase.CONNECT, Phase.UNKNOWN), f"{rid}: {failure}"
    elif fault in NEVER_CONNECTED:
        assert failure.phase is Phase.CONNECT, f"{rid}: never connected, got {failure}"
    else:
        raise AssertionError(f"{rid}: fault {fault!r} has no expectation in the table")
    assert failure.kind in expected_kinds(record), f"{rid}: kind {failure.kind}, {failure}"
    root = type(exc).__module__.split(".")[0]
    assert failure.source == _SOURCE_BY_ROOT.get(root, "stdlib"), f"{rid}: {failure}"
    code = expected_code(record)
    if code is not None:
        assert failure.code == code, f"{rid}: code {failure.code!r}, expected {code!r}"
    if record.get("errno") is not None:
        assert failure.errno == record["errno"], f"{rid}: errno {failure.errno}, {failure}"
        assert _errno.errorcode[record["errno"]] == record["errno_name"]
    assert failure.exc_type == type_name(exc)
    if os.environ.get("RESETGUARD_CLASSIFY_LOG"):  # to regenerate docs/classify.md's table
        with open(os.environ["RESETGUARD_CLASSIFY_LOG"], "a") as log:
            row = {"id": rid, "exc": type_name(exc), "kind": failure.kind.value}
            row |= {"phase": failure.phase.value, "code": failure.code, "source": failure.source}
            log.write(json.dumps(row) + "\n")
    return failure
