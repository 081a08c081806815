"""The database side: the state the service rebuilds itself from, and the transaction that
commits a batch's transitions with the rule state that led to them.

One connection does all of it, the one holding the evaluation lock (alerts/lock.py): whatever
it commits was committed by the instance holding the lock, and if that connection dies the lock
goes with it, so a second instance can never commit alongside a first one that lost its lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from alerts.evaluator import Outcome, StateKey
from alerts.lock import EVALUATION_LOCK, EvaluationLock, LockLostError, StoreError
from alerts.model import Change, GaugeStatus, OpenAlert, Rule, SensorInfo, Transition
from pantau.city import GaugeQuality
from pantau.db import registry
from pantau.db.events import lock_event_order
from pantau.logs import get_logger
from pantau.payload import from_micros, to_micros

__all__ = ["EVALUATION_LOCK", "AlertStore", "LockLostError", "Snapshot", "StoreError"]
log = get_logger(__name__)


def _us(value: datetime | None) -> int | None:
    return None if value is None else to_micros(value)


def _at(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


@dataclass(slots=True)
class Snapshot:
    """Everything the evaluator is rebuilt from."""

    sensors: dict[str, SensorInfo]
    states: dict[StateKey, tuple[int, dict[str, Any]]]
    open_alerts: dict[StateKey, OpenAlert]
    gauges: dict[str, GaugeStatus]
    windows: dict[str, list[tuple[int, float]]]
    clock_us: int
    published_event_id: int
    unpublished: list[dict[str, Any]] = field(default_factory=list)
    # Whether the stream was live when the last instance stopped (see Evaluator.live).
    live: bool = False


class AlertStore:
    """The evaluation lock and every read and write of the alert service."""

    def __init__(self, *, conninfo: str, connect_timeout_s: float, lock_timeout_s: float) -> None:
        self.lock = EvaluationLock(
            conninfo=conninfo, connect_timeout_s=connect_timeout_s, timeout_s=lock_timeout_s
        )

    def acquire(self, *, retry_s: float, stop: Callable[[], bool]) -> bool:
        """Take the evaluation lock (alerts/lock.py), waiting as a standby meanwhile."""
        return self.lock.acquire(retry_s=retry_s, stop=stop)

    def close(self) -> None:
        self.lock.close()

    # ------------------------------------------------------------------------------ rebuild

    def load_sensors(self) -> dict[str, SensorInfo]:
        """The registry with each gauge's threshold history."""
        with self.lock.use("reading the sensor registry") as conn:
            return self._sensors(conn)

    @staticmethod
    def _sensors(conn: psycopg.Connection[Any]) -> dict[str, SensorInfo]:
        return {
            sid: SensorInfo(
                id=sid,
                family=sensor.family,
                name=sensor.name,
                interval_s=sensor.interval_s,
                river=sensor.river,
                river_km=sensor.river_km,
                downstream=sensor.downstream,
                travel_time_min=sensor.travel_time_min,
                thresholds=tuple((to_micros(t), version) for t, version in sensor.thresholds),
                quality=None
                if sensor.quality is None
                else GaugeQuality.model_validate(sensor.quality),
            )
            for sid, sensor in registry.registered_sensors(conn).items()
        }

    def load_gateways(self) -> dict[str, frozenset[str]]:
        """Each gateway's sensors: whom a device may report for besides itself."""
        with self.lock.use("reading the gateways") as conn:
            return registry.gateway_sensors(conn)

    def snapshot(self, *, window_s: float, live_window_s: float) -> Snapshot:
        """The service's state as last committed (and the readings its rise fits need).

        Read in steps, each confirming the lock: on a large database the whole may take longer
        than the lease, one step never should."""
        sensors = self.load_sensors()
        with self.lock.use("reading the rule state") as conn:
            states = self._states(conn, sensors)
        with self.lock.use("reading the open alerts and gauges") as conn:
            open_alerts = self._open_alerts(conn)
            gauges = self._gauges(conn)
        with self.lock.use("reading the rise windows") as conn:
            windows = self._windows(conn, window_s)
        with self.lock.use("reading the service state") as conn:
            meta = dict(conn.execute("SELECT key, value FROM alert_service_state").fetchall())
            live = meta.get("live")
            if live is None:
                # Never recorded (a first start): the stream was live if ingest stored its
                # newest reading within the live window of that reading's time.
                row = conn.execute(
                    "SELECT coalesce(bool_or(updated_at - time <= make_interval(secs => %s)), "
                    "false) FROM (SELECT updated_at, time FROM latest_readings "
                    "ORDER BY updated_at DESC LIMIT 1) newest",
                    [live_window_s],
                ).fetchone()
                live = bool(row and row[0])
        published = int(meta.get("published_event_id", 0))
        return Snapshot(
            sensors=sensors,
            states=states,
            open_alerts=open_alerts,
            gauges=gauges,
            windows=windows,
            clock_us=int(meta.get("clock_us", 0)),
            published_event_id=published,
            unpublished=self.events_after(published),
            live=bool(live),
        )

    @staticmethod
    def _states(
        conn: psycopg.Connection[Any], sensors: dict[str, SensorInfo]
    ) -> dict[StateKey, tuple[int, dict[str, Any]]]:
        states: dict[StateKey, tuple[int, dict[str, Any]]] = {
            (sensor_id, rule): (to_micros(observed_at), state)
            for sensor_id, rule, observed_at, state in conn.execute(
                "SELECT sensor_id, rule, observed_at, state FROM alert_rule_state"
            )
        }
        # Sensors last heard of before this service ever ran: ingest's latest values tell.
        for sensor_id, newest in conn.execute(
            "SELECT sensor_id, max(time) FROM latest_readings GROUP BY sensor_id"
        ):
            key = (sensor_id, Rule.OFFLINE.value)
            if sensor_id in sensors and key not in states:
                states[key] = (to_micros(newest), {"last_seen": to_micros(newest)})
        return states

    @staticmethod
    def _open_alerts(conn: psycopg.Connection[Any]) -> dict[StateKey, OpenAlert]:
        return {
            (sensor_id, rule): OpenAlert(
                level=level,
                opened_us=to_micros(opened_at),
                updated_us=to_micros(updated_at),
                message=message,
                message_en=message_en,
                alert_id=alert_id,
            )
            for alert_id, sensor_id, rule, level, opened_at, updated_at, message, message_en in (
                conn.execute(
                    "SELECT id, sensor_id, rule, level, opened_at, updated_at, message, "
                    "message_en FROM alerts WHERE state = 'open'"
                )
            )
        }

    @staticmethod
    def _gauges(conn: psycopg.Connection[Any]) -> dict[str, GaugeStatus]:
        return {
            row[0]: GaugeStatus(
                sensor_id=row[0],
                level=row[1],
                since_us=to_micros(row[2]),
                observed_us=to_micros(row[3]),
                value=row[4],
                rate_m_per_h=row[5],
                next_level=row[6],
                next_level_at_us=_us(row[7]),
            )
            for row in conn.execute(
                "SELECT sensor_id, level, since, observed_at, value, rate_m_per_h, next_level, "
                "next_level_at FROM gauge_status"
            )
        }

    @staticmethod
    def _windows(
        conn: psycopg.Connection[Any], window_s: float
    ) -> dict[str, list[tuple[int, float]]]:
        windows: dict[str, list[tuple[int, float]]] = {}
        for sensor_id, at, value in conn.execute(
            """
            SELECT r.sensor_id, r.time, r.value
            FROM latest_readings l
            JOIN readings r ON r.sensor_id = l.sensor_id AND r.metric = l.metric
                AND r.time > l.time - make_interval(secs => %s) AND r.time <= l.time
            WHERE l.metric = 'water_level'
              -- Suspect readings moved nothing and feed no fit.
              AND NOT EXISTS (SELECT 1 FROM reading_flags f WHERE f.sensor_id = r.sensor_id
                              AND f.metric = r.metric AND f.time = r.time)
            ORDER BY r.time
            """,
            [window_s],
        ):
            windows.setdefault(sensor_id, []).append((to_micros(at), value))
        return windows

    def events_after(self, event_id: int) -> list[dict[str, Any]]:
        """Committed alert events after ``event_id`` (to publish what a crash left unsent)."""
        with self.lock.use("reading unpublished events") as conn:
            return self._events_after(conn, event_id)

    @staticmethod
    def _events_after(conn: psycopg.Connection[Any], event_id: int) -> list[dict[str, Any]]:
        """Committed alert events after ``event_id`` (to publish what a crash left unsent)."""
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        rows = cur.execute(
            "SELECT * FROM alert_events WHERE id > %s AND change <> 'acknowledged' ORDER BY id",
            [event_id],
        ).fetchall()
        return [event_json(row) for row in rows]

    # ----------------------------------------------------------------- warning-post commands

    def last_warnings(self) -> dict[str, dict[str, Any]]:
        """The last warning-post command recorded for each gauge."""
        with self.lock.use("reading the last warning-post commands") as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (gauge_id) gauge_id, command FROM warning_commands "
                "ORDER BY gauge_id, id DESC"
            ).fetchall()
        return {gauge: command for gauge, command in rows}

    def record_warnings(self, commands: list[tuple[str, dict[str, Any], list[int]]]) -> None:
        """Record warning-post commands (gauge, command, alerts whose changes led to it)
        before they are published, in one statement."""
        rows = [{"gauge_id": g, "command": c, "alert_ids": sorted(set(a))} for g, c, a in commands]
        with self.lock.use("recording warning-post commands") as conn:
            conn.execute(
                """
                INSERT INTO warning_commands (gauge_id, command, alert_ids)
                SELECT gauge_id, command, alert_ids FROM jsonb_to_recordset(%s::jsonb)
                    AS x(gauge_id text, command jsonb, alert_ids bigint[])
                """,
                [orjson.dumps(rows).decode()],
            )

    # ------------------------------------------------------------------------------- commit

    def commit(self, outcome: Outcome, *, published_event_id: int) -> list[Transition]:
        """Commit a batch's transitions, rule states, gauge statuses and clock in one
        transaction; returns the transitions stored (with their alert and event ids)."""
        stored: list[Transition] = []
        with self.lock.use("committing a batch") as conn, conn.transaction():
            if outcome.transitions:
                lock_event_order(conn)  # readers see its changes in id order
            for transition in outcome.transitions:
                if self._write(conn, transition):
                    stored.append(transition)
            self._write_states(conn, outcome)
            self._write_flags(conn, outcome)
            conn.execute(
                """
                INSERT INTO alert_service_state (key, value, updated_at)
                VALUES ('clock_us', %s, now()), ('published_event_id', %s, now()),
                       ('live', %s, now())
                ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
                """,
                [Jsonb(outcome.clock_us), Jsonb(published_event_id), Jsonb(outcome.live)],
            )
        return stored

    def _write_flags(self, conn: psycopg.Connection[Any], outcome: Outcome) -> None:
        if outcome.unflagged:
            # Suspect readings since believed (a real step): no longer suspect.
            conn.execute(
                """
                DELETE FROM reading_flags f USING jsonb_to_recordset(%s::jsonb)
                    AS x(sensor_id text, metric text, time timestamptz)
                WHERE f.sensor_id = x.sensor_id AND f.metric = x.metric AND f.time = x.time
                """,
                [
                    orjson.dumps(
                        [
                            {"sensor_id": s, "metric": m, "time": _iso(t)}
                            for s, m, t in outcome.unflagged
                        ]
                    ).decode()
                ],
            )
        if outcome.flags:
            rows = [
                {
                    "sensor_id": f.sensor_id, "metric": f.metric, "time": _iso(f.time_us),
                    "value": f.value, "reason": f.reason, "reference_time": _iso(f.reference_us),
                    "reference_value": f.reference_value,
                }
                for f in outcome.flags.values()
            ]  # fmt: skip
            # A reading delivered again keeps what it was found to be; only a series that came
            # back turns its readings into spikes.
            conn.execute(
                """
                INSERT INTO reading_flags (sensor_id, metric, time, value, reason,
                                           reference_time, reference_value)
                SELECT * FROM jsonb_to_recordset(%s::jsonb) AS x(
                    sensor_id text, metric text, time timestamptz, value double precision,
                    reason text, reference_time timestamptz, reference_value double precision)
                ON CONFLICT (sensor_id, metric, time) DO UPDATE SET reason = EXCLUDED.reason,
                    reference_time = EXCLUDED.reference_time,
                    reference_value = EXCLUDED.reference_value, flagged_at = now()
                WHERE EXCLUDED.reason = 'spike'
                """,
                [orjson.dumps(rows).decode()],
            )

    def _write(self, conn: psycopg.Connection[Any], t: Transition) -> bool:
        """Store one transition (the alert's row, its event); False where stored before."""
        observed = from_micros(t.observed_us)
        if t.change is Change.OPENED:
            alert_id = _open(conn, t, observed)
        else:
            alert_id = _update(conn, t, observed)
        if alert_id is None:
            return False  # already open (this opening was committed before), or none open
        t.alert_id = alert_id
        target = t.target
        event = conn.execute(
            _RECORD_EVENT,
            [
                t.alert_id, t.sensor_id, t.rule.value, t.change.value, t.level,
                t.previous_level, target.value, observed,
                target.predicted_level, _at(target.predicted_at_us), target.message,
                target.message_en, Jsonb(target.details),
            ],
        ).fetchone()  # fmt: skip
        if event is None:
            return False
        t.event_id, t.recorded_at = int(event[0]), event[1]
        return True

    def _write_states(self, conn: psycopg.Connection[Any], outcome: Outcome) -> None:
        # One statement per table, its rows as one JSON document: a batch touches every sensor
        # that reported, and encoding one document costs far less than row or array parameters.
        if outcome.states:
            rows = [
                {"sensor_id": s, "rule": str(r), "observed_at": _iso(at), "state": state}
                for (s, r), (at, state) in outcome.states.items()
            ]
            conn.execute(
                """
                INSERT INTO alert_rule_state (sensor_id, rule, observed_at, state)
                SELECT * FROM jsonb_to_recordset(%s::jsonb)
                    AS x(sensor_id text, rule text, observed_at timestamptz, state jsonb)
                ON CONFLICT (sensor_id, rule) DO UPDATE SET observed_at = EXCLUDED.observed_at,
                    state = EXCLUDED.state, updated_at = now()
                """,
                [orjson.dumps(rows).decode()],
            )
        if outcome.gauges:
            gauges = [
                {
                    "sensor_id": g.sensor_id, "level": g.level, "since": _iso(g.since_us),
                    "observed_at": _iso(g.observed_us), "value": g.value,
                    "rate_m_per_h": g.rate_m_per_h, "next_level": g.next_level,
                    "next_level_at": _iso(g.next_level_at_us),
                }
                for g in outcome.gauges.values()
            ]  # fmt: skip
            conn.execute(
                """
                INSERT INTO gauge_status (sensor_id, level, since, observed_at, value,
                                          rate_m_per_h, next_level, next_level_at)
                SELECT * FROM jsonb_to_recordset(%s::jsonb) AS x(
                    sensor_id text, level smallint, since timestamptz, observed_at timestamptz,
                    value float8, rate_m_per_h float8, next_level smallint,
                    next_level_at timestamptz)
                ON CONFLICT (sensor_id) DO UPDATE SET level = EXCLUDED.level,
                    since = EXCLUDED.since, observed_at = EXCLUDED.observed_at,
                    value = EXCLUDED.value, rate_m_per_h = EXCLUDED.rate_m_per_h,
                    next_level = EXCLUDED.next_level, next_level_at = EXCLUDED.next_level_at,
                    updated_at = now()
                WHERE gauge_status.observed_at <= EXCLUDED.observed_at
                """,
                [orjson.dumps(gauges).decode()],
            )


