"""Operator routes over real HTTP: sensors, thresholds, rejected payloads and their replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from pantau.db import store
from pantau.payload import Reason, decode

PROBLEM = "application/problem+json"
NEW_GAUGE: dict[str, Any] = {
    "id": "fg-welang-9",
    "family": "flood_gauge",
    "name": "Pos Duga Air Welang Baru",
    "kecamatan": "Bangil",
    "lat": -7.61,
    "lon": 112.81,
    "interval_s": 60,
    "river": "Welang",
    "river_km": 24,
    "thresholds": {"waspada": 1.9, "siaga": 2.5, "awas": 3.1},
}


@pytest.fixture
def op(http: httpx.Client, operator_key: str) -> httpx.Client:
    http.headers["X-API-Key"] = operator_key
    return http


def test_every_operator_route_needs_a_key(http: httpx.Client) -> None:
    for method, path in [
        ("PUT", "/operator/sensors/fg-welang-9"),
        ("GET", "/operator/sensors/fg-welang-1/thresholds"),
        ("POST", "/operator/sensors/fg-welang-1/thresholds"),
        ("GET", "/operator/rejected"),
        ("GET", "/operator/rejected/1"),
        ("POST", "/operator/rejected/1/replay"),
        ("GET", "/operator/suspect-readings"),
    ]:
        response = http.request(method, path, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)


def test_register_then_update_a_sensor(op: httpx.Client) -> None:
    created = op.put("/operator/sensors/fg-welang-9", json=NEW_GAUGE)
    assert created.status_code == 201, created.text
    assert created.json()["created"] is True
    # Readers see it at once.
    assert op.get("/sensors/fg-welang-9").json()["kecamatan"] == "Bangil"
    renamed = op.put("/operator/sensors/fg-welang-9", json={**NEW_GAUGE, "name": "Pos Baru"})
    assert renamed.status_code == 200
    assert renamed.json()["sensor"]["name"] == "Pos Baru"
    assert renamed.json()["thresholds_changed"] is False
    # Its measuring range and the river's fastest change, for quality control.
    limits = {"range_min_m": 0.0, "range_max_m": 6.0, "max_rate_m_per_h": 4.0}
    limited = op.put("/operator/sensors/fg-welang-9", json={**NEW_GAUGE, "quality": limits})
    assert limited.json()["sensor"]["quality"] == limits


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"id": "fg-other"}, 422),  # not the id of the path
        ({"kecamatan": "Atlantis"}, 422),
        ({"thresholds": None}, 422),  # a gauge needs thresholds
        ({"thresholds": {"waspada": 3, "siaga": 2, "awas": 1}}, 422),
        ({"family": "submarine"}, 422),
        ({"downstream": ["no-such-gauge"]}, 422),
        ({"quality": {"range_min_m": 5, "range_max_m": 1}}, 422),
        ({"family": "street_node", "thresholds": None, "river": None, "quality": {}}, 422),
    ],
)
def test_bad_sensors_are_refused(op: httpx.Client, change: dict[str, Any], status: int) -> None:
    response = op.put("/operator/sensors/fg-welang-9", json={**NEW_GAUGE, **change})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert op.get("/sensors/fg-welang-9").status_code == 404


def test_threshold_versions(op: httpx.Client) -> None:
    path = "/operator/sensors/fg-welang-1/thresholds"
    before = op.get(path).json()["versions"]
    assert len(before) == 1
    added = op.post(path, json={"waspada": 1.4, "siaga": 1.9, "awas": 2.4})
    assert added.status_code == 201, added.text
    versions = added.json()["versions"]
    assert len(versions) == 2
    assert versions[-1]["awas"] == 2.4
    assert op.get("/sensors/fg-welang-1").json()["thresholds"]["awas"] == 2.4
    again = op.post(path, json={**versions[-1]})
    assert again.status_code == 409
    assert op.post(path, json={"waspada": 2, "siaga": 1, "awas": 3}).status_code == 422
    # Without an offset, a time is WIB (as everywhere in the API).
    past = op.post(
        path, json={"waspada": 1, "siaga": 2, "awas": 3, "valid_from": "2026-01-01T00:00:00"}
    )
    assert past.status_code == 201
    assert past.json()["versions"][0]["valid_from"] == "2025-12-31T17:00:00Z"
    good = {"waspada": 1, "siaga": 2, "awas": 3}
    not_gauge = op.post("/operator/sensors/tc-bangil-1/thresholds", json=good)
    assert not_gauge.status_code == 422
    assert "only flood gauges" in not_gauge.json()["detail"]
    assert op.post("/operator/sensors/fg-nowhere/thresholds", json=good).status_code == 404


def _reject(conn: psycopg.Connection, topic: str, payload: bytes) -> None:
    """Decode as ingest does against the current registry and store what it refuses."""
    families = {r[0]: r[1] for r in conn.execute("SELECT id, family FROM sensors").fetchall()}
    now = datetime.now(UTC)
    decoded = decode(payload, topic=topic, topic_root="pantau", sensors=families, received_at=now)
    store.prepare(conn)
    store.store(
        conn,
        decoded.readings,
        [store.RejectedPayload(topic, payload, now, r) for r in decoded.rejections],
    )


def test_rejected_listing_and_replay_after_fixing_the_registry(
    op: httpx.Client, conn: psycopg.Connection
) -> None:
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    unknown = json.dumps({"ts": ts, "values": {"water_level": 2.05}}).encode()
    later = (datetime.now(UTC) - timedelta(minutes=4)).isoformat()
    mixed = json.dumps(
        [{"ts": later, "values": {"water_level": 1.95}}, {"ts": later, "values": {"rain": 3}}]
    ).encode()
    _reject(conn, "pantau/up/fg-welang-9", unknown)
    _reject(conn, "pantau/up/fg-welang-9", unknown)  # seen twice
    _reject(conn, "pantau/up/fg-welang-1", b"{not json")
    page = op.get("/operator/rejected").json()
    counts = {c["reason"]: (c["payloads"], c["times_seen"]) for c in page["counts"]}
    assert counts == {"unknown_sensor": (1, 2), "malformed_json": (1, 1)}
    only = op.get("/operator/rejected", params={"reason": "unknown_sensor"}).json()["items"]
    assert len(only) == 1
    assert only[0]["payload_preview"] == unknown.decode()
    rejected_id = only[0]["id"]
    whole = op.get(f"/operator/rejected/{rejected_id}").json()
    assert whole["payload_base64"]

    still = op.post(f"/operator/rejected/{rejected_id}/replay")
    assert still.json()["outcome"] == "still_rejected"
    assert still.json()["rejections"][0]["reason"] == Reason.UNKNOWN_SENSOR

    assert op.put("/operator/sensors/fg-welang-9", json=NEW_GAUGE).status_code == 201
    replayed = op.post(f"/operator/rejected/{rejected_id}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {"outcome": "stored", "readings": 1, "inserted": 1, "rejections": []}
    value = conn.execute(
        "SELECT value FROM readings WHERE sensor_id = 'fg-welang-9' AND metric = 'water_level'"
    ).fetchall()
    assert value == [(2.05,)]
    assert op.get(f"/operator/rejected/{rejected_id}").status_code == 404
    assert op.post(f"/operator/rejected/{rejected_id}/replay").status_code == 404

    # Part of a payload decodes now, part still fails: the failing part stays recorded.
    conn.execute("DELETE FROM sensors WHERE id = 'fg-welang-9'")
    _reject(conn, "pantau/up/fg-welang-9", mixed)
    op.put("/operator/sensors/fg-welang-9", json=NEW_GAUGE)
    mixed_id = op.get("/operator/rejected", params={"reason": "unknown_sensor"}).json()["items"][0][
        "id"
    ]
    partly = op.post(f"/operator/rejected/{mixed_id}/replay").json()
    assert partly["outcome"] == "partly_stored"
    assert partly["inserted"] == 1
    assert [r["reason"] for r in partly["rejections"]] == ["unknown_metric"]
    left = op.get("/operator/rejected", params={"reason": "unknown_metric"}).json()["items"]
    assert len(left) == 1


def test_rejected_filters_are_checked(op: httpx.Client) -> None:
    assert op.get("/operator/rejected", params={"reason": "gremlins"}).status_code == 422
    assert op.get("/operator/rejected", params={"since": "not-a-time"}).status_code == 400
    assert op.get("/operator/rejected/0").status_code == 422
