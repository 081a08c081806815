"""The ingest service: MQTT source, decoder, batcher, writer and acknowledgements, wired.

Threads: paho's network thread only queues messages; this module's pipeline (the caller's
thread) decodes and batches them (encoding their rows for COPY); the writer threads, one per
database connection, commit batches and acknowledge their messages in order; a maintenance
thread keeps plain-PostgreSQL partitions ahead; the metrics server answers HTTP. Memory is
bounded by the in-flight window: the broker never has more than Receive Maximum
unacknowledged messages out to us.
"""

from __future__ import annotations

import queue
import threading
import time

import psycopg

from ingest.acker import Acker
from ingest.batcher import Batch, Batcher
from ingest.config import batch_max_messages
from ingest.decoder import Decoder, SensorRegistry, SequenceTracker
from ingest.feedback import FeedbackPublisher
from ingest.metrics import IngestMetrics, MetricsServer
from ingest.receiver import ProcessSource
from ingest.source import Inbound, MqttSource, SourceBase, SourceError
from ingest.spool import Spool
from ingest.writer import Database, Writer
from pantau.db import registry as db_registry
from pantau.db.migrate import MigrationError, NotOwnerError, maintain
from pantau.logs import get_logger
from pantau.payload import DecodeLimits
from pantau.settings import Settings

log = get_logger(__name__)

# How often the pipeline wakes up with nothing to do, to notice a stop request.
_IDLE_WAKE_S = 0.2
# Messages decoded per wake-up before the batch's limits are looked at again.
_DRAIN_CHUNK = 512


