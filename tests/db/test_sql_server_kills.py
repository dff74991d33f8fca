"""Faults the servers inject themselves, at the worst moments, for every driver.

* ``pg_terminate_backend`` / ``KILL`` while COMMIT is in flight. To catch COMMIT on the
  server for certain, a second session holds a row lock that COMMIT must wait for: the
  key row itself (keyed units: the key INSERT travels with COMMIT), or on PostgreSQL a
  row that a deferred unique constraint checks at COMMIT. A thread kills the unit's
  session once the server shows it waiting, then lets the lock go. MariaDB has no check
  deferred to COMMIT, so without a key its session is killed as COMMIT is sent.
* Refused reconnects after a kill, for every pool: the server is down (the proxy refuses
  connections) just when the pool needs a new connection.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

import resetguard
import resetguard.db as db

from .conftest import POOLS, Admin, Scenario

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

FAST = resetguard.Retry(
    attempts=4, backoff=resetguard.Backoff(initial=0.01, cap=0.05), idempotent=None
)
AT_COMMIT = ["psycopg", "psycopg-async", "asyncpg", "pymysql", "pymysql-conn", "aiomysql"]
_WAITING = {
    "pg": "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
    "my": "SELECT count(*) FROM information_schema.INNODB_TRX"
    " WHERE trx_mysql_thread_id = %s AND trx_state = 'LOCK WAIT'",
}


def _ok(result: Any) -> Any:
    if isinstance(result, BaseException):
        raise result
    return result


def _connect(kind: str) -> Any:
    if kind == "pg":
        import psycopg

        return psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres")
    import pymysql

    return pymysql.connect(host="127.0.0.1", user="root", password="", database="test")


class Blocker:
    """A second session holding a row lock (``sql``, uncommitted); :meth:`arm` starts a
    thread that kills ``session`` once the server shows it waiting for that lock, then
    rolls the lock holder back."""

    def __init__(self, kind: str, sql: str, args: tuple[Any, ...]) -> None:
        self.kind = kind
        self.conn = _connect(kind)
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
        self.thread: threading.Thread | None = None
        self.killed_waiting = False
        self.error: BaseException | None = None

    def arm(self, session: int) -> None:
        assert self.thread is None, "armed twice"
        self.thread = threading.Thread(target=self._kill_when_waiting, args=(session,))
        self.thread.start()

    def _kill_when_waiting(self, session: int) -> None:
        admin = Admin()
        try:
            for _ in range(400):  # at most about 10 s
                if admin.sql(self.kind, _WAITING[self.kind], (session,))[0][0]:
                    admin.kill(self.kind, session)
                    self.killed_waiting = True
                    break
                time.sleep(0.025)
        except BaseException as exc:  # pragma: no cover - reported by join()
            self.error = exc
        finally:
            admin.close()
            self.conn.rollback()  # the lock goes; a rerun can commit

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(20)
            assert not self.thread.is_alive()
        self.conn.close()
        if self.error is not None:
            raise self.error


def _events() -> tuple[list[resetguard.Event], Any]:
    seen: list[resetguard.Event] = []
    resetguard.add_hook(seen.append)
    return seen, seen.append


def _resolved(seen: list[resetguard.Event]) -> list[str]:
    return [e.outcome for e in seen if isinstance(e, resetguard.OutcomeResolved)]


@pytest.mark.parametrize("scenario", AT_COMMIT, indirect=True)
def test_kill_while_keyed_commit_waits_is_resolved_by_the_key(
    scenario: Scenario, admin: Admin
) -> None:
    """The key INSERT and COMMIT are in flight (waiting for the key row's lock) when the
    server kills the session: an unknown outcome, which the key check settles ("not
    committed"), so the unit runs again on a fresh connection and commits once."""
    key = f"k-{scenario.tag}"
    db.ensure_key_table(lambda: _connect(scenario.kind), key_table=scenario.keys)
    blocker = Blocker(scenario.kind, f"INSERT INTO {scenario.keys} (idem_key) VALUES (%s)", (key,))

    def hook(run: int, step: int, session: int) -> None:
        if run == 1 and step == 2:  # the unit is done: its COMMIT goes next
            blocker.arm(session)

    seen, hook_fn = _events()
    try:
        result, runs = scenario.run(hook, policy=FAST, key=key)
    finally:
        resetguard.remove_hook(hook_fn)
        blocker.join()
    assert blocker.killed_waiting  # the kill did land while COMMIT waited on the server
    assert _ok(result) == 2
    assert runs == [1, 2]
    assert scenario.sessions[0] != scenario.sessions[1]
    assert _resolved(seen) == ["rerun"]
    assert scenario.rows() == 1
    assert scenario.torn() == 0


@pytest.mark.parametrize("scenario", ["psycopg", "psycopg-async", "asyncpg"], indirect=True)
def test_kill_while_commit_waits_without_key_is_unknown(scenario: Scenario, admin: Admin) -> None:
    """PostgreSQL, no key: COMMIT waits on the server (a deferred unique check) when the
    session is killed. The caller gets OutcomeUnknown from the driver's error after one
    run; the unit is not rerun blindly."""
    admin.sql(
        "pg",
        f"ALTER TABLE {scenario.table} ADD CONSTRAINT {scenario.table}_u UNIQUE (tag)"
        " DEFERRABLE INITIALLY DEFERRED",
    )
    blocker = Blocker(
        "pg", f"INSERT INTO {scenario.table} (tag, n) VALUES (%s, 5)", (scenario.tag,)
    )

    def hook(run: int, step: int, session: int) -> None:
        if run == 1 and step == 2:
            blocker.arm(session)

    try:
        result, runs = scenario.run(hook, policy=FAST)
    finally:
        blocker.join()
    assert blocker.killed_waiting
    assert isinstance(result, resetguard.OutcomeUnknown), repr(result)
    assert result.__cause__ is not None
    assert len(resetguard.history(result)) == 1
    assert runs == [1]
    assert scenario.rows() == 0  # killed before it committed; the blocker rolled back


@pytest.mark.parametrize("scenario", ["pymysql", "pymysql-conn", "aiomysql"], indirect=True)
def test_kill_as_commit_is_sent_without_key_is_unknown(scenario: Scenario, admin: Admin) -> None:
    """MariaDB, no key: the session is killed as COMMIT goes out. The client cannot tell
    whether COMMIT ran before the kill: OutcomeUnknown after one run, never a blind rerun."""

    def hook(run: int, step: int, session: int) -> None:
        if run == 1 and step == 2:
            admin.kill(scenario.kind, session)

    result, runs = scenario.run(hook, policy=FAST)
    assert isinstance(result, resetguard.OutcomeUnknown), repr(result)
    assert result.__cause__ is not None
    assert runs == [1]
    assert scenario.rows() == 0


@pytest.mark.parametrize("scenario", ["pymysql", "pymysql-conn", "aiomysql"], indirect=True)
def test_kill_as_keyed_commit_is_sent_is_resolved(scenario: Scenario, admin: Admin) -> None:
    """MariaDB, with a key, the session killed as the compound statement goes out: the key
    check finds nothing committed and the unit runs again."""

    def hook(run: int, step: int, session: int) -> None:
        if run == 1 and step == 2:
            admin.kill(scenario.kind, session)

    seen, hook_fn = _events()
    try:
        result, runs = scenario.run(hook, policy=FAST, key=f"k-{scenario.tag}")
    finally:
        resetguard.remove_hook(hook_fn)
    assert _ok(result) == 2
    assert runs == [1, 2]
    assert _resolved(seen) == ["rerun"]
    assert scenario.rows() == 1
    assert scenario.torn() == 0


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize("scenario", POOLS, indirect=True)
def test_refused_reconnects_after_a_kill(
    scenario: Scenario, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    """The session is killed mid-unit and the server refuses connections just then: the
    pool's reconnects are refused until it is back, the unit runs again once it is, and
    commits once. Pools that connect on demand surface the refusal to the engine (a retry
    of kind REFUSED); psycopg_pool reconnects in its own background worker and logs it."""
    lock = threading.Lock()
    down: list[Any] = []
    timers: list[threading.Timer] = []

    def back_up() -> None:
        with lock:
            if down:
                scenario.proxy.remove_toxic(down.pop().name)

    def hook(run: int, step: int, session: int) -> None:
        if run == 1 and step == 1:
            down.append(scenario.proxy.add_toxic("down"))
            admin.kill(scenario.kind, session)
            # the bound for pools that retry their own connects in the background
            timers.append(threading.Timer(1.0, back_up))
            timers[0].start()

    scheduled: list[resetguard.RetryScheduled] = []

    def on_retry(event: resetguard.RetryScheduled) -> None:
        scheduled.append(event)
        if event.failure is not None and event.failure.kind is resetguard.Kind.REFUSED:
            back_up()

    policy = resetguard.Retry(attempts=6, backoff=FAST.backoff, on_retry=on_retry, idempotent=None)
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    try:
        result, runs = scenario.run(hook, policy=policy)
    finally:
        for timer in timers:
            timer.cancel()
        back_up()
    assert _ok(result) == 2
    assert runs == [1, 2]
    assert scenario.sessions[0] != scenario.sessions[1]
    assert scenario.rows() == 1
    assert scenario.torn() == 0
    kinds = [e.failure.kind for e in scheduled if e.failure is not None]
    if scenario.driver.name.startswith("psycopg"):
        assert len(kinds) == 1  # the kill; the refusals stayed inside psycopg_pool
        assert any("refused" in r.getMessage().lower() for r in caplog.records), caplog.text
    else:
        assert resetguard.Kind.REFUSED in kinds, kinds
