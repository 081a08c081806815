"""The logins a deployment gives its services: the API's does what operators need, no more."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from pantau.db import store
from pantau.db.migrate import set_login_password
from pantau.payload import Reading
from tests.fixtures.api import api_settings, serve
from tests.fixtures.operators import AddAlert


def _as(url: str, login: str) -> str:
    """The same database, logged in as ``login`` (the test server trusts local logins)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{login}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


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
