"""Prometheus metrics of the ingest service and its HTTP endpoint (``/metrics``, ``/healthz``).

Each service instance has a registry of its own, so several instances (tests) never share
counters. Publish-to-commit latency is observed per reading, thousands per batch, so it is kept
in a fine-bucketed histogram of our own that takes a whole batch in one numpy call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pantau.payload import iter_reasons

# Fine enough around the 0.5 s target that p50/p99 can be read off by interpolation.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075,
    0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5,
    2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000)
COMMIT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BatchHistogram(Collector):
    """A histogram that observes an array of values at once (thread-safe)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name = name
        self._documentation = documentation
        self._edges = np.asarray(buckets, dtype=np.float64)
        # One slot per bucket plus +Inf.
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray[Any, np.dtype[np.float64]]) -> None:
        if values.size == 0:
            return
        slots = np.searchsorted(self._edges, values, side="left")
        counts = np.bincount(slots, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        labels = [*(f"{edge:g}" for edge in self._edges), "+Inf"]
        family = HistogramMetricFamily(self._name, self._documentation)
        family.add_metric([], list(zip(labels, (float(c) for c in cumulative), strict=True)), total)
        yield family


class IngestMetrics:
    """Every metric ingest exports, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages_received = Counter(
            "pantau_ingest_messages_received", "MQTT messages received.", registry=r
        )
        self.readings_committed = Counter(
            "pantau_ingest_readings_committed",
            "Readings committed to the database (duplicates included).",
            registry=r,
        )
        self.readings_inserted = Counter(
            "pantau_ingest_readings_inserted", "Readings newly stored.", registry=r
        )
        self.duplicates_dropped = Counter(
            "pantau_ingest_duplicates_dropped",
            "Readings whose (sensor, metric, time) was already stored (redeliveries).",
            registry=r,
        )
        self.rejected = Counter(
            "pantau_ingest_rejected",
            "Rejections committed to rejected_payloads, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in iter_reasons():
            self.rejected.labels(reason=reason)
        self.unstorable = Counter(
            "pantau_ingest_unstorable_messages",
            "Messages the database refused even as a rejection record (logged and dropped).",
            registry=r,
        )
        self.sequence_gaps = Counter(
            "pantau_ingest_sequence_gaps",
            "Readings missing upstream of Pantau, from gaps in a device's `seq` numbers.",
            ["sensor"],
            registry=r,
        )
        self.batch_readings = Histogram(
            "pantau_ingest_batch_readings",
            "Readings per committed batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "pantau_ingest_commit_seconds",
            "Time to write and commit one batch.",
            buckets=COMMIT_BUCKETS_S,
            registry=r,
        )
        self.write_retries = Counter(
            "pantau_ingest_write_retries", "Failed database writes that were retried.", registry=r
        )
        self.inflight = Gauge(
            "pantau_ingest_inflight_messages",
            "Messages received and not yet acknowledged (the in-flight window in use).",
            registry=r,
        )
        self.window = Gauge(
            "pantau_ingest_inflight_window",
            "In-flight window asked of the broker (Receive Maximum).",
            registry=r,
        )
        self.spool_bytes = Gauge(
            "pantau_ingest_spool_bytes", "Bytes waiting in the outage spool.", registry=r
        )
        self.spooled_batches = Counter(
            "pantau_ingest_spooled_batches", "Batches written to the outage spool.", registry=r
        )
        self.database_up = Gauge(
            "pantau_ingest_database_up", "1 when the last database write succeeded.", registry=r
        )
        self.mqtt_connected = Gauge(
            "pantau_ingest_mqtt_connected", "1 while connected to the broker.", registry=r
        )
        self.first_message = Gauge(
            "pantau_ingest_first_message_timestamp_seconds",
            "Wall-clock time the first message since start was received (0 before).",
            registry=r,
        )
        self.last_commit = Gauge(
            "pantau_ingest_last_commit_timestamp_seconds",
            "Wall-clock time of the last commit.",
            registry=r,
        )
        self.publish_to_commit = BatchHistogram(
            "pantau_ingest_publish_to_commit_seconds",
            "Commit time minus the reading's own time (readings that carried a time).",
            LATENCY_BUCKETS_S,
        )
        r.register(self.publish_to_commit)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """A small HTTP server: ``/metrics`` for Prometheus and ``/healthz`` as JSON."""

    def __init__(
        self,
        *,
        metrics: IngestMetrics,
        health: Callable[[], tuple[bool, dict[str, object]]],
        host: str,
        port: int,
    ) -> None:
        handler = _handler(metrics, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ingest-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(
    metrics: IngestMetrics, health: Callable[[], tuple[bool, dict[str, object]]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path in {"/healthz", "/health"}:
                ok, body = health()
                self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes every few seconds would drown the service's own log

    return Handler
