"""resetguard.db.transaction / atransaction against the real PostgreSQL and MariaDB, for every
driver and pool: server kills and proxy resets before COMMIT rerun the unit (the row is
written once, never torn); a reset at COMMIT is an unknown outcome after exactly one run
without a key, and resolved with one; refused connections are retried; idle timeouts are
survived.
"""

from __future__ import annotations

from typing import Any

import pytest

import resetguard

from ._commit_toxic import MARKER, SqlReset
from .conftest import ALL, DRIVERS, POOLS, Scenario

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

FAST = resetguard.Retry(
    attempts=3, backoff=resetguard.Backoff(initial=0.01, cap=0.05), idempotent=None
)


def _ok(result: Any) -> Any:
    if isinstance(result, BaseException):
        raise result
    return result


@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_server_kill_before_commit_reruns_on_a_fresh_connection(
    scenario: Scenario, admin: Any
) -> None:
    def hook(run: int, step: int, session: int) -> None:
        if run == 1 and step == 1:  # between the INSERT and the UPDATE
            admin.kill(scenario.kind, session)

    result, runs = scenario.run(hook, policy=FAST)
    assert _ok(result) == 2
    assert runs == [1, 2]
    assert scenario.sessions[0] != scenario.sessions[1]  # a fresh connection
    assert scenario.rows() == 1
    assert scenario.torn() == 0


@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_proxy_reset_mid_statement_reruns(scenario: Scenario) -> None:
    toxic = SqlReset(stream="upstream", pattern=MARKER, when="after")

    def hook(run: int, step: int, session: int) -> None:
        if run == 1 and step == 0:
            scenario.proxy.add_toxic(toxic)
        if run == 2 and step == 0:
            scenario.proxy.remove_toxic(toxic.name)

    result, runs = scenario.run(hook, policy=FAST, marker=MARKER)
    assert _ok(result) == 2
    assert runs == [1, 2]
    assert scenario.rows() == 1
    assert scenario.torn() == 0


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_reset_at_commit_without_key_is_unknown_after_one_run(
    scenario: Scenario, when: str
) -> None:
    def hook(run: int, step: int, session: int) -> None:
        if step == 1:
            scenario.proxy.add_toxic(SqlReset(stream="upstream", when=when))

    result, runs = scenario.run(hook, policy=FAST)
    assert isinstance(result, resetguard.OutcomeUnknown), repr(result)
    assert resetguard.outcome_unknown(result)
    assert result.__cause__ is not None  # the driver's own error
    assert len(resetguard.history(result)) == 1  # the history is attached
    assert runs == [1]
    # "before": COMMIT never reached the server; "after": it committed, its reply was lost
    assert scenario.rows() == (0 if when == "before" else 1)
    assert scenario.torn() == 0


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_reset_at_commit_with_key_is_resolved(scenario: Scenario, when: str) -> None:
    toxic = SqlReset(stream="upstream", when=when)

    def hook(run: int, step: int, session: int) -> None:
        if run == 1 and step == 1:
            scenario.proxy.add_toxic(toxic)
        if run == 2 and step == 0:
            scenario.proxy.remove_toxic(toxic.name)

    result, runs = scenario.run(hook, policy=FAST, key=f"k-{scenario.tag}")
    if when == "after":  # committed: the key says so, the stored result comes back
        assert _ok(result) == 1
        assert runs == [1]
    else:  # not committed: run again
        assert _ok(result) == 2
        assert runs == [1, 2]
    assert scenario.rows() == 1
    assert scenario.torn() == 0


@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_declared_idempotent_unit_is_rerun_after_reset_at_commit(scenario: Scenario) -> None:
    toxic = SqlReset(stream="upstream", when="before")

    def hook(run: int, step: int, session: int) -> None:
        if run == 1 and step == 1:
            scenario.proxy.add_toxic(toxic)
        if run == 2 and step == 0:
            scenario.proxy.remove_toxic(toxic.name)

    policy = resetguard.Retry(attempts=3, backoff=FAST.backoff, idempotent=True)
    result, runs = scenario.run(hook, policy=policy)
    assert _ok(result) == 2
    assert runs == [1, 2]


@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_same_key_twice_runs_the_work_once(scenario: Scenario) -> None:
    key = f"k-{scenario.tag}"
    first, _ = scenario.run(key=key, policy=FAST)
    second, runs = scenario.run(key=key, policy=FAST)
    assert _ok(first) == 1
    assert _ok(second) == 1
    assert runs == [1]  # the unit ran, its work was rolled back, the stored result returned
    assert scenario.rows() == 1


@pytest.mark.parametrize(
    "scenario", [n for n in ALL if DRIVERS[n].factory or n == "pymysql"], indirect=True
)
def test_refused_connection_is_retried(scenario: Scenario) -> None:
    down = scenario.proxy.add_toxic("down")
    scheduled: list[resetguard.RetryScheduled] = []

    def back_up(event: resetguard.RetryScheduled) -> None:
        scheduled.append(event)
        scenario.proxy.remove_toxic(down.name)

    policy = resetguard.Retry(attempts=3, backoff=FAST.backoff, on_retry=back_up, idempotent=None)
    result, runs = scenario.run(policy=policy)
    assert _ok(result) == 1
    assert runs == [1]  # the refused attempt never reached the unit
    assert [e.failure.kind for e in scheduled if e.failure] == [resetguard.Kind.REFUSED]
    assert scenario.rows() == 1