_OPEN = """
INSERT INTO alerts (sensor_id, rule, level, state, opened_at, updated_at, value,
                    predicted_level, predicted_at, message, message_en, details)
VALUES (%s, %s, %s, 'open', %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (sensor_id, rule) WHERE state = 'open' DO NOTHING
RETURNING id
"""

_UPDATE = """
UPDATE alerts SET level = %s, updated_at = %s, value = %s,
    predicted_level = %s, predicted_at = %s, message = %s, message_en = %s,
    details = %s,
    state = CASE WHEN %s THEN 'resolved' ELSE state END,
    resolved_at = CASE WHEN %s THEN %s ELSE resolved_at END
WHERE sensor_id = %s AND rule = %s AND state = 'open'
RETURNING id
"""

# A redelivered transition finds its event recorded: it is neither stored nor published again.
_RECORD_EVENT = """
INSERT INTO alert_events (alert_id, sensor_id, rule, change, level, previous_level,
                          value, observed_at, predicted_level, predicted_at,
                          message, message_en, details)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (alert_id, change, observed_at) WHERE change <> 'acknowledged'
    DO NOTHING
RETURNING id, recorded_at
"""


def _open(conn: psycopg.Connection[Any], t: Transition, observed: datetime) -> int | None:
    """The new alert's id, or None where one is open already."""
    target = t.target
    row = conn.execute(
        _OPEN,
        [
            t.sensor_id, t.rule.value, t.level, observed, observed, target.value,
            target.predicted_level, _at(target.predicted_at_us), target.message,
            target.message_en, Jsonb(target.details),
        ],
    ).fetchone()  # fmt: skip
    return None if row is None else int(row[0])


