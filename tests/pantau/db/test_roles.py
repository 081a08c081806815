"""The logins a deployment gives its services: each does what its service needs, no more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from pantau.catalogue import Family
from pantau.db import registry, store
from pantau.db.migrate import Mode, NotOwnerError, maintain, set_login_password
from pantau.db.store import RejectedPayload
from pantau.payload import Reading, Reason, Rejection
from pantau.settings import StorageSettings
from tests.fixtures.api import api_settings, serve
from tests.fixtures.database import as_login as _as
from tests.fixtures.operators import AddAlert


def test_api_login_acknowledges_and_replays_as_an_operator(
    city_db: str, operator_key: str, add_alert: AddAlert
) -> None:
    set_login_password(city_db, "pantau_api", "api-secret")
    alert_id = add_alert(levels=(1, 3))
    with (
        serve(api_settings(_as(city_db, "pantau_api"))) as base,
        httpx.Client(base_url=base, timeout=10, headers={"X-API-Key": operator_key}) as http,
    ):
        acknowledged = http.post(f"/alerts/{alert_id}/ack", json={"note": "dicek"})
        assert acknowledged.status_code == 200, acknowledged.text
        assert acknowledged.json()["acknowledged_by"] == "tester"
        assigned = http.post(f"/alerts/{alert_id}/assign", json={"assignee": "Siti"})
        assert assigned.status_code == 200, assigned.text
        assert http.post(f"/alerts/{alert_id}/comments", json={"text": "ok"}).status_code == 201
        history = http.get(f"/alerts/{alert_id}/history").json()["entries"]
        assert [e["kind"] for e in history if e["source"] == "operator"] == [
            "acknowledged",
            "assigned",
            "commented",
        ]
        thresholds = http.post(
            "/operator/sensors/fg-welang-1/thresholds",
            json={"waspada": 1.4, "siaga": 1.9, "awas": 2.4, "valid_from": "2026-02-01T00:00:00Z"},
        )
        assert thresholds.status_code in {200, 201}, thresholds.text
        assert http.get("/operator/rejected").status_code == 200


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM readings",
        "UPDATE alerts SET level = 1",
        "DELETE FROM alert_events",
        "INSERT INTO schema_migrations (version, name) VALUES (99, 'x')",
        "DROP TABLE sensors",
        "UPDATE pantau_private.api_keys SET revoked_at = NULL",
        "UPDATE pantau_private.alert_actions SET note = 'rewritten'",
        "DELETE FROM pantau_private.alert_actions",
        "TRUNCATE pantau_private.alert_actions",
        # The time of an entry is the database's: not even a new row may be backdated.
        "INSERT INTO pantau_private.alert_actions (alert_id, action, operator, key_name, at) "
        "VALUES (1, 'commented', 'x', 'x', '2020-01-01')",
        "DELETE FROM warning_commands",
    ],
)
def test_api_login_cannot_rewrite_history(city_db: str, statement: str) -> None:
    set_login_password(city_db, "pantau_api", "api-secret")
    with (
        psycopg.connect(_as(city_db, "pantau_api"), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_reader_login_reads_but_cannot_acknowledge(
    city_db: str, operator_key: str, add_alert: AddAlert
) -> None:
    set_login_password(city_db, "pantau_reader", "reader-secret")
    alert_id = add_alert(levels=(2,))
    with (
        serve(api_settings(_as(city_db, "pantau_reader"))) as base,
        httpx.Client(base_url=base, timeout=10, headers={"X-API-Key": operator_key}) as http,
    ):
        assert http.get("/alerts").json()["items"][0]["id"] == alert_id
        refused = http.post(f"/alerts/{alert_id}/ack")
        # A read-only deployment answers with a problem, never a server error.
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    with psycopg.connect(city_db) as conn:
        row = conn.execute(
            "SELECT acknowledged_at FROM alerts WHERE id = %s", [alert_id]
        ).fetchone()
    assert row == (None,)


def test_a_login_without_password_cannot_log_in(city_db: str) -> None:
    set_login_password(city_db, "pantau_api", None)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_as(city_db, "pantau_api"), connect_timeout=5).close()
    set_login_password(city_db, "pantau_api", "api-secret")
    psycopg.connect(_as(city_db, "pantau_api"), connect_timeout=5).close()


def test_api_login_writes_readings_through_the_write_path(city_db: str) -> None:
    """What a replay does: the staged COPY and the idempotent insert, in either storage mode."""
    set_login_password(city_db, "pantau_api", "api-secret")
    reading = Reading.at(
        datetime.now(UTC).replace(microsecond=0), "fg-welang-1", "water_level", 1.2
    )
    with psycopg.connect(_as(city_db, "pantau_api"), autocommit=True) as conn:
        store.prepare(conn)
        assert store.store(conn, [reading]).inserted == 1
        assert store.store(conn, [reading]).inserted == 0


# ------------------------------------------------------------------------- ingest and alerts

INGEST_CANNOT = [
    "INSERT INTO alerts (sensor_id, rule, level, state, opened_at, updated_at, message, "
    "message_en) VALUES ('fg-welang-1', 'flood_level', 3, 'open', now(), now(), 'x', 'x')",
    "INSERT INTO alert_events (alert_id, sensor_id, rule, change, level, observed_at, message, "
    "message_en) VALUES (1, 'fg-welang-1', 'flood_level', 'opened', 3, now(), 'x', 'x')",
    "UPDATE readings SET value = 0",
    "DELETE FROM readings",
    "DELETE FROM rejected_payloads",
    "UPDATE sensors SET family = 'street_node'",
    "INSERT INTO gateway_sensors (gateway_id, sensor_id) VALUES ('gw-bangil', 'fg-welang-1')",
    "DELETE FROM flood_thresholds",
    "DROP TABLE readings",
    "TRUNCATE latest_readings",
    "SELECT * FROM pantau_private.api_keys",
]
ALERTS_CANNOT = [
    "INSERT INTO readings (time, sensor_id, metric, value) "
    "VALUES (now(), 'fg-welang-1', 'water_level', 4.3)",
    "INSERT INTO latest_readings (sensor_id, metric, time, value) "
    "VALUES ('fg-welang-1', 'water_level', now(), 4.3)",
    "UPDATE sensors SET name = 'x'",
    "INSERT INTO flood_thresholds (sensor_id, waspada, siaga, awas) "
    "VALUES ('fg-welang-1', 9, 10, 11)",
    "INSERT INTO gateway_sensors (gateway_id, sensor_id) VALUES ('gw-bangil', 'fg-welang-1')",
    "DELETE FROM alerts",
    "DELETE FROM alert_events",
    "UPDATE alert_events SET level = 1",
    "UPDATE rejected_payloads SET reason = 'x'",
    "DROP TABLE alerts",
]


@pytest.mark.parametrize(
    ("login", "statement"),
    [("pantau_ingest", s) for s in INGEST_CANNOT] + [("pantau_alerts", s) for s in ALERTS_CANNOT],
)
def test_service_logins_cannot_write_what_is_not_their_service_s(
    city_db: str, login: str, statement: str
) -> None:
    """Ingest: no alerts, registry or rewriting history; alerts: no readings or registry."""
    set_login_password(city_db, login, "service-secret")
    with (
        psycopg.connect(_as(city_db, login), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_ingest_login_runs_the_write_path_and_reads_the_registry(city_db: str) -> None:
    set_login_password(city_db, "pantau_ingest", "ingest-secret")
    now = datetime.now(UTC).replace(microsecond=0)
    reading = Reading.at(now, "fg-welang-1", "water_level", 1.2)
    refused = RejectedPayload(
        topic="pantau/up/sn-bangil-1",
        payload=b"{}",
        received_at=now,
        rejection=Rejection(Reason.FOREIGN_SENSOR, "sn-bangil-1 may not report for fg-welang-1"),
    )
    with psycopg.connect(_as(city_db, "pantau_ingest"), autocommit=True) as conn:
        known = registry.snapshot(conn)
        assert known.families["fg-welang-1"] is Family.FLOOD_GAUGE
        assert known.gateways["gw-bangil"] >= {"fg-welang-3"}
        store.prepare(conn)
        assert store.store(conn, [reading], [refused]).inserted == 1
        # A redelivery: nothing new, the rejection counted again (ON CONFLICT DO UPDATE).
        assert store.store(conn, [reading], [refused]).inserted == 0
        row = conn.execute("SELECT times_seen FROM rejected_payloads").fetchone()
        latest = conn.execute("SELECT value FROM latest_readings").fetchone()
    assert row == (2,)
    assert latest == (1.2,)


def test_ingest_login_keeps_the_storage_in_its_mode(
    city_db: str, db_mode: Mode, storage: StorageSettings
) -> None:
    """Plain PostgreSQL: rollups and partitions; TimescaleDB: the catch-up is the owner's."""
    set_login_password(city_db, "pantau_ingest", "ingest-secret")
    url = _as(city_db, "pantau_ingest")
    if db_mode is Mode.TIMESCALEDB:
        with pytest.raises(NotOwnerError, match="needs their owner"):
            maintain(url, storage)
        return
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        store.prepare(conn)
        store.store(conn, [Reading.at(now - timedelta(hours=2), "fg-welang-1", "water_level", 1)])
    # A day later: rollups refreshed, a partition made ahead; the oldest one is kept, for this
    # login gets no shorter retention than migrate recorded, whatever its clock says.
    done = maintain(url, storage, now=now + timedelta(days=1))
    assert done is not None
    assert done["rollup_rows"] > 0
    assert done["partitions_created"] == 1 and done["partitions_dropped"] == 0
    with psycopg.connect(city_db) as conn:
        assert conn.execute("SELECT count(*) FROM readings_1m_mat").fetchone() == (1,)
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass "
            "UNION SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'readings'::regclass"
        ).fetchall()
    assert len(owners) == 1, owners  # every partition is the owner's, as `readings` is


