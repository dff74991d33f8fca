"""Exporters against the real libraries: a Prometheus scrape over HTTP, the OpenTelemetry SDK's
in-memory reader, stdlib logging and structlog."""

from __future__ import annotations

import io
import json
import logging
import sys
import urllib.request
from typing import Any

import pytest

from resetguard._classify import Failure, Kind, Phase
from resetguard._events import (
    AttemptFailed,
    BreakerStateChanged,
    ConnectionEvent,
    GaveUp,
    RetryScheduled,
    emit,
)
from resetguard._monitor import Monitor

from ._servers import PingServer, ping

N_CALLS = 30


def _run_pings(monitor: Monitor) -> int:
    """N_CALLS real connections; the server resets every third one. Returns resets seen."""
    resets = 0
    with PingServer(reset=lambda i: i % 3 == 0) as server:

        def one() -> bytes:
            return ping(server.port)

        call = monitor.track(one, endpoint=f"127.0.0.1:{server.port}")
        for _ in range(N_CALLS):
            try:
                assert call() == b"pong\n"
            except ConnectionResetError:
                resets += 1
    return resets


def test_import_instrumentation_does_not_import_exporters() -> None:
    import subprocess

    code = (
        "import sys, resetguard, resetguard.instrumentation, resetguard._monitor;"
        "bad=[m for m in ('prometheus_client','opentelemetry','structlog') if m in sys.modules];"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_prometheus_scrape_over_http_after_injected_resets() -> None:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.parser import text_string_to_metric_families

    from resetguard.instrumentation.prometheus import register

    monitor = Monitor(name="pingsvc")
    resets = _run_pings(monitor)
    assert resets == N_CALLS // 3  # the server reset connections 0, 3, 6, …
    with monitor:
        emit(
            GaveUp(
                name="ping",
                attempts=3,
                reason="attempts",
                exception=ConnectionResetError(),
                failure=Failure(kind=Kind.RESET, phase=Phase.AWAIT),
                elapsed=0.1,
            )
        )
        emit(BreakerStateChanged(name="ping-breaker", old="closed", new="open", reason="x", at=0))
        emit(ConnectionEvent(name="httpx", action="reused", idle_age=3.0))

    registry = CollectorRegistry()
    register(monitor, registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert not thread.is_alive()

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"monitor": "pingsvc", **labels}.items())))]

    assert value("resetguard_calls_total", outcome="reset") == resets
    assert value("resetguard_calls_total", outcome="success") == N_CALLS - resets
    assert value("resetguard_calls_total", outcome="timeout") == 0
    endpoint = next(iter(monitor.report().endpoints))
    assert value("resetguard_endpoint_calls_total", endpoint=endpoint, outcome="reset") == resets
    assert value("resetguard_faults_by_source_total", source="stdlib") == resets
    assert value("resetguard_gave_up_total", reason="attempts") == 1
    assert value("resetguard_breaker_state", breaker="ping-breaker", state="open") == 1
    assert value("resetguard_window_ratio", **{"class": "reset"}) == pytest.approx(resets / N_CALLS)
    assert value("resetguard_call_duration_seconds_count") == N_CALLS
    assert value("resetguard_call_duration_seconds_bucket", le="+Inf") == N_CALLS
    assert value("resetguard_call_duration_seconds_sum") > 0
    assert value("resetguard_connection_idle_age_seconds_bucket", action="reused", le="2.0") == 0
    assert value("resetguard_connection_idle_age_seconds_bucket", action="reused", le="4.0") == 1


def test_prometheus_rejects_bad_arguments_and_duplicate_registration() -> None:
    from prometheus_client import CollectorRegistry

    from resetguard.instrumentation.prometheus import ResetGuardCollector, register

    with pytest.raises(ValueError, match="'bad-name'"):
        ResetGuardCollector(Monitor(), namespace="bad-name")
    with pytest.raises(TypeError, match="Monitor"):
        ResetGuardCollector(object())  # type: ignore[arg-type]
    registry = CollectorRegistry()
    register(Monitor(), registry)
    with pytest.raises(ValueError, match="Duplicated"):
        register(Monitor(), registry)
    register(Monitor(), registry, namespace="other")


def _otel_points(reader: Any) -> dict[tuple[str, tuple[tuple[str, Any], ...]], Any]:
    points: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    points[(metric.name, tuple(sorted(p.attributes.items())))] = p
    return points