def _update(conn: psycopg.Connection[Any], t: Transition, observed: datetime) -> int | None:
    """The open alert's id after the change (resolving it if so), or None where none is open."""
    target = t.target
    resolved = t.change is Change.RESOLVED
    row = conn.execute(
        _UPDATE,
        [
            t.level, observed, target.value, target.predicted_level,
            _at(target.predicted_at_us), target.message, target.message_en,
            Jsonb(target.details), resolved, resolved, observed, t.sensor_id,
            t.rule.value,
        ],
    ).fetchone()  # fmt: skip
    return None if row is None else int(row[0])


def _iso(micros: int | None) -> str | None:
    return None if micros is None else from_micros(micros).isoformat()


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    """An `alert_events` row as the JSON published on ``ROOT/alerts/events``."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def transition_json(t: Transition) -> dict[str, Any]:
    """A stored transition as the same JSON as :func:`event_json` gives for its row."""
    target = t.target
    return {
        "id": t.event_id,
        "alert_id": t.alert_id,
        "sensor_id": t.sensor_id,
        "rule": t.rule.value,
        "change": t.change.value,
        "level": t.level,
        "previous_level": t.previous_level,
        "value": target.value,
        "observed_at": from_micros(t.observed_us).isoformat(),
        "recorded_at": None if t.recorded_at is None else t.recorded_at.isoformat(),
        "predicted_level": target.predicted_level,
        "predicted_at": None
        if target.predicted_at_us is None
        else from_micros(target.predicted_at_us).isoformat(),
        "message": target.message,
        "message_en": target.message_en,
        "details": target.details,
    }
