"""OpenTelemetry metrics for a :class:`~resetguard._monitor.Monitor` (needs ``resetguard[otel]``).

Only ``opentelemetry-api`` is used: the application chooses the SDK, readers and exporters.
Counters are asynchronous (``ObservableCounter``), read from :meth:`Monitor.report` when the
SDK collects; call durations go to a ``Histogram`` as they are recorded. Names follow the
OpenTelemetry conventions (dotted, unit in ``unit``) and are listed in ``docs/monitoring.md``.

Example::

    from resetguard._monitor import Monitor
    from resetguard.instrumentation.otel import instrument

    monitor = Monitor().install()
    instruments = instrument(monitor)      # uses the global MeterProvider
    ...
    instruments.close()
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from .._monitor import OUTCOMES, Monitor, MonitorReport

__all__ = ["OTelInstruments", "instrument"]

_Reader = Callable[[MonitorReport], Mapping[str, int]]


class OTelInstruments:
    """The instruments created by :func:`instrument`; :meth:`close` detaches them.

    After ``close()`` the observable counters report nothing and durations stop being
    recorded (the OpenTelemetry API has no way to delete an instrument).
    """

    def __init__(self, monitor: Monitor, meter: Meter, prefix: str) -> None:
        self.monitor = monitor
        self.meter = meter
        self._closed = False
        self._lock = threading.Lock()
        self._cached: tuple[float, MonitorReport] | None = None
        self.duration = meter.create_histogram(
            f"{prefix}.call.duration",
            unit="s",
            description="Duration of calls measured by Monitor.track or given to Monitor.record.",
        )

        def counter(name: str, unit: str, description: str, key: str, read: _Reader) -> None:
            meter.create_observable_counter(
                f"{prefix}.{name}",
                callbacks=[self._callback(key, read)],
                unit=unit,
                description=description,
            )

        counter(
            "calls",
            "{call}",
            "Calls seen by the monitor, by outcome.",
            "outcome",
            lambda r: {o: r.calls.get(o) for o in OUTCOMES},
        )
        counter(
            "attempt.failures",
            "{attempt}",
            "Failed attempts reported by the retry engine, by outcome.",
            "outcome",
            lambda r: {o: r.attempt_failures.get(o) for o in OUTCOMES if o != "success"},
        )
        counter(
            "faults.phase",
            "{fault}",
            "Connection faults by phase.",
            "phase",
            lambda r: r.phases,
        )
        counter(
            "faults.source",
            "{fault}",
            "Connection faults by the library that raised them.",
            "source",
            lambda r: r.sources,
        )
        counter(
            "faults.connection",
            "{fault}",
            "Connection faults on reused and on fresh connections.",
            "connection",
            lambda r: {"reused": r.reused_faults, "fresh": r.fresh_faults},
        )
        counter("retries", "{retry}", "Retries scheduled.", "", lambda r: {"": r.retries})
        counter(
            "retry.recoveries",
            "{call}",
            "Calls that succeeded after a retry.",
            "",
            lambda r: {"": r.recovered},
        )
        counter("gave_up", "{call}", "Give-ups by reason.", "reason", lambda r: r.gave_up)
        counter(
            "budget.exhausted",
            "{retry}",
            "Retries refused by a retry budget.",
            "",
            lambda r: {"": r.budget_exhausted},
        )
        counter(
            "breaker.transitions",
            "{transition}",
            "Circuit-breaker state changes, by new state.",
            "state",
            lambda r: r.breaker_transitions,
        )
        counter(
            "connection.events",
            "{event}",
            "Connection events by action.",
            "action",
            lambda r: r.connections,
        )
        counter(
            "client.disconnects",
            "{disconnect}",
            "Server-side client disconnects.",
            "",
            lambda r: {"": r.client_disconnects},
        )
        counter(
            "client.disconnect.reasons",
            "{disconnect}",
            "Server-side client disconnects by component:reason, and by TCP end (how:fin/rst).",
            "reason",
            lambda r: r.disconnect_reasons,
        )
        counter(
            "handlers.cancelled",
            "{handler}",
            "Server handlers stopped because their client went away.",
            "",
            lambda r: {"": r.cancelled_handlers},
        )
        counter(
            "noise.suppressed",
            "{report}",
            "Connection-fault log lines and tracebacks demoted to debug events, by origin.",
            "origin",
            lambda r: r.suppressed_noise,
        )
        monitor._add_observer(self._observe)

    def _report(self) -> MonitorReport:
        # One collection calls every callback in a row: share one snapshot between them.
        now = self.monitor._clock()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < 0.05:
                return self._cached[1]
        report = self.monitor.report()
        with self._lock:
            self._cached = (now, report)
        return report

    def _callback(
        self, key: str, read: _Reader
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        base = {"monitor": self.monitor.name}

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            if self._closed:
                return []
            values = read(self._report())
            return [
                Observation(value, {**base, key: label} if key else base)
                for label, value in sorted(values.items())
            ]

        return callback

    def _observe(self, outcome: str, endpoint: str, latency: float | None) -> None:
        if latency is not None:
            self.duration.record(latency, {"monitor": self.monitor.name, "outcome": outcome})

    def close(self) -> None:
        """Stop reporting (idempotent)."""
        self._closed = True
        self.monitor._remove_observer(self._observe)


def instrument(
    monitor: Monitor,
    *,
    meter_provider: MeterProvider | None = None,
    prefix: str = "resetguard",
) -> OTelInstruments:
    """Create the OpenTelemetry instruments for ``monitor``.

    ``meter_provider`` defaults to the global one (``opentelemetry.metrics``).

    Example::

        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        instruments = instrument(monitor, meter_provider=MeterProvider(metric_readers=[reader]))
    """
    if not isinstance(monitor, Monitor):
        raise TypeError(f"monitor must be a resetguard Monitor, got {monitor!r}")
    if not isinstance(prefix, str) or not prefix or prefix.strip(".") != prefix:
        raise ValueError(f"prefix must be a non-empty dotted name, got {prefix!r}")
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("resetguard")
    except PackageNotFoundError:  # running from a source tree
        ours = None
    meter = provider.get_meter("resetguard", ours)
    return OTelInstruments(monitor, meter, prefix)
