"""The HTTP probe against real loopback servers with known idle behaviour."""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections.abc import Callable

import pytest

from resetguard.cli import main
from resetguard.doctor import Report, diagnose
from resetguard.doctor._http import parse_keep_alive


def _close_enough(measured: float | None, truth: float) -> bool:
    """Within ±20 % of the truth, or 0.3 s, whichever is larger (the issue's bound)."""
    return measured is not None and abs(measured - truth) <= max(0.2 * truth, 0.3)


def _ids(report: Report) -> list[str]:
    return [f.id for f in report.findings]


def _finding(report: Report, finding_id: str):  # type: ignore[no-untyped-def]
    matches = [f for f in report.findings if f.id == finding_id]
    assert matches, f"{finding_id} not in {_ids(report)}"
    return matches[0]


def test_idle_close_with_fin_is_measured(http_server: Callable[..., object]) -> None:
    server = http_server("fin", idle_close=1.5)
    report = diagnose(server.url, idle_limit=5)  # type: ignore[attr-defined]
    ((how, truth),) = server.closes  # type: ignore[attr-defined]
    assert how == "fin"
    assert report.idle_close == "fin"
    assert report.server_idle_timeout_source == "measured"
    assert _close_enough(report.server_idle_timeout_s, truth), (report.server_idle_timeout_s, truth)
    assert report.facts["keepalive"] == "honoured"
    assert server.requests >= 2  # type: ignore[attr-defined]  # the reuse really happened
    # 1.5 s is below httpx's 5 s default: even the most careful default client races.
    mismatch = _finding(report, "client-expiry-too-long")
    assert mismatch.severity.value == "critical"
    assert {c.client: c.safe for c in report.client_defaults} == {
        "httpx": False,
        "aiohttp": False,
        "requests/urllib3": False,
    }
    # After a FIN the kernel accepts the write; the read sees EOF; the second write EPIPE.
    wac = report.facts["write_after_close"]
    assert wac["first_write"] == "ok"
    assert wac["then_read"] == "eof"
    assert wac["second_write"] in ("EPIPE", "ECONNRESET")
    assert report.status == "problems"
    assert report.exit_code == 1
    httpx_rec = next(r for r in report.recommendations if r.client == "httpx")
    assert "keepalive_expiry=0.75" in httpx_rec.code


def test_idle_close_with_rst_is_told_apart(http_server: Callable[..., object]) -> None:
    server = http_server("rst", idle_close=1.5)
    report = diagnose(server.url, idle_limit=5)  # type: ignore[attr-defined]
    ((how, truth),) = server.closes  # type: ignore[attr-defined]
    assert how == "rst"
    assert report.idle_close == "rst"
    assert _close_enough(report.server_idle_timeout_s, truth)
    assert _finding(report, "idle-close-rst").severity.value == "warning"
    assert report.facts["write_after_close"]["first_write"] in ("EPIPE", "ECONNRESET")


def test_server_that_never_closes_within_the_limit(http_server: Callable[..., object]) -> None:
    server = http_server("never")
    report = diagnose(server.url, idle_limit=0.6)  # type: ignore[attr-defined]
    assert report.server_idle_timeout_s is None
    assert report.idle_close is None
    assert "no-idle-close" in _ids(report)
    assert server.closes == []  # type: ignore[attr-defined]
    assert report.status == "healthy"
    assert report.exit_code == 0
    # Nothing closed within 0.6 s: no client default is known to be safe or unsafe.
    assert all(c.safe is None for c in report.client_defaults)


def test_keep_alive_header_that_tells_the_truth(http_server: Callable[..., object]) -> None:
    server = http_server("fin", idle_close=2.0, keep_alive_header="timeout=2, max=100")
    report = diagnose(server.url, idle_limit=5)  # type: ignore[attr-defined]
    ((_how, truth),) = server.closes  # type: ignore[attr-defined]
    assert report.facts["keep_alive_timeout_s"] == 2.0
    assert report.facts["keep_alive_max"] == 100
    assert _close_enough(report.server_idle_timeout_s, truth)
    assert "keep-alive-header" in _ids(report)
    assert "keep-alive-header-overstates" not in _ids(report)


def test_keep_alive_header_that_overstates(http_server: Callable[..., object]) -> None:
    server = http_server("fin", idle_close=1.5, keep_alive_header="timeout=5")
    report = diagnose(server.url, idle_limit=5)  # type: ignore[attr-defined]
    assert _finding(report, "keep-alive-header-overstates").severity.value == "warning"
    assert report.server_idle_timeout_source == "measured"


def test_advertised_timeout_used_when_no_close_is_seen(http_server: Callable[..., object]) -> None:
    server = http_server("never", keep_alive_header="timeout=3")
    report = diagnose(server.url, idle_limit=0.5)  # type: ignore[attr-defined]
    assert report.server_idle_timeout_s == 3.0
    assert report.server_idle_timeout_source == "advertised"
    assert report.idle_close is None
    assert _finding(report, "client-expiry-too-long").severity.value == "critical"