def test_opentelemetry_in_memory_reader_after_injected_resets() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from resetguard.instrumentation.otel import instrument

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monitor = Monitor(name="otel")
    instruments = instrument(monitor, meter_provider=provider)
    try:
        resets = _run_pings(monitor)
        emit(
            RetryScheduled(
                name="x", attempt=1, max_attempts=3, delay=0.1, exception=OSError(), failure=None
            ),
            local=monitor,
        )
        points = _otel_points(reader)
        base = (("monitor", "otel"),)
        assert points[("resetguard.calls", (*base, ("outcome", "reset")))].value == resets
        assert (
            points[("resetguard.calls", (*base, ("outcome", "success")))].value == N_CALLS - resets
        )
        assert points[("resetguard.retries", base)].value == 1
        assert points[("resetguard.faults.source", (*base, ("source", "stdlib")))].value == resets
        hist = points[("resetguard.call.duration", (*base, ("outcome", "reset")))]
        assert hist.count == resets
        assert hist.sum > 0
        instruments.close()
        monitor.record("success", latency=0.01)
        after = _otel_points(reader)
        assert ("resetguard.calls", (*base, ("outcome", "reset"))) not in after or (
            after[("resetguard.calls", (*base, ("outcome", "reset")))].value == resets
        )
        total = sum(p.count for k, p in after.items() if k[0] == "resetguard.call.duration")
        assert total == N_CALLS  # nothing recorded after close()
    finally:
        provider.shutdown()
    with pytest.raises(ValueError, match="prefix"):
        instrument(monitor, meter_provider=provider, prefix=".bad")


def _attempt_failed() -> AttemptFailed:
    exc = ConnectionResetError(104, "reset talking to postgresql://app:hunter2@db:5432/x")
    failure = Failure(
        kind=Kind.RESET, phase=Phase.AWAIT, reused=True, source="psycopg", code="57P01"
    )
    return AttemptFailed(name="query", attempt=1, exception=exc, failure=failure, elapsed=0.25)


def test_log_hook_stdlib_extra_fields(caplog: pytest.LogCaptureFixture) -> None:
    from resetguard.instrumentation.logging import LogHook

    caplog.set_level(logging.DEBUG, logger="resetguard.events")
    hook = LogHook()
    hook(_attempt_failed())
    hook(ConnectionEvent(name="httpx", action="closed", peer="127.0.0.1:80"))
    hook(BreakerStateChanged(name="db", old="closed", new="open", reason="5 failures", at=1.0))
    first, second, third = caplog.records
    assert first.levelno == logging.INFO
    assert first.getMessage() == (
        "query: attempt 1 failed after 0.250s: connection reset (57P01, psycopg), "
        "phase=await, reused connection"
    )
    assert first.rg_kind == "reset"  # type: ignore[attr-defined]
    assert first.rg_reused is True  # type: ignore[attr-defined]
    assert first.rg_event_type == "attempt_failed"  # type: ignore[attr-defined]
    assert "hunter2" not in first.rg_error  # type: ignore[attr-defined]
    assert second.levelno == logging.DEBUG
    assert second.rg_peer == "127.0.0.1:80"  # type: ignore[attr-defined]
    assert third.levelno == logging.WARNING


def test_log_hook_skips_disabled_levels(caplog: pytest.LogCaptureFixture) -> None:
    from resetguard.instrumentation.logging import LogHook

    caplog.set_level(logging.WARNING, logger="app")
    LogHook(logging.getLogger("app"))(ConnectionEvent(name="httpx", action="opened"))
    assert not caplog.records


def test_log_hook_with_structlog_logger() -> None:
    import structlog
    from structlog.testing import capture_logs

    from resetguard.instrumentation.logging import LogHook

    with capture_logs() as logs:
        LogHook(structlog.get_logger())(_attempt_failed())
    (entry,) = logs
    assert entry["log_level"] == "info"
    assert entry["event"].startswith("query: attempt 1 failed")
    assert entry["kind"] == "reset"
    assert entry["code"] == "57P01"
    assert entry["event_type"] == "attempt_failed"


def test_log_hook_stdlib_through_structlog_processor_formatter() -> None:
    import structlog

    from resetguard.instrumentation.logging import LogHook

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logger = logging.getLogger("resetguard.test.structlog")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        LogHook(logger)(_attempt_failed())
    finally:
        logger.removeHandler(handler)
    data = json.loads(stream.getvalue())
    assert data["rg_kind"] == "reset"
    assert data["rg_phase"] == "await"
    assert data["level"] == "info"


def test_log_hook_bad_arguments() -> None:
    from resetguard.instrumentation.logging import LogHook

    with pytest.raises(TypeError, match="logger"):
        LogHook(42)
    with pytest.raises(ValueError, match="'loud'"):
        LogHook(levels={GaveUp: "loud"})  # type: ignore[dict-item]
