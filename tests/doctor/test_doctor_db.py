"""Database probes against the real PostgreSQL, MariaDB and Redis (session-level settings only)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from resetguard.doctor import Report, diagnose, render_text


def _close_enough(measured: float | None, truth: float) -> bool:
    return measured is not None and abs(measured - truth) <= max(0.2 * truth, 0.3)


def _ids(report: Report) -> list[str]:
    return [f.id for f in report.findings]


def _exec_snippet(report: Report, client: str) -> dict[str, Any]:
    """Run a recommended snippet: it must be valid code for the installed library."""
    rec = next(r for r in report.recommendations if r.client == client)
    namespace: dict[str, Any] = {}
    exec(compile(rec.code, f"<{client} snippet>", "exec"), namespace)
    return namespace


@pytest.mark.postgres
def test_postgres_idle_session_timeout_is_measured(postgres_dsn: str) -> None:
    # Session-level setting through the DSN: nothing global changes.
    url = "postgresql://postgres@127.0.0.1:5432/test?options=-c%20idle_session_timeout%3D1500"
    report = diagnose(url, idle_limit=5)
    assert report.facts["configured_idle_timeout_s"] == 1.5
    assert report.server_idle_timeout_source == "measured"
    assert report.idle_close == "fin"
    assert _close_enough(report.server_idle_timeout_s, 1.5), report.server_idle_timeout_s
    # PostgreSQL says goodbye (SQLSTATE 57P05) before closing.
    assert any("57P05" in f.detail for f in report.findings if f.id == "idle-close-message")
    assert "client-expiry-too-long" in _ids(report)
    assert report.exit_code == 1
    pool = _exec_snippet(report, "psycopg_pool")["pool"]
    assert pool.max_idle == pytest.approx(0.75)
    engine = _exec_snippet(report, "SQLAlchemy")["engine"]
    assert engine.pool._recycle == pytest.approx(0.75)
    engine.dispose()


@pytest.mark.postgres
def test_postgres_without_idle_timeout(postgres_dsn: str) -> None:
    report = diagnose("postgresql://postgres@127.0.0.1:5432/test", idle_limit=2)
    assert report.server_idle_timeout_s is None
    assert report.idle_close is None
    assert "db-no-idle-timeout" in _ids(report)
    assert report.facts["server_version"]
    assert "tcp_keepalives_idle_s" in report.facts["settings"]
    # Fallback advice: retire connections below common NAT idle drops.
    assert "pool_recycle=300" in next(
        r.code for r in report.recommendations if r.client == "SQLAlchemy"
    )


@pytest.mark.mysql
def test_mariadb_wait_timeout_is_measured(mysql_params: dict[str, object]) -> None:
    # init_command runs in the probe's own session, as in the application's DSN.
    url = "mysql://root@127.0.0.1:3306/test?init_command=SET%20SESSION%20wait_timeout%3D2"
    report = diagnose(url, idle_limit=5)
    assert report.facts["settings"]["wait_timeout_s"] == 2.0
    assert report.server_idle_timeout_source == "measured"
    assert report.idle_close in ("fin", "rst")
    assert _close_enough(report.server_idle_timeout_s, 2.0), report.server_idle_timeout_s
    assert "client-expiry-too-long" in _ids(report)
    engine = _exec_snippet(report, "SQLAlchemy")["engine"]
    assert engine.pool._recycle == pytest.approx(1.0)
    engine.dispose()


@pytest.mark.mysql
def test_mariadb_default_wait_timeout_is_read_not_waited_for(
    mysql_params: dict[str, object],
) -> None:
    report = diagnose("mysql://root@127.0.0.1:3306/test", idle_limit=1)
    configured = report.facts["settings"]["wait_timeout_s"]
    assert configured > 1  # the server's real setting (28800 s by default)
    assert report.server_idle_timeout_s == configured
    assert report.server_idle_timeout_source == "configured"
    assert report.idle_close is None


@pytest.mark.mysql
def test_mariadb_bad_password_is_exit_2_and_redacted(mysql_params: dict[str, object]) -> None:
    report = diagnose("mysql://nosuchuser:Sup3rSecret@127.0.0.1:3306/test", idle_limit=1)
    assert report.exit_code == 2
    assert [f.id for f in report.findings] == ["driver-failed"]
    assert "Sup3rSecret" not in report.to_json()
    assert report.target == "mysql://nosuchuser:***@127.0.0.1:3306/test"


@pytest.mark.redis
def test_redis_timeout_is_measured(private_redis: str) -> None:
    report = diagnose(private_redis, idle_limit=5)
    assert report.facts["settings"]["timeout_s"] == 1.0
    assert report.idle_close == "fin"
    # Redis checks idle clients with whole-second timestamps and closes when more than
    # `timeout` seconds have passed: the truth is in (1 s, 2 s], plus cron latency.
    measured = report.server_idle_timeout_s
    assert measured is not None
    assert 1.0 - 0.3 <= measured <= 2.0 + 0.3, measured
    # Clients are sized from the shorter promise (the setting), not the late close.
    client = _exec_snippet(report, "redis-py")["client"]
    assert client.connection_pool.connection_kwargs["health_check_interval"] == pytest.approx(0.5)
    client.close()


@pytest.mark.redis
def test_shared_redis_settings_are_read(redis_url: str) -> None:
    report = diagnose(redis_url, idle_limit=1)
    assert report.exit_code in (0, 1)
    assert "timeout_s" in report.facts["settings"]
    assert report.facts["server_version"]


@pytest.mark.redis
def test_redis_password_never_shown(redis_url: str) -> None:
    # The local default user is "nopass": any password logs in; it must still never be shown.
    report = diagnose("redis://default:TopSecret42@127.0.0.1:6379/0", idle_limit=1)
    assert report.exit_code in (0, 1)
    assert report.target == "redis://default:***@127.0.0.1:6379/0"
    assert "TopSecret42" not in report.to_json()
    assert "TopSecret42" not in render_text(report)
    assert any("***" in r.code for r in report.recommendations if r.client == "redis-py")


@pytest.mark.mysql
def test_mariadb_wait_timeout_is_shown_in_whole_units(mysql_params: dict[str, object]) -> None:
    url = "mysql://root@127.0.0.1:3306/test?init_command=SET%20SESSION%20wait_timeout%3D7200"
    text = render_text(diagnose(url, idle_limit=1))
    assert re.search(r"^  wait_timeout +2 h \(7200 s\)$", text, flags=re.M), text
    assert re.search(r"^  Server idle timeout +2 h \(7200 s, configured\)$", text, flags=re.M)
    assert "7200.00" not in text
