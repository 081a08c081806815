"""The database side: the evaluation lock, the state the service rebuilds itself from, and the
transaction that commits a batch's transitions with the rule state that led to them.

One connection does all of it and holds the session advisory lock: whatever it commits was
committed by the instance holding the lock, and if that connection dies the lock goes with it,
so a second instance can never commit alongside a first one that lost its lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from alerts.evaluator import Outcome, StateKey
from alerts.model import Change, GaugeStatus, OpenAlert, Rule, SensorInfo, Transition
from pantau.catalogue import Family
from pantau.city import Thresholds
from pantau.db import registry
from pantau.db.events import lock_event_order
from pantau.logs import get_logger
from pantau.payload import from_micros, to_micros

log = get_logger(__name__)
# Arbitrary but fixed: the alert service's evaluation lock ("alerts" in ASCII).
EVALUATION_LOCK = 0x616C65727473


class LockLostError(RuntimeError):
    """The connection holding the evaluation lock failed: this instance must stop emitting."""


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


class AlertStore:
    """The evaluation lock and every read and write of the alert service."""

    def __init__(self, *, conninfo: str, connect_timeout_s: float) -> None:
        self._conninfo = conninfo
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None

    # --------------------------------------------------------------------------------- lock

    def acquire(self, *, retry_s: float, stop: Callable[[], bool]) -> bool:
        """Connect and take the evaluation lock, waiting as a standby while another instance
        holds it; False when ``stop`` says so first."""
        while not stop():
            try:
                conn = psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=max(1, round(self._connect_timeout_s)),
                )
                got = conn.execute("SELECT pg_try_advisory_lock(%s)", [EVALUATION_LOCK]).fetchone()
            except psycopg.OperationalError as error:
                log.warning("database unavailable; retrying", error=str(error).strip())
                got = None
            else:
                if got and got[0]:
                    self._conn = conn
                    return True
                conn.close()
            deadline = time.monotonic() + retry_s
            while time.monotonic() < deadline and not stop():
                time.sleep(min(0.1, retry_s))
        return False

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            raise LockLostError("the evaluation lock's connection is gone")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the session lock goes with the session
            self._conn = None

    # ------------------------------------------------------------------------------ rebuild

    def load_sensors(self) -> dict[str, SensorInfo]:
        """The registry with each gauge's threshold history."""
        conn = self.conn
        versions: dict[str, list[tuple[int, Thresholds]]] = {}
        for sensor_id, valid_from, waspada, siaga, awas in conn.execute(
            "SELECT sensor_id, valid_from, waspada, siaga, awas FROM flood_thresholds "
            "ORDER BY sensor_id, valid_from"
        ):
            versions.setdefault(sensor_id, []).append(
                (to_micros(valid_from), Thresholds(waspada=waspada, siaga=siaga, awas=awas))
            )
        return {
            row[0]: SensorInfo(
                id=row[0],
                family=Family(row[1]),
                name=row[2],
                interval_s=row[3],
                river=row[4],
                river_km=row[5],
                downstream=tuple(row[6] or ()),
                travel_time_min=row[7],
                thresholds=tuple(versions.get(row[0], ())),
            )
            for row in conn.execute(
                "SELECT id, family, name, interval_s, river, river_km, downstream, "
                "travel_time_min FROM sensors"
            )
        }

    def load_gateways(self) -> dict[str, frozenset[str]]:
        """Each gateway's sensors: whom a device may report for besides itself."""
        return registry.gateway_sensors(self.conn)

    def snapshot(self, *, window_s: float) -> Snapshot:
        """The service's state as last committed (and the readings its rise fits need)."""
        conn = self.conn
        sensors = self.load_sensors()
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
        open_alerts = {
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
        gauges = {
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
        windows: dict[str, list[tuple[int, float]]] = {}
        for sensor_id, at, value in conn.execute(
            """
            SELECT r.sensor_id, r.time, r.value
            FROM latest_readings l
            JOIN readings r ON r.sensor_id = l.sensor_id AND r.metric = l.metric
                AND r.time > l.time - make_interval(secs => %s) AND r.time <= l.time
            WHERE l.metric = 'water_level'
            ORDER BY r.time
            """,
            [window_s],
        ):
            windows.setdefault(sensor_id, []).append((to_micros(at), value))
        meta = dict(conn.execute("SELECT key, value FROM alert_service_state").fetchall())
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
        )

    def events_after(self, event_id: int) -> list[dict[str, Any]]:
        """Committed alert events after ``event_id`` (to publish what a crash left unsent)."""
        cur = self.conn.cursor(row_factory=psycopg.rows.dict_row)
        rows = cur.execute(
            "SELECT * FROM alert_events WHERE id > %s AND change <> 'acknowledged' ORDER BY id",
            [event_id],
        ).fetchall()
        return [event_json(row) for row in rows]

    # ----------------------------------------------------------------- warning-post commands

    def last_warnings(self) -> dict[str, dict[str, Any]]:
        """The last warning-post command recorded for each gauge."""
        rows = self.conn.execute(
            "SELECT DISTINCT ON (gauge_id) gauge_id, command FROM warning_commands "
            "ORDER BY gauge_id, id DESC"
        ).fetchall()
        return {gauge: command for gauge, command in rows}

    def record_warnings(self, commands: list[tuple[str, dict[str, Any], list[int]]]) -> None:
        """Record warning-post commands (gauge, command, alerts whose changes led to it)
        before they are published, in one statement."""
        rows = [{"gauge_id": g, "command": c, "alert_ids": sorted(set(a))} for g, c, a in commands]
        try:
            self.conn.execute(
                """
                INSERT INTO warning_commands (gauge_id, command, alert_ids)
                SELECT gauge_id, command, alert_ids FROM jsonb_to_recordset(%s::jsonb)
                    AS x(gauge_id text, command jsonb, alert_ids bigint[])
                """,
                [orjson.dumps(rows).decode()],
            )
        except psycopg.OperationalError as error:
            raise LockLostError(f"database connection failed: {error}") from None

    # ------------------------------------------------------------------------------- commit

    def commit(self, outcome: Outcome, *, published_event_id: int) -> list[Transition]:
        """Commit a batch's transitions, rule states, gauge statuses and clock in one
        transaction; returns the transitions stored (with their alert and event ids)."""
        conn = self.conn
        stored: list[Transition] = []
        try:
            with conn.transaction():
                if outcome.transitions:
                    lock_event_order(conn)  # readers see its changes in id order
                for transition in outcome.transitions:
                    if self._write(conn, transition):
                        stored.append(transition)
                self._write_states(conn, outcome)
                conn.execute(
                    """
                    INSERT INTO alert_service_state (key, value, updated_at)
                    VALUES ('clock_us', %s, now()), ('published_event_id', %s, now())
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
                    """,
                    [Jsonb(outcome.clock_us), Jsonb(published_event_id)],
                )
        except psycopg.OperationalError as error:
            raise LockLostError(f"database connection failed: {error}") from None
        return stored

    def _write(self, conn: psycopg.Connection[Any], t: Transition) -> bool:
        target = t.target
        observed = from_micros(t.observed_us)
        if t.change is Change.OPENED:
            row = conn.execute(
                """
                INSERT INTO alerts (sensor_id, rule, level, state, opened_at, updated_at, value,
                                    predicted_level, predicted_at, message, message_en, details)
                VALUES (%s, %s, %s, 'open', %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (sensor_id, rule) WHERE state = 'open' DO NOTHING
                RETURNING id
                """,
                [
                    t.sensor_id, t.rule.value, t.level, observed, observed, target.value,
                    target.predicted_level, _at(target.predicted_at_us), target.message,
                    target.message_en, Jsonb(target.details),
                ],
            ).fetchone()  # fmt: skip
            if row is None:
                return False  # already open: this opening was committed before
        else:
            resolved = t.change is Change.RESOLVED
            row = conn.execute(
                """
                UPDATE alerts SET level = %s, updated_at = %s, value = %s,
                    predicted_level = %s, predicted_at = %s, message = %s, message_en = %s,
                    details = %s,
                    state = CASE WHEN %s THEN 'resolved' ELSE state END,
                    resolved_at = CASE WHEN %s THEN %s ELSE resolved_at END
                WHERE sensor_id = %s AND rule = %s AND state = 'open'
                RETURNING id
                """,
                [
                    t.level, observed, target.value, target.predicted_level,
                    _at(target.predicted_at_us), target.message, target.message_en,
                    Jsonb(target.details), resolved, resolved, observed, t.sensor_id,
                    t.rule.value,
                ],
            ).fetchone()  # fmt: skip
            if row is None:
                return False
        t.alert_id = int(row[0])
        event = conn.execute(
            """
            INSERT INTO alert_events (alert_id, sensor_id, rule, change, level, previous_level,
                                      value, observed_at, predicted_level, predicted_at,
                                      message, message_en, details)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (alert_id, change, observed_at) WHERE change <> 'acknowledged'
                DO NOTHING
            RETURNING id, recorded_at
            """,
            [
                t.alert_id, t.sensor_id, t.rule.value, t.change.value, t.level,
                t.previous_level, target.value, observed, target.predicted_level,
                _at(target.predicted_at_us), target.message, target.message_en,
                Jsonb(target.details),
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
