"""Prometheus export of a :class:`~resetguard._monitor.Monitor` (needs ``resetguard[prometheus]``).

The collector reads :meth:`Monitor.report` at scrape time, so the hot path never touches
``prometheus_client``. Metric names, units and labels are a contract, listed in
``docs/monitoring.md``; every name starts with ``namespace`` (default ``resetguard``).

Example::

    from prometheus_client import start_http_server
    from resetguard._monitor import Monitor
    from resetguard.instrumentation.prometheus import register

    monitor = Monitor().install()
    register(monitor)            # into prometheus_client's default REGISTRY
    start_http_server(9100)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from .._monitor import OUTCOMES, HistogramSnapshot, Monitor, MonitorReport

__all__ = ["ResetGuardCollector", "register"]

_NAMESPACE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def _le(bound: float) -> str:
    return repr(float(bound))


class ResetGuardCollector(Collector):
    """A ``prometheus_client`` collector exposing one monitor's counters and histograms.

    Args:
        monitor: the :class:`Monitor` to read.
        namespace: metric name prefix.
        endpoints: also export ``<ns>_endpoint_calls_total{endpoint,outcome}`` (bounded by the
            monitor's ``max_endpoints``).

    Example::

        >>> from prometheus_client import CollectorRegistry, generate_latest
        >>> from resetguard._monitor import Monitor
        >>> from resetguard.instrumentation.prometheus import ResetGuardCollector
        >>> registry = CollectorRegistry()
        >>> monitor = Monitor()
        >>> monitor.record("reset")
        >>> registry.register(ResetGuardCollector(monitor))
        >>> text = generate_latest(registry).decode()
        >>> 'resetguard_calls_total{monitor="resetguard",outcome="reset"} 1.0' in text
        True
    """

    def __init__(
        self, monitor: Monitor, *, namespace: str = "resetguard", endpoints: bool = True
    ) -> None:
        if not isinstance(monitor, Monitor):
            raise TypeError(f"monitor must be a resetguard Monitor, got {monitor!r}")
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise ValueError(
                f"namespace must be a Prometheus metric name prefix, got {namespace!r}"
            )
        self.monitor = monitor
        self.namespace = namespace
        self.endpoints = endpoints

    def describe(self) -> Iterable[Metric]:
        # The registry only reads the names: a second collector with the same namespace
        # is refused at registration.
        return list(self._families(self.monitor.report()))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.monitor.report()))

    def _families(self, r: MonitorReport) -> Iterator[Metric]:
        ns = self.namespace
        const = {"monitor": self.monitor.name}

        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(f"{ns}_{name}", doc, labels=[*const, *labels])

        def labelled(
            name: str, doc: str, label: str, values: Mapping[str, int]
        ) -> CounterMetricFamily:
            family = counter(name, doc, [label])
            for key, value in sorted(values.items()):
                family.add_metric([*const.values(), key], value)
            return family

        def single(name: str, doc: str, value: int) -> CounterMetricFamily:
            family = counter(name, doc, [])
            family.add_metric(list(const.values()), value)
            return family

        calls = counter("calls", "Calls seen by the monitor, by outcome.", ["outcome"])
        attempts = counter(
            "attempt_failures", "Failed attempts reported by the retry engine.", ["outcome"]
        )
        for outcome in OUTCOMES:
            calls.add_metric([*const.values(), outcome], r.calls.get(outcome))
            if outcome != "success":
                attempts.add_metric([*const.values(), outcome], r.attempt_failures.get(outcome))
        yield calls
        yield attempts
        if self.endpoints:
            per = counter(
                "endpoint_calls", "Calls by endpoint and outcome.", ["endpoint", "outcome"]
            )
            for endpoint, counts in sorted(r.endpoints.items()):
                for outcome, value in counts.calls.as_dict().items():
                    per.add_metric([*const.values(), endpoint, outcome], value)
            yield per
        yield labelled("faults_by_phase", "Connection faults by phase.", "phase", r.phases)
        yield labelled(
            "faults_by_source",
            "Connection faults by the library that raised them.",
            "source",
            r.sources,
        )
        yield labelled(
            "faults_by_connection",
            "Connection faults on reused and on fresh connections.",
            "connection",
            {"reused": r.reused_faults, "fresh": r.fresh_faults},
        )
        yield single("retries", "Retries scheduled.", r.retries)
        yield single("retry_recoveries", "Calls that succeeded after a retry.", r.recovered)
        yield labelled(
            "gave_up", "Calls the retry engine gave up on, by reason.", "reason", r.gave_up
        )
        yield single("budget_exhausted", "Retries refused by a retry budget.", r.budget_exhausted)
        yield labelled(
            "breaker_transitions",
            "Circuit-breaker state changes, by new state.",
            "state",
            r.breaker_transitions,
        )
        yield labelled(
            "connection_events",
            "Connection events (opened, reused, returned, closed, failed) by action.",
            "action",
            r.connections,
        )
        yield single("client_disconnects", "Server-side client disconnects.", r.client_disconnects)
        yield labelled(
            "client_disconnect_reasons",
            "Server-side client disconnects by component:reason, and by TCP end (how:fin/rst).",
            "reason",
            r.disconnect_reasons,
        )
        yield single(
            "cancelled_handlers",
            "Server handlers stopped because their client went away.",
            r.cancelled_handlers,
        )
        yield labelled(
            "suppressed_noise",
            "Connection-fault log lines and tracebacks demoted to debug events, by origin.",
            "origin",
            r.suppressed_noise,
        )
        yield single(
            "endpoint_evictions",
            "Endpoint rows evicted to respect max_endpoints.",
            r.evicted_endpoints,
        )

        state = GaugeMetricFamily(
            f"{ns}_breaker_state",
            "1 for the last known state of each circuit breaker.",
            labels=[*const, "breaker", "state"],
        )
        ratio = GaugeMetricFamily(
            f"{ns}_window_ratio",
            "Fraction of calls in the sliding window, by outcome class (reset, fault, error).",
            labels=[*const, "class"],
        )
        for breaker, current in sorted(r.breakers.items()):
            state.add_metric([*const.values(), breaker, current], 1.0)
        w = r.window_calls
        ratios: list[tuple[str, float]] = [
            ("reset", w.reset_rate),
            ("fault", w.fault_rate),
            ("error", w.error_rate),
        ]
        for cls, fraction in ratios:
            ratio.add_metric([*const.values(), cls], fraction)
        yield state
        yield ratio

        duration = HistogramMetricFamily(
            f"{ns}_call_duration_seconds",
            "Duration of calls measured by Monitor.track or given to Monitor.record.",
            labels=list(const),
        )
        idle = HistogramMetricFamily(
            f"{ns}_connection_idle_age_seconds",
            "How long a connection had been idle when it was reused or when it failed.",
            labels=[*const, "action"],
        )
        _add_histogram(duration, list(const.values()), r.latency)
        _add_histogram(idle, [*const.values(), "reused"], r.reuse_idle_age)
        _add_histogram(idle, [*const.values(), "failed"], r.failure_idle_age)
        yield duration
        yield idle


def _add_histogram(family: HistogramMetricFamily, labels: list[str], h: HistogramSnapshot) -> None:
    cumulative = h.cumulative()
    buckets: list[tuple[str, float]] = [
        (_le(bound), float(count)) for bound, count in zip(h.bounds, cumulative, strict=False)
    ]
    buckets.append(("+Inf", float(cumulative[-1])))
    family.add_metric(labels, buckets, h.sum)


def register(
    monitor: Monitor,
    registry: CollectorRegistry = REGISTRY,
    *,
    namespace: str = "resetguard",
    endpoints: bool = True,
) -> ResetGuardCollector:
    """Create a :class:`ResetGuardCollector` and register it (default: the global registry).

    Unregister it with ``registry.unregister(collector)``.
    """
    collector = ResetGuardCollector(monitor, namespace=namespace, endpoints=endpoints)
    registry.register(collector)
    return collector
