"""``resetguard doctor`` on the command line: exit codes, JSON schema, progress, redaction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from resetguard.cli import main


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["doctor", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_for_a_server_with_an_idle_close(
    http_server: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
    schema_errors: Callable[[object], list[str]],
) -> None:
    server = http_server("fin", idle_close=1.5)
    code, out, err = _run([server.url, "--idle-limit", "4s", "--json"], capsys)
    data = json.loads(out)
    assert schema_errors(data) == []
    assert code == 1 == data["exit_code"]
    assert data["target"] == server.url
    assert data["idle_close"] == "fin"
    assert abs(data["server_idle_timeout_s"] - 1.5) <= 0.3
    assert data["findings"][0]["severity"] == "critical"
    assert err == ""  # stderr is not a TTY here and --progress was not given


def test_healthy_server_exits_0_with_human_report(
    http_server: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    server = http_server("never")
    code, out, _err = _run([server.url, "--idle-limit", "500ms"], capsys)
    assert code == 0
    assert "Verdict: HEALTHY" in out
    assert "No idle close within the limit (0.5 s)" in out
    assert "Recommended settings" in out


def test_findings_are_ranked_by_severity(
    http_server: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    server = http_server("rst", idle_close=1.0, keep_alive_header="timeout=4")
    code, out, _err = _run([server.url, "--idle-limit", "3"], capsys)
    assert code == 1
    order = [line.split("]")[0].strip(" [") for line in out.splitlines() if line.startswith("  [")]
    ranks = {"CRITICAL": 0, "WARNING": 1, "INFO": 2}
    assert len(order) >= 4
    assert [ranks[o] for o in order] == sorted(ranks[o] for o in order)


def test_unreachable_exits_2_with_a_report(
    unused_port: int,
    capsys: pytest.CaptureFixture[str],
    schema_errors: Callable[[object], list[str]],
) -> None:
    code, out, _err = _run([f"127.0.0.1:{unused_port}", "--json", "--timeout", "2s"], capsys)
    data = json.loads(out)
    assert code == 2 == data["exit_code"]
    assert data["status"] == "error"
    assert schema_errors(data) == []


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["http://127.0.0.1:1/", "--idle-limit", "5x"], "'5x'"),
        (["http://127.0.0.1:1/", "--idle-limit", "0s"], "'0s'"),
        (["http://127.0.0.1:1/", "--timeout", "-1"], "'-1'"),
        (["ftp://user:Hunter2pw@example.com/"], "'ftp://'"),
        (["just-a-host"], "'just-a-host'"),
        (["127.0.0.1:99999"], "'99999'"),
        (["redis://127.0.0.1/notanumber"], "'notanumber'"),
        (["redis://127.0.0.1:6379/0", "--cafile", "/nonexistent"], "cafile"),
        (["http://127.0.0.1:1/", "--cafile", "/nonexistent"], "'http://127.0.0.1:1/' uses no TLS"),
        (["http://127.0.0.1:1/", "--cafile", __file__], "'http://127.0.0.1:1/' uses no TLS"),
        (["https://127.0.0.1:1/", "--cafile", "/nonexistent"], "'/nonexistent' does not exist"),
    ],
)
def test_bad_usage_exits_2_naming_the_value(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(args, capsys)
    assert code == 2
    assert out == ""
    assert named in err
    assert "Traceback" not in err
    assert "Hunter2pw" not in err


@pytest.mark.parametrize("command", ["doctor", "proxy", "demo"])
def test_unknown_option_prints_the_sub_commands_own_usage(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--bogus", "http://127.0.0.1:1/"])
    out, err = capsys.readouterr()
    assert info.value.code == 2
    assert out == ""
    assert err.startswith(f"usage: resetguard {command} [-h]")
    assert f"resetguard {command}: error: unrecognized arguments: --bogus" in err
    assert "Traceback" not in err


def test_password_never_appears_in_any_output(
    postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "S3cret-Pa55"
    dsn = f"postgresql://postgres:{secret}@127.0.0.1:5432/test?options=-c%20idle_session_timeout%3D800"
    for extra in (["--json"], []):
        code, out, err = _run([dsn, "--idle-limit", "3", "--progress", *extra], capsys)
        assert code == 1
        assert secret not in out
        assert secret not in err
        assert "postgres:***@127.0.0.1" in out
        assert "reading idle and keepalive settings" in err  # progress went to stderr
    # Unreachable, with a password: the error path is redacted too.
    code, out, err = _run([dsn.replace("5432", "1"), "--timeout", "1"], capsys)
    assert code == 2
    assert secret not in out + err


def test_progress_goes_to_stderr_and_json_stays_clean(
    http_server: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    server = http_server("never")
    code, out, err = _run([server.url, "--idle-limit", "0.3", "--json", "--progress"], capsys)
    assert code == 0
    json.loads(out)  # nothing but JSON on stdout
    assert "second request on the same connection" in err


def test_real_process_exit_codes(http_server: Callable[..., Any], unused_port: int) -> None:
    server = http_server("never")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # What the `resetguard` console script runs. (`python -m resetguard.cli` loads cli.py as
    # __main__, a second copy whose UsageError the sub-commands cannot raise.)
    entry = "import sys; from resetguard.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", entry, "doctor"]
    ok = subprocess.run(
        [*cmd, server.url, "--idle-limit", "0.3", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "healthy"
    down = subprocess.run(
        [*cmd, f"http://127.0.0.1:{unused_port}/", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert down.returncode == 2
    assert "COULD NOT DIAGNOSE" in down.stdout
    bad = subprocess.run(
        [*cmd, "http://x/", "--idle-limit", "soon"], capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in bad.stderr
    assert bad.returncode == 2
    assert "invalid duration 'soon'" in bad.stderr