class IngestService:
    """One ingest process. ``run()`` blocks until ``request_stop()`` (e.g. on SIGTERM)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = IngestMetrics()
        self._url = settings.require_database_url()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._stop_deadline: float | None = None
        self._inbox: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._first_message_pending = True
        ingest = settings.ingest
        self.metrics.window.set(ingest.max_undelivered_messages)
        self.sequences = SequenceTracker(
            on_gap=lambda sensor, missing: self.metrics.sequence_gaps.labels(sensor=sensor).inc(
                missing
            )
        )
        self.spool = (
            Spool(directory=ingest.spool_dir, max_bytes=ingest.spool_max_bytes)
            if ingest.spool_dir is not None
            else None
        )
        self.registry = SensorRegistry(
            load=self._load_registry,
            refresh_s=ingest.registry_refresh_s,
            cache_path=ingest.spool_dir / "registry.json" if ingest.spool_dir else None,
        )
        self.decoder = Decoder(
            topic_root=settings.mqtt.topic_root,
            registry=self.registry,
            limits=DecodeLimits.from_settings(settings),
            sequences=self.sequences,
        )
        self.batcher = Batcher(
            max_readings=ingest.batch_max_readings,
            max_age_s=ingest.batch_max_age_ms / 1000,
            max_messages=batch_max_messages(settings),
            max_bytes=ingest.batch_max_bytes,
        )
        self.source: SourceBase
        if ingest.mqtt_process:
            self.source = ProcessSource(
                settings=settings.mqtt,
                receive_maximum=ingest.max_undelivered_messages,
                deliver=self._inbox.put,
                on_state=self._mqtt_state,
                log_level=settings.log_level,
                log_json=settings.log_json,
            )
        else:
            self.source = MqttSource(
                settings=settings.mqtt,
                receive_maximum=ingest.max_undelivered_messages,
                deliver=self._inbox.put,
                on_state=self._mqtt_state,
            )
        self.acker = Acker(self.source)
        self.feedback = (
            FeedbackPublisher(settings=settings.mqtt, per_minute=ingest.feedback_per_minute)
            if ingest.feedback_per_minute
            else None
        )
        self.metrics.inflight.set_function(lambda: self.source.inflight)
        self.writer = Writer(
            database=Database(conninfo=self._url, connect_timeout_s=ingest.db_connect_timeout_s),
            acker=self.acker,
            metrics=self.metrics,
            spool=self.spool,
            retry_initial_s=ingest.retry_initial_ms / 1000,
            retry_max_s=max(ingest.retry_max_ms, ingest.retry_initial_ms) / 1000,
            connections=ingest.writer_connections,
            is_stale=self._stale,
            topic_root=settings.mqtt.topic_root,
        )
        self._server: MetricsServer | None = None
        if ingest.metrics_port:
            self._server = MetricsServer(
                metrics=self.metrics,
                health=self.health,
                host=ingest.metrics_host,
                port=ingest.metrics_port,
            )

    # -- public --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask ``run()`` to flush, commit, acknowledge and disconnect (signal-safe)."""
        self._stop.set()

    def health(self) -> tuple[bool, dict[str, object]]:
        """Whether the service is doing its job, and the facts behind the answer."""
        last = self.writer.last_commit_wall
        body: dict[str, object] = {
            "started": self._started.is_set(),
            "mqtt_connected": self.source.connected,
            "database_up": self.writer.database_up,
            "spool_bytes": self.writer.spool_bytes,
            "spool_full": self.writer.spool_full,
            "inflight_messages": self.source.inflight,
            "window": self.settings.ingest.max_undelivered_messages,
            "last_commit_age_s": None if last is None else round(time.time() - last, 3),
            "sensors": len(self.registry),
        }
        ok = (
            self._started.is_set()
            and self.source.connected
            and self.writer.alive
            and (self.writer.database_up or (self.spool is not None and not self.writer.spool_full))
        )
        body["status"] = "ok" if ok else "degraded"
        return ok, body

    def run(self) -> int:
        """Serve until stopped; returns the process exit status (0: clean shutdown)."""
        if self._server is not None:
            self._server.start()
            log.info("metrics listening", port=self._server.port)
        maintenance = threading.Thread(
            target=self._maintain, name="ingest-maintenance", daemon=True
        )
        try:
            if self.spool is not None:
                held = self.spool.open()
                if held:
                    log.info("spool holds batches from an earlier run", records=held)
            if not self._start_registry():
                return 0  # stopped before the database ever answered: nothing held
            maintenance.start()
            self.writer.start()
            try:
                self.source.start()
            except SourceError as error:
                log.error("cannot start", error=str(error))
                self.writer.finish(timeout_s=self.settings.ingest.shutdown_timeout_s)
                return 1
            if self.feedback is not None:
                self.feedback.start()
            self._started.set()
            log.info(
                "ingest running",
                topic_root=self.settings.mqtt.topic_root,
                client_id=self.settings.mqtt.client_id,
                shared_group=self.settings.mqtt.shared_group or None,
                window=self.settings.ingest.max_undelivered_messages,
                spool=str(self.settings.ingest.spool_dir) if self.spool else None,
            )
            self._pump()
            return self._shutdown()
        finally:
            self._stop.set()
            if self.feedback is not None:
                self.feedback.stop()
            if self.spool is not None:
                self.spool.close()
            if self._server is not None:
                self._server.stop()

    def _mqtt_state(self, up: bool) -> None:
        self.metrics.mqtt_connected.set(1 if up else 0)

    # -- pipeline ------------------------------------------------------------------------------

    def _pump(self) -> None:
        inbox, batcher = self._inbox, self.batcher
        while not self._stop.is_set():
            deadline = batcher.deadline()
            now = time.monotonic()
            wait = _IDLE_WAKE_S if deadline is None else min(_IDLE_WAKE_S, deadline - now)
            try:
                message = inbox.get(timeout=max(0.0, wait))
            except queue.Empty:
                message = None
            if message is not None:
                self._accept(message)
                for _ in range(_DRAIN_CHUNK):
                    if batcher.full():
                        break
                    try:
                        self._accept(inbox.get_nowait())
                    except queue.Empty:
                        break
            if batcher.due(time.monotonic()):
                self._flush()

    def _accept(self, message: Inbound) -> None:
        self.metrics.messages_received.inc()
        if self._first_message_pending:
            # When a backlog started draining: what a drain's throughput is timed from.
            self.metrics.first_message.set(message.received_at)
            self._first_message_pending = False
        if message.generation != self.source.generation:
            return  # from a lost connection: the broker sends it again on the new one
        decoded = self.decoder.decode(message)
        if decoded.rejected and self.feedback is not None:
            self.feedback.rejected(decoded.rejected)
        self.batcher.add(decoded)

    def _flush(self) -> bool:
        """Hand the current batch to the writer; False if shutdown's time ran out first."""
        batch = self.batcher.take()
        if batch is None:
            return True
        while not self.writer.submit(batch, timeout_s=_IDLE_WAKE_S):
            if self._stop.is_set() and time.monotonic() > self._shutdown_deadline():
                return False
        return True

    def _shutdown_deadline(self) -> float:
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.settings.ingest.shutdown_timeout_s
        return self._stop_deadline

    def _stale(self, batch: Batch) -> bool:
        generation = self.source.generation
        return all(message.generation != generation for message in batch.messages)

    def _shutdown(self) -> int:
        timeout = self.settings.ingest.shutdown_timeout_s
        deadline = self._shutdown_deadline()
        log.info("stopping: flushing what is held")
        flushed = True
        while flushed:
            try:
                self._accept(self._inbox.get_nowait())
            except queue.Empty:
                break
            if self.batcher.full():
                flushed = self._flush()
        flushed = flushed and self._flush()
        clean = self.writer.finish(timeout_s=max(0.0, deadline - time.monotonic())) and flushed
        # Acknowledgements are queued ahead of DISCONNECT, so they reach the broker first.
        self.source.stop()
        if clean:
            log.info("stopped cleanly", acked=self.acker.acked)
            return 0
        log.error(
            "stopped with uncommitted messages; the broker keeps them for the next start",
            timeout_s=timeout,
        )
        return 1

    # -- database housekeeping -----------------------------------------------------------------

    def _load_registry(self) -> db_registry.Snapshot:
        with psycopg.connect(
            self._url, connect_timeout=max(1, round(self.settings.ingest.db_connect_timeout_s))
        ) as conn:
            return db_registry.snapshot(conn)

    def _start_registry(self) -> bool:
        delay = max(0.05, self.settings.ingest.retry_initial_ms / 1000)
        while not self._stop.is_set():
            try:
                if self.registry.start():
                    self.writer.database_up = True
                    self.metrics.database_up.set(1)
                log.info("sensor registry loaded", sensors=len(self.registry))
                return True
            except Exception as error:
                log.warning(
                    "waiting for the database to load the sensor registry", error=str(error)
                )
                self._stop.wait(delay)
                delay = min(delay * 2, max(0.05, self.settings.ingest.retry_max_ms / 1000))
        return False

    def _maintain(self) -> None:
        # Plain PostgreSQL mode: rollups are refreshed on TimescaleDB's refresh schedule,
        # partitions and retention less often. In TimescaleDB mode, on the same schedule, the
        # aggregates catch up with late readings older than the refresh policies' windows.
        refresh_s = self.settings.storage.refresh_schedule.total_seconds()
        partitions_s = self.settings.ingest.maintenance_interval_s
        partitions_due = 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            partitions = started >= partitions_due
            try:
                done = maintain(self._url, self.settings.storage, wait=False, partitions=partitions)
                if done is not None and partitions:
                    partitions_due = started + partitions_s
                routine = ("rollup_rows", "rollups_caught_up")
                changes = {k: v for k, v in (done or {}).items() if v and k not in routine}
                if changes:
                    log.info("storage maintenance", **changes)
            except NotOwnerError as error:
                # TimescaleDB under ingest's own login: its policies keep the aggregates, and
                # the catch-up is left to `pantau db maintain` run by the owner.
                log.info("storage maintenance left to the owner", reason=str(error))
                return
            except (psycopg.Error, MigrationError) as error:
                log.warning("storage maintenance failed", error=str(error)[:300])
            self._stop.wait(min(refresh_s, partitions_s))