def test_ingest_login_cannot_shorten_retention(
    city_db: str, db_mode: Mode, storage: StorageSettings
) -> None:
    """Asked to drop everything, the partition function keeps what migrate's retention keeps."""
    if db_mode is not Mode.POSTGRES:
        pytest.skip("TimescaleDB: retention is a policy of the owner's, ingest drops nothing")
    set_login_password(city_db, "pantau_ingest", "ingest-secret")
    now = datetime.now(UTC)
    with psycopg.connect(_as(city_db, "pantau_ingest"), autocommit=True) as conn:
        store.prepare(conn)
        store.store(conn, [Reading.at(now - timedelta(days=1), "fg-welang-1", "water_level", 1)])
        dropped = conn.execute("SELECT pantau_drop_readings_before(now() + interval '1 year')")
        assert dropped.fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (1,)
        for statement in ("SELECT pantau_create_readings_partition(now(), now())",):
            with pytest.raises(psycopg.errors.RaiseException):
                conn.execute(statement)
    # The owner may ask for it (a test's clock, an operator's manual retention).
    with psycopg.connect(city_db, autocommit=True) as conn:
        dropped = conn.execute("SELECT pantau_drop_readings_before(now() + interval '1 year')")
        assert (dropped.fetchone() or (0,))[0] > 0
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)


