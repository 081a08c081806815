"""Prometheus metrics of the alert service, served by prometheus-client's own HTTP server.

`pantau_alerts_active` is 1 on the instance that holds the evaluation lock and 0 on a standby;
health probes read it.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

COMMIT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class AlertMetrics:
    """Every metric the alert service exports, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.active = Gauge(
            "pantau_alerts_active",
            "1 while this instance holds the evaluation lock, 0 as a standby.",
            registry=r,
        )
        self.messages = Counter(
            "pantau_alerts_messages_received", "Uplink messages evaluated.", registry=r
        )
        self.readings = Counter(
            "pantau_alerts_readings_evaluated", "Readings applied to the rules.", registry=r
        )
        self.transitions = Counter(
            "pantau_alerts_transitions",
            "Alert changes committed, by rule and change.",
            ["rule", "change"],
            registry=r,
        )
        self.open_alerts = Gauge("pantau_alerts_open", "Alerts open now.", registry=r)
        self.clock = Gauge(
            "pantau_alerts_clock_timestamp_seconds",
            "The service's clock: the newest observation time evaluated.",
            registry=r,
        )
        self.suspect_readings = Counter(
            "pantau_alerts_suspect_readings",
            "Readings marked suspect by quality control, by reason (range, gradient); they "
            "move no level.",
            ["reason"],
            registry=r,
        )
        self.suspect_series = Counter(
            "pantau_alerts_suspect_series",
            "Runs of suspect readings settled, by verdict: spike (the series came back) or "
            "step (it stayed away and was believed).",
            ["verdict"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "pantau_alerts_commit_seconds",
            "Time to commit one batch's transitions and rule state.",
            buckets=COMMIT_BUCKETS_S,
            registry=r,
        )

    def count_quality(self, suspects: Mapping[str, int], settled: Mapping[str, int]) -> None:
        """Add one batch's quality-control findings."""
        for reason, count in suspects.items():
            self.suspect_readings.labels(reason=reason).inc(count)
        for verdict, count in settled.items():
            self.suspect_series.labels(verdict=verdict).inc(count)

    def serve(self, *, host: str, port: int) -> None:
        """Serve ``/metrics`` (port 0: not at all)."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