def test_connection_close_on_every_response(http_server: Callable[..., object]) -> None:
    server = http_server("close-each")
    report = diagnose(server.url, idle_limit=2)  # type: ignore[attr-defined]
    assert report.facts["keepalive"] == "refused"
    assert report.facts["connection_header"] == "close"
    assert "keepalive-refused" in _ids(report)
    assert report.server_idle_timeout_s is None
    assert report.client_defaults == ()
    assert report.exit_code == 0


def test_keep_alive_promised_but_connection_dropped(http_server: Callable[..., object]) -> None:
    server = http_server("broken")
    report = diagnose(server.url, idle_limit=2)  # type: ignore[attr-defined]
    assert report.facts["keepalive"] == "broken"
    assert _finding(report, "keepalive-broken").severity.value == "critical"
    assert report.exit_code == 1


def test_refused_port_is_an_error_report(unused_port: int) -> None:
    report = diagnose(f"http://127.0.0.1:{unused_port}/", idle_limit=1, timeout=2)
    assert report.status == "error"
    assert report.exit_code == 2
    finding = _finding(report, "connect-failed")
    assert "ECONNREFUSED" in finding.detail


def test_unresolvable_host_is_an_error_report() -> None:
    report = diagnose("http://no-such-host.invalid/", idle_limit=1, timeout=3)
    assert report.exit_code == 2
    assert _ids(report) == ["dns-failed"]


def test_not_http_is_an_error_report() -> None:
    # A loopback server that answers with something that is not HTTP, then closes.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    worker = threading.Thread(target=answer)
    worker.start()
    try:
        report = diagnose(f"http://127.0.0.1:{port}/", idle_limit=1, timeout=2)
    finally:
        worker.join(5)
        listener.close()
    assert report.exit_code == 2
    assert "SSH-2.0" in _finding(report, "http-failed").detail


def test_tls_self_signed_is_critical_but_still_measured(
    http_server: Callable[..., object], server_tls: ssl.SSLContext
) -> None:
    server = http_server("fin", idle_close=1.0, tls=server_tls)
    url = server.url.replace("http://", "https://")  # type: ignore[attr-defined]
    report = diagnose(url, idle_limit=4)
    assert _finding(report, "tls-certificate-invalid").severity.value == "critical"
    assert report.facts["tls"]["verified"] is False
    assert _close_enough(report.server_idle_timeout_s, 1.0)


def test_tls_with_cafile_verifies_and_warns_on_expiry(
    http_server: Callable[..., object], server_tls: ssl.SSLContext, tls_cert: tuple[str, str]
) -> None:
    server = http_server("never", tls=server_tls)
    url = server.url.replace("http://", "https://")  # type: ignore[attr-defined]
    report = diagnose(url, idle_limit=0.5, cafile=tls_cert[0])
    tls = report.facts["tls"]
    assert tls["verified"] is True
    assert tls["version"] in ("TLSv1.2", "TLSv1.3")
    assert 9 <= tls["days_left"] <= 10.1
    assert "tls-certificate-invalid" not in _ids(report)
    assert _finding(report, "tls-certificate-expiring").severity.value == "warning"
    assert "tls_s" in report.timings


def test_tcp_target_measures_a_silent_connection(http_server: Callable[..., object]) -> None:
    server = http_server("fin", idle_close=1.5)
    report = diagnose(f"127.0.0.1:{server.port}", idle_limit=4)  # type: ignore[attr-defined]
    assert report.kind == "tcp"
    assert report.idle_close == "fin"
    # The server's idle clock starts at accept for a client that sends nothing.
    assert _close_enough(report.server_idle_timeout_s, 1.5)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("timeout=5, max=100", (5.0, 100)),
        ('timeout="2"', (2.0, None)),
        ("max=3", (None, 3)),
        ("timeout=abc", (None, None)),
        (None, (None, None)),
    ],
)
def test_parse_keep_alive(header: str | None, expected: tuple[float | None, int | None]) -> None:
    assert parse_keep_alive(header) == expected


def test_host_port_report_says_what_it_measured_and_did_not_judge(
    http_server: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    # The case: a server that closes idle keep-alive connections after 1 s.
    server = http_server("fin", idle_close=1.0)
    port = server.port  # type: ignore[attr-defined]
    code = main(["doctor", f"127.0.0.1:{port}", "--idle-limit", "3"])
    out = capsys.readouterr().out
    assert code == 0  # nothing wrong was seen at the TCP level ...
    assert "HEALTHY" not in out  # ... but it does not call the server healthy for clients
    assert "Verdict: NO PROBLEM AT THE TCP LEVEL (clients not judged: use a URL or DSN)" in out
    assert re.search(r"Silent client closed +[\d.]+ m?s \(measured\), closed with FIN", out), out
    assert "[INFO] Measured at the TCP level only: no client setting was judged" in out
    assert f"http://127.0.0.1:{port}/" in out  # the command that would judge the clients
    assert "Client defaults vs this server" not in out
    report = diagnose(f"127.0.0.1:{port}", idle_limit=3)
    assert "tcp-only" in _ids(report)
    assert "keep-alive" in report.facts["not_judged"]
    # The HTTP probe of the same server does judge the clients, and finds the race.
    http_report = diagnose(server.url, idle_limit=3)  # type: ignore[attr-defined]
    assert http_report.status == "problems"
    assert "tcp-only" not in _ids(http_report)
