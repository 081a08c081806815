"""Sensors over real HTTP: JSON, GeoJSON, latest values and flood levels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from pantau.db import store
from pantau.db.migrate import LATEST_VERSION
from pantau.payload import Reading


def _store(conn: psycopg.Connection, *readings: Reading) -> None:
    store.prepare(conn)
    store.store(conn, readings)


def test_health_reports_database_and_schema(http: httpx.Client) -> None:
    body = http.get("/health").json()
    assert body["status"] == "ok"
    assert body["schema_version"] == LATEST_VERSION
    assert body["mode"] in {"postgres", "timescaledb"}


def test_sensors_geojson_has_every_sensor_with_lon_lat_order(http: httpx.Client, mini_city) -> None:  # type: ignore[no-untyped-def]
    response = http.get("/sensors", params={"format": "geojson"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/geo+json")
    collection = response.json()
    assert collection["type"] == "FeatureCollection"
    features = {f["id"]: f for f in collection["features"]}
    assert set(features) == {s.id for s in mini_city.sensors}
    gauge = mini_city.sensor("fg-welang-1")
    assert features["fg-welang-1"]["geometry"]["coordinates"] == [gauge.lon, gauge.lat]


def test_flood_level_follows_latest_water_level(
    http: httpx.Client, conn: psycopg.Connection
) -> None:
    now = datetime.now(UTC)
    # fg-welang-1: waspada 1.5, siaga 2.0, awas 2.5 (tests/data/mini-city.yaml)
    _store(
        conn,
        Reading.at(now - timedelta(minutes=2), "fg-welang-1", "water_level", 1.0),
        Reading.at(now - timedelta(minutes=1), "fg-welang-1", "water_level", 2.2),
    )
    sensor = http.get("/sensors/fg-welang-1").json()
    assert sensor["latest"]["water_level"]["value"] == 2.2
    assert sensor["flood_level"] == "Siaga"
    assert sensor["thresholds"] == {"waspada": 1.5, "siaga": 2.0, "awas": 2.5}
    # A gauge silent past its offline deadline (3 intervals of 60 s) has no level now.
    _store(conn, Reading.at(now - timedelta(minutes=10), "fg-welang-2", "water_level", 2.5))
    silent = http.get("/sensors/fg-welang-2").json()
    assert silent["latest"]["water_level"]["value"] == 2.5 and "flood_level" not in silent
    listed = {s["id"]: s for s in http.get("/sensors", params={"family": "flood_gauge"}).json()}
    assert listed["fg-welang-1"]["flood_level"] == "Siaga"
    assert "flood_level" not in listed["fg-welang-2"]


def test_filters_and_unknown_sensor(http: httpx.Client) -> None:
    gauges = http.get("/sensors", params={"family": "flood_gauge"}).json()
    assert {s["family"] for s in gauges} == {"flood_gauge"}
    assert len(gauges) == 3
    assert http.get("/sensors", params={"family": "submarine"}).status_code == 422
    missing = http.get("/sensors/no-such-sensor")
    assert missing.status_code == 404
    assert "no-such-sensor" in missing.json()["detail"]