@pytest.mark.parametrize("scenario", [n for n in POOLS], indirect=True)
def test_idle_timeout_is_survived(scenario: Scenario) -> None:
    """The server ends the idle pooled session (idle_session_timeout / wait_timeout); the
    next unit still commits once, on a new session."""
    result, runs = scenario.run(policy=FAST, idle=True, warm_up=True)
    _ok(result)
    warm, final = scenario.sessions[0], scenario.sessions[-1]
    assert warm != final  # the server did end the idle session
    assert scenario.rows() == 1
    assert scenario.torn() == 0
    assert 1 <= len(runs) <= 2


@pytest.mark.parametrize(
    "scenario",
    ["psycopg", "pymysql", "asyncpg", "sqlalchemy-psycopg", "sqlalchemy-asyncpg"],
    indirect=True,
)
def test_events_tell_the_monitor(scenario: Scenario, admin: Any) -> None:
    seen: list[resetguard.Event] = []
    resetguard.add_hook(seen.append)
    toxic = SqlReset(stream="upstream", when="after")

    def hook(run: int, step: int, session: int) -> None:
        if run == 1 and step == 1:
            admin.kill(scenario.kind, session)
        if run == 2 and step == 1:
            scenario.proxy.add_toxic(toxic)

    try:
        result, runs = scenario.run(hook, policy=FAST, key=f"k-{scenario.tag}")
    finally:
        resetguard.remove_hook(seen.append)
    assert _ok(result) == 2
    assert runs == [1, 2]
    lost = [e for e in seen if isinstance(e, resetguard.ConnectionEvent)]
    assert len(lost) == 2, lost  # the kill, the reset at COMMIT: each reported once
    codes = {e.failure.code for e in lost if e.failure is not None}
    # the server kill, with the driver's code (asyncpg: 08003, assigned client-side; under
    # SQLAlchemy asyncpg's adapter keeps no code)
    assert codes & {"57P01", "2013", "08003"} or scenario.driver.name == "sqlalchemy-asyncpg"
    assert any(isinstance(e, resetguard.RetryScheduled) for e in seen)  # the unit rerun
    resolved = [e for e in seen if type(e).__name__ == "OutcomeResolved"]
    assert [e.outcome for e in resolved] == ["done"]


@pytest.mark.parametrize("scenario", ["asyncpg", "psycopg-async", "aiomysql"], indirect=True)
def test_cancelled_unit_discards_its_connection(scenario: Scenario) -> None:
    """A task cancelled mid-unit leaves its session in an unknown state: the connection is
    discarded (not handed to the next unit), nothing is committed."""
    import asyncio

    import resetguard.db as db

    d = scenario.driver
    insert = scenario.statements()[0]

    async def main() -> tuple[Any, Any]:
        async with d.opener(scenario.proxy.port, False) as pool:
            started = asyncio.Event()
            sessions: list[Any] = []

            async def slow(conn: Any) -> None:
                sessions.append(await _maybe_await(d.session(conn)))
                await d.exec(conn, insert)
                started.set()
                await asyncio.sleep(30)

            task = asyncio.ensure_future(db.atransaction(pool, slow))
            await asyncio.wait_for(started.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

            async def who(conn: Any) -> Any:
                return await _maybe_await(d.session(conn))

            return sessions[0], await db.atransaction(pool, who)

    first, second = asyncio.run(asyncio.wait_for(main(), 30))
    assert first != second
    assert scenario.rows() == 0


async def _maybe_await(x: Any) -> Any:
    import inspect

    return await x if inspect.isawaitable(x) else x


def test_sqlalchemy_engine_reports_lost_connections_outside_units(admin: Any) -> None:
    """After resetguard.db has seen an engine, its handle_error listener reports a lost
    connection on any statement of that engine, with the driver's code, and SQLAlchemy
    invalidates the connection."""
    import sqlalchemy as sa

    import resetguard.db as db

    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test", pool_size=1)
    seen: list[resetguard.Event] = []
    try:
        db.execute(engine, "SELECT 1", readonly=True)
        resetguard.add_hook(seen.append)
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            admin.kill("pg", pid)
            with pytest.raises(sa.exc.OperationalError) as caught:
                conn.exec_driver_sql("SELECT 1")
        assert caught.value.connection_invalidated
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
    finally:
        resetguard.remove_hook(seen.append)
        engine.dispose()
    lost = [e for e in seen if isinstance(e, resetguard.ConnectionEvent)]
    assert [(e.name, e.failure.code if e.failure else None) for e in lost] == [
        ("sqlalchemy", "57P01")
    ]


def test_default_policy_opens_a_breaker_per_pool(unused_port: int) -> None:
    """A database that refuses every connection: the pool's own breaker opens, and later
    calls fail at once with CircuitOpen instead of spending their attempts."""
    import psycopg

    import resetguard.db as db

    def connect() -> Any:
        return psycopg.connect(f"host=127.0.0.1 port={unused_port} dbname=test user=postgres")

    raised: list[BaseException] = []
    for _ in range(4):
        try:
            db.transaction(connect, lambda conn: None)
        except Exception as exc:
            raised.append(exc)
    assert isinstance(raised[0], psycopg.OperationalError)
    assert isinstance(raised[-1], resetguard.CircuitOpen)
    assert "test_default_policy_opens_a_breaker_per_pool" in str(raised[-1])