def test_alerts_login_reads_what_the_service_rebuilds_from(city_db: str) -> None:
    set_login_password(city_db, "pantau_alerts", "alerts-secret")
    with psycopg.connect(_as(city_db, "pantau_alerts"), autocommit=True) as conn:
        assert registry.gateway_sensors(conn)["gw-purwosari"] == {"fg-welang-1"}
        conn.execute("SELECT pg_advisory_lock(1), pg_advisory_unlock(1)")
        opened = conn.execute(
            "INSERT INTO alerts (sensor_id, rule, level, state, opened_at, updated_at, message, "
            "message_en) VALUES ('fg-welang-1', 'flood_level', 3, 'open', now(), now(), 'x', "
            "'x') RETURNING id"
        ).fetchone()
        assert opened is not None
        conn.execute(
            "INSERT INTO alert_events (alert_id, sensor_id, rule, change, level, observed_at, "
            "message, message_en) VALUES (%s, 'fg-welang-1', 'flood_level', 'opened', 3, now(), "
            "'x', 'x')",
            [opened[0]],
        )
        conn.execute("UPDATE alerts SET state = 'resolved', resolved_at = now()")
        conn.execute(
            "INSERT INTO warning_commands (gauge_id, command, alert_ids) "
            "VALUES ('fg-welang-1', '{\"light\": \"off\"}', ARRAY[%s]::bigint[])",
            [opened[0]],
        )
        assert conn.execute("SELECT gauge_id FROM warning_commands").fetchall() == [
            ("fg-welang-1",)
        ]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE pantau_private.alert_actions SET note = 'rewritten'",
        "DELETE FROM pantau_private.alert_actions",
        "TRUNCATE pantau_private.alert_actions",
        "UPDATE alert_events SET message = 'rewritten'",
        "UPDATE alerts SET acknowledged_by = 'someone else'",
        "UPDATE alerts SET acknowledged_at = NULL",
    ],
)
def test_not_even_the_owner_rewrites_the_trail(
    conn: psycopg.Connection, add_alert: AddAlert, statement: str
) -> None:
    alert_id = add_alert(levels=(1,))
    conn.execute("UPDATE alerts SET acknowledged_at = now(), acknowledged_by = 'tester'")
    conn.execute(
        "INSERT INTO pantau_private.alert_actions (alert_id, action, operator, key_name, note) "
        "VALUES (%s, 'commented', 'tester', 'tester', 'asli')",
        [alert_id],
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute(statement)
    assert conn.execute("SELECT note FROM pantau_private.alert_actions").fetchall() == [("asli",)]
