"""Pure parts of the doctor: parsing, redaction, severity rules, snippets, progress."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import pytest

from resetguard.doctor import HostKeepalive, StreamProgress, parse_duration, parse_target, redact
from resetguard.doctor._advice import judge, safe_expiry
from resetguard.doctor._db import DbObservation
from resetguard.doctor._http import HttpObservation
from resetguard.doctor._net import IdleWatch
from resetguard.doctor._render import _fmt_setting


@pytest.mark.parametrize(
    ("text", "kind", "host", "port"),
    [
        ("https://example.com/x?y=1", "http", "example.com", 443),
        ("http://[::1]:8080/", "http", "::1", 8080),
        ("db.internal:5432", "tcp", "db.internal", 5432),
        ("[::1]:6379", "tcp", "::1", 6379),
        ("postgres://u:p@h/db", "postgresql", "h", 5432),
        ("mariadb://h", "mysql", "h", 3306),
        ("rediss://:pw@h:6380/2", "redis", "h", 6380),
    ],
)
def test_parse_target(text: str, kind: str, host: str, port: int) -> None:
    target = parse_target(text)
    assert (target.kind, target.host, target.port) == (kind, host, port)


def test_parse_target_keeps_http_query_and_db_params() -> None:
    assert parse_target("https://example.com/x?y=1").path == "/x?y=1"
    target = parse_target("mysql://root@h/test?init_command=SET%20x%3D1")
    assert target.param("init_command") == "SET x=1"
    assert target.database == "test"


@pytest.mark.parametrize(
    "text", ["", "ftp://h/", "host", "h:0", "h:70000", "http://:80/", "redis://h/x", "::1:80"]
)
def test_bad_targets_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"target|scheme|port|host|number|empty"):
        parse_target(text)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://app:s3cret@db/prod", "postgresql://app:***@db/prod"),
        ("redis://s3cret@cache:6379/0", "redis://***@cache:6379/0"),
        ("redis://:s3cret@cache/0", "redis://:***@cache/0"),
        ("host=db password=s3cret user=app", "host=db password=*** user=app"),
        ("mysql://u@h/d?password=s3cret&x=1", "mysql://u@h/d?password=***&x=1"),
        ("http://example.com/", "http://example.com/"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert "s3cret" not in repr(parse_target(text)) if "://" in text else True


def test_error_for_a_bad_scheme_is_redacted() -> None:
    with pytest.raises(ValueError, match="ftp://") as info:
        parse_target("ftp://user:s3cret@h/")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.5s", 1.5), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("30", 30.0), (".5", 0.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-1", "1d", "abc", "1.5 s x", "inf", "nan"])
def test_parse_duration_rejects_and_names_the_value(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("\\", "\\\\")[1:-1] or "''"):
        parse_duration(text)


def test_safe_expiry_stays_below_the_server() -> None:
    for server in (0.2, 1.0, 1.5, 2.0, 5.0, 60.0, 350.0, 28800.0):
        expiry = safe_expiry(server)
        assert 0 < expiry < server
    assert safe_expiry(5.0) == 4.0


_HOST = HostKeepalive(time_s=60, interval_s=10, probes=3)


def _http(idle: IdleWatch | None, **overrides: Any) -> HttpObservation:
    fields: dict[str, Any] = {
        "addresses": ("127.0.0.1",),
        "peer": "127.0.0.1:80",
        "dns_s": 0.001,
        "connect_s": 0.001,
        "tls": None,
        "http_version": "HTTP/1.1",
        "status": 200,
        "reason": "OK",
        "first_byte_s": 0.001,
        "server": None,
        "connection_header": None,
        "keep_alive_header": None,
        "keep_alive_timeout_s": None,
        "keep_alive_max": None,
        "keepalive": "honoured",
        "reuse_error": None,
        "close_after_response": None,
        "idle": idle,
        "write_after_close": None,
    }
    fields.update(overrides)
    return HttpObservation(**fields)


@pytest.mark.parametrize(
    ("idle_s", "severity"),
    [(3.0, "critical"), (10.0, "warning"), (75.0, "warning")],
)
def test_mismatch_severity_follows_the_shortest_default(idle_s: float, severity: str) -> None:
    obs = _http(IdleWatch(outcome="fin", elapsed_s=idle_s, limit_s=100))
    judged = judge(parse_target("http://h/"), obs, _HOST, idle_limit=100)
    (mismatch,) = [f for f in judged.findings if f.id == "client-expiry-too-long"]
    assert mismatch.severity.value == severity
    safe = {c.client: c.safe for c in judged.client_defaults}
    assert safe["requests/urllib3"] is False
    assert safe["httpx"] is (idle_s >= 6)


def test_slow_connect_and_host_keepalive_findings() -> None:
    obs = _http(IdleWatch(outcome="open", elapsed_s=None, limit_s=30), connect_s=1.5)
    slow_host = HostKeepalive(time_s=7200, interval_s=75, probes=9)
    judged = judge(parse_target("http://h/"), obs, slow_host, idle_limit=30)
    ids = [f.id for f in judged.findings]
    assert ids[0] == "slow-connect"
    assert "host-keepalive-slow" in ids
    assert any(r.language == "shell" for r in judged.recommendations)
    # No close within 30 s: clients expiring sooner than that are known to be safe.
    safe = {c.client: c.safe for c in judged.client_defaults}
    assert safe == {"httpx": True, "aiohttp": True, "requests/urllib3": None}


def test_db_sizing_uses_the_shorter_of_measured_and_configured() -> None:
    obs = DbObservation(
        kind="redis",
        peer="h:6379",
        dns_s=0.0,
        connect_s=0.0,
        server_version="7",
        settings={"timeout_s": 10.0, "tcp_keepalive_s": 300.0},
        idle_setting="timeout",
        idle_timeout_s=10.0,
        server_keepalive_s=300.0,
        idle=IdleWatch(outcome="fin", elapsed_s=10.8, limit_s=30),
    )
    judged = judge(parse_target("redis://h/0"), obs, _HOST, idle_limit=30)
    assert judged.server_idle_timeout_s == 10.8
    assert judged.source == "measured"
    (rec,) = judged.recommendations
    assert "health_check_interval=9," in rec.code


def test_http_snippets_are_valid_for_the_installed_clients() -> None:
    obs = _http(IdleWatch(outcome="fin", elapsed_s=3.0, limit_s=30))
    judged = judge(parse_target("http://h/"), obs, _HOST, idle_limit=30)
    codes = {r.client: r.code for r in judged.recommendations}
    namespace: dict[str, Any] = {}
    exec(codes["httpx"], namespace)
    assert namespace["client"]._transport._pool._keepalive_expiry == 2.0
    namespace["client"].close()
    namespace = {}
    exec(codes["aiohttp"], namespace)
    asyncio.run(namespace["main"]())
    namespace = {}
    exec(codes["requests"], namespace)
    assert namespace["session"].retry_adapter.policy.idle_timeout == 2.0
    namespace["session"].close()


def test_stream_progress_plain_and_live() -> None:
    plain = io.StringIO()
    progress = StreamProgress(plain, live=False)
    progress.step("resolving h")
    for elapsed in (1.0, 5.2, 6.0, 10.1):
        progress.waiting(elapsed, 30)
    progress.close()
    assert plain.getvalue().splitlines() == [
        "  .. resolving h",
        "    idle for 5 s of at most 30 s",
        "    idle for 10 s of at most 30 s",
    ]
    live = io.StringIO()
    progress = StreamProgress(live, live=True)
    progress.waiting(1.0, 30)
    progress.step("next")
    assert live.getvalue() == "\r    idle for   1.0 s of at most 30 s \n  .. next\n"


def test_redis_advice_names_redis_py_options_and_one_interval() -> None:
    obs = DbObservation(
        kind="redis",
        peer="h:6379",
        dns_s=0.0,
        connect_s=0.0,
        server_version="7",
        settings={"timeout_s": None, "tcp_keepalive_s": 300.0},
        idle_setting="timeout",
        idle_timeout_s=None,
        server_keepalive_s=300.0,
        idle=None,
    )
    judged = judge(parse_target("redis://h/0"), obs, _HOST, idle_limit=30)
    (finding,) = [f for f in judged.findings if f.id == "db-no-idle-timeout"]
    assert "pool_pre_ping" not in finding.fix
    assert "check=" not in finding.fix
    assert "health_check_interval" in finding.fix
    (rec,) = judged.recommendations
    (comment,) = [line for line in rec.code.splitlines() if line.startswith("# The server")]
    assert "retire" not in comment  # redis-py PINGs idle connections, it does not retire them
    said = re.search(r"idle over (\d+) s", comment)
    set_to = re.search(r"health_check_interval=(\d+),", rec.code)
    assert said is not None
    assert set_to is not None
    assert said.group(1) == set_to.group(1) == "30"


def test_sql_advice_keeps_the_sqlalchemy_and_psycopg_options() -> None:
    obs = DbObservation(
        kind="postgresql",
        peer="h:5432",
        dns_s=0.0,
        connect_s=0.0,
        server_version="16",
        settings={},
        idle_setting="idle_session_timeout",
        idle_timeout_s=None,
        server_keepalive_s=None,
        idle=None,
    )
    judged = judge(parse_target("postgresql://h/db"), obs, _HOST, idle_limit=30)
    (finding,) = [f for f in judged.findings if f.id == "db-no-idle-timeout"]
    assert "pool_pre_ping" in finding.fix
    assert "check=" in finding.fix
    assert "health_check_interval" not in finding.fix


@pytest.mark.parametrize(
    ("seconds", "note", "shown"),
    [
        (28800.0, "", "8 h (28800 s)"),
        (28800.0, "configured", "8 h (28800 s, configured)"),
        (300.0, "", "5 min (300 s)"),
        (90.0, "measured", "90 s (measured)"),
        (3601.0, "", "3601 s"),
        (1.5, "measured", "1.50 s (measured)"),
        (0.8, "", "800.0 ms"),
    ],
)
def test_settings_are_shown_in_whole_units(seconds: float, note: str, shown: str) -> None:
    assert _fmt_setting(seconds, note) == shown
