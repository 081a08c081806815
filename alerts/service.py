"""The alert service: lock, rebuild, then source → evaluator → store → acknowledge → publish.

Exactly one instance evaluates: it holds the evaluation lock (a PostgreSQL session advisory lock
on the connection it commits through, with a lease bounded in time: alerts/lock.py); another
instance waits as a standby and connects to MQTT only once it holds the lock. Each batch's
transitions and the rule state behind them are committed before its messages are acknowledged
and before anything is published. Any database error ends the instance with status 1 and one
log line; its supervisor restarts it as a standby.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from queue import Empty

from alerts.config import Settings
from alerts.evaluator import Evaluator
from alerts.metrics import AlertMetrics
from alerts.model import Transition
from alerts.notify import Notifier
from alerts.publisher import Publisher
from alerts.source import AlertSession, Message, SourceError
from alerts.store import AlertStore, LockLostError, StoreError, transition_json
from pantau.catalogue import Family
from pantau.logs import get_logger
from pantau.payload import DecodeLimits, NameCache, Reason, decode, to_micros
from pantau.topics import uplink_device

log = get_logger(__name__)
US = 1_000_000
_RELOAD_ON = frozenset({Reason.UNKNOWN_SENSOR, Reason.FOREIGN_SENSOR})


class AlertService:
    """One alert-service process; :meth:`run` returns its exit status."""

    def __init__(self, settings: Settings, *, metrics: AlertMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or AlertMetrics()
        self._stop = threading.Event()
        self.store = AlertStore(
            conninfo=settings.require_database_url(),
            connect_timeout_s=settings.alerts.db_connect_timeout_s,
            lock_timeout_s=settings.alerts.lock_timeout_s,
        )
        self._limits = DecodeLimits.from_settings(settings)
        self._names: NameCache = {}
        self._families: dict[str, Family] = {}
        self._gateways: dict[str, frozenset[str]] = {}
        self._published = 0
        self._registry_loaded = 0.0

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        s = self.settings.alerts
        self.metrics.serve(host=s.metrics_host, port=s.metrics_port)
        self.metrics.active.set(0)
        log.info("waiting for the evaluation lock", client_id=s.client_id)
        if not self.store.acquire(retry_s=s.lock_retry_s, stop=self._stop.is_set):
            return 0
        try:
            return self._lead()
        except LockLostError as error:
            log.error("evaluation lock lost; stopping without emitting more", error=str(error))
            return 1
        except StoreError as error:
            log.error("database error; stopping without emitting more", error=str(error))
            return 1
        finally:
            self.metrics.active.set(0)
            self.store.close()

    def _lead(self) -> int:
        s = self.settings.alerts
        snapshot = self.store.snapshot(window_s=s.rise_window_s, live_window_s=s.live_window_s)
        evaluator = Evaluator(
            settings=s,
            sensors=snapshot.sensors,
            states=snapshot.states,
            open_alerts=snapshot.open_alerts,
            gauges=snapshot.gauges,
            windows=snapshot.windows,
            clock_us=snapshot.clock_us,
            max_future_s=self.settings.ingest.max_future_s,
            live=snapshot.live,
        )
        self._use_sensors(evaluator)
        self._published = snapshot.published_event_id
        session = AlertSession(
            settings=self.settings.mqtt,
            client_id=s.client_id,
            receive_maximum=s.max_inflight_messages,
        )
        try:
            session.start()
        except SourceError as error:
            log.error("cannot start the MQTT session", error=str(error))
            return 1
        publisher = Publisher(
            session=session,
            topic_root=self.settings.mqtt.topic_root,
            record=self.store.record_warnings,
            sent=self.store.last_warnings(),
        )
        # Alertmanager hears everything from the database, in a thread of its own.
        notifier = Notifier.maybe(self.settings, registry=self.metrics.registry)
        if notifier is not None:
            notifier.start()
        self.metrics.active.set(1)
        log.info(
            "evaluating",
            sensors=len(evaluator.sensors),
            open_alerts=len(evaluator.open),
            unpublished=len(snapshot.unpublished),
        )
        # What a crash left unsent, then every retained topic as the database says it is.
        self.store.lock.ensure()
        publisher.events(snapshot.unpublished)
        publisher.sensors(evaluator, evaluator.sensors)
        committed_clock = snapshot.clock_us
        try:
            while not self._stop.is_set():
                committed_clock = self._round(
                    evaluator, session, publisher, notifier, committed_clock
                )
        finally:
            session.stop()
            if notifier is not None:
                notifier.stop()
        return 0

    def _round(
        self,
        evaluator: Evaluator,
        session: AlertSession,
        publisher: Publisher,
        notifier: Notifier | None,
        committed_clock: int,
    ) -> int:
        """One batch: collected, evaluated and committed, then acknowledged and published.

        Returns the clock the database now holds.
        """
        self.store.lock.keep()
        if time.monotonic() - self._registry_loaded >= self.settings.alerts.registry_refresh_s:
            evaluator.sensors = self.store.load_sensors()
            self._use_sensors(evaluator)
        batch = self._collect(session)
        self._evaluate(evaluator, batch)
        outcome = evaluator.take()
        published = publisher.published_through() or self._published
        if (
            not batch
            and outcome.empty
            and outcome.clock_us == committed_clock
            and published == self._published
        ):
            return committed_clock  # nothing to record
        self._published = published
        started = time.perf_counter()
        stored = self.store.commit(outcome, published_event_id=self._published)
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        # Nothing goes out once the lease has ended: a standby may hold the lock by then.
        self.store.lock.ensure()
        session.ack(batch)
        causes = settle(evaluator, stored)
        if stored:
            if notifier is not None:
                notifier.poke()
            publisher.events([transition_json(t) for t in stored])
            publisher.sensors(evaluator, set(causes), causes)
            for t in stored:
                self.metrics.transitions.labels(rule=t.rule.value, change=t.change.value).inc()
        self.metrics.count_quality(outcome.suspects, outcome.settled)
        self.metrics.open_alerts.set(len(evaluator.open))
        self.metrics.clock.set(evaluator.clock_us / US)
        return outcome.clock_us

    def _collect(self, session: AlertSession) -> list[Message]:
        """Messages for one batch: up to its size or age, or none after a quiet tick."""
        s = self.settings.alerts
        try:
            # Back in time for the next confirmation of the lock when nothing comes.
            first = session.inbox.get(
                timeout=max(0.01, min(s.tick_s, self.store.lock.heartbeat_in_s()))
            )
        except Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + s.batch_max_age_ms / 1000
        while len(batch) < s.batch_max_messages:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    session.inbox.get(timeout=remaining)
                    if remaining > 0
                    else session.inbox.get_nowait()
                )
            except Empty:
                break
        return batch

    def _evaluate(self, evaluator: Evaluator, batch: list[Message], *, reload: bool = True) -> None:
        root = self.settings.mqtt.topic_root
        wall_us = to_micros(_utc(time.time()))
        if not batch:
            evaluator.tick(wall_us=wall_us)
            return
        decoded = [
            decode(
                message.payload,
                topic=message.topic,
                topic_root=root,
                sensors=self._families,
                received_at=_utc(message.received_at),
                limits=self._limits,
                names=self._names,
                gateways=self._gateways,
            )
            for message in batch
        ]
        # A reading of a sensor or gateway link registered since the last load: reload first.
        unknown = any(r.reason in _RELOAD_ON for d in decoded for r in d.rejections)
        if (
            unknown
            and reload
            and time.monotonic() - self._registry_loaded >= self.settings.ingest.registry_refresh_s
        ):
            # Newly registered: reload, and decode this batch again against it.
            evaluator.sensors = self.store.load_sensors()
            self._use_sensors(evaluator)
            self._evaluate(evaluator, batch, reload=False)
            return
        rejected: Counter[str] = Counter()
        readings = 0
        for message, outcome in zip(batch, decoded, strict=True):
            received_us = round(message.received_at * US)
            evaluator.observe(outcome.readings, received_us=received_us, wall_us=wall_us)
            readings += len(outcome.readings)
            if outcome.rejections:
                device = uplink_device(message.topic, root)
                if device is not None:
                    rejected[device] += len(outcome.rejections)
        evaluator.rejected(dict(rejected))
        evaluator.check_time()
        self.metrics.messages.inc(len(batch))
        self.metrics.readings.inc(readings)

    def _use_sensors(self, evaluator: Evaluator) -> None:
        self._families = {
            sensor_id: sensor.family for sensor_id, sensor in evaluator.sensors.items()
        }
        self._gateways = self.store.load_gateways()
        self._names.clear()
        self._registry_loaded = time.monotonic()


def settle(evaluator: Evaluator, stored: list[Transition]) -> dict[str, list[int]]:
    """After a commit: the open alerts learn their ids; returns, by sensor, the alerts whose
    changes were stored (what the sensor's new status and warning command are caused by)."""
    causes: dict[str, list[int]] = {t.sensor_id: [] for t in stored}
    for t in stored:
        alert = evaluator.open.get((t.sensor_id, t.rule))
        if alert is not None:
            alert.alert_id = t.alert_id
        if t.alert_id is not None:
            causes[t.sensor_id].append(t.alert_id)
    return causes


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)
