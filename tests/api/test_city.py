"""City status per kecamatan, the kecamatan layer, latest values with ETags, the catalogue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from api.routes.city import congestion, congestion_category
from pantau.catalogue import CATALOGUE
from pantau.db import store
from pantau.payload import Reading


def _store(conn: psycopg.Connection, *readings: Reading) -> None:
    store.prepare(conn)
    store.store(conn, readings)


def _by_name(body: dict[str, object]) -> dict[str, dict[str, object]]:
    return {k["kecamatan"]: k for k in body["kecamatan"]}  # type: ignore[attr-defined,index]


def test_city_status_from_latest_readings(http: httpx.Client, conn: psycopg.Connection) -> None:
    now = datetime.now(UTC) - timedelta(seconds=30)
    _store(
        conn,
        # Bangil: gauge at Siaga (2.4 to 3.0), one lamp on and working, one on and dark.
        Reading.at(now, "fg-welang-3", "water_level", 2.5),
        Reading.at(now, "sn-bangil-1", "lamp_state", 1.0),
        Reading.at(now, "sn-bangil-1", "lamp_power", 40.0),
        Reading.at(now, "sn-bangil-2", "lamp_state", 1.0),
        Reading.at(now, "sn-bangil-2", "lamp_power", 0.0),
        Reading.at(now, "sn-bangil-1", "pm25", 60.0),  # Tidak Sehat (55.4 to 150.4)
        Reading.at(now, "sn-bangil-2", "pm25", 10.0),
        Reading.at(now, "sn-bangil-2", "pm10", 40.0),
        Reading.at(now, "tc-bangil-1", "occupancy", 0.5),
        Reading.at(now, "tc-bangil-1", "avg_speed", 0.0),
        Reading.at(now, "tc-bangil-2", "occupancy", 0.1),
        Reading.at(now, "tc-bangil-2", "avg_speed", 30.0),
        # Purwosari: a stale Awas reading says nothing about now.
        Reading.at(now - timedelta(hours=3), "fg-welang-1", "water_level", 9.0),
    )
    body = http.get("/city/status").json()
    city = _by_name(body)
    bangil = city["Bangil"]
    flood = bangil["flood"]
    assert {k: v for k, v in flood.items() if k != "by_gauge"} == {  # type: ignore[attr-defined]
        "level": 2, "label": "Siaga", "sensor_id": "fg-welang-3", "source": "latest_water_level",
        "observed_at": flood["observed_at"], "gauges": 1, "no_data": False,  # type: ignore[index]
    }  # fmt: skip
    assert [g["no_data"] for g in flood["by_gauge"]] == [False]  # type: ignore[index]
    assert bangil["lamps"] == {"working_share": 0.5, "on": 2, "working": 1, "off": 0,
                               "reporting": 2}  # fmt: skip
    air = bangil["air"]
    assert air["category"] == "Tidak Sehat" and air["sensor_id"] == "sn-bangil-1"  # type: ignore[index]
    expected = (congestion(0.5, 0.0, "national") + congestion(0.1, 30.0, "town")) / 2
    assert bangil["traffic"]["congestion_index"] == pytest.approx(expected, abs=1e-3)  # type: ignore[index]
    assert bangil["traffic"]["counters"] == 2  # type: ignore[index]
    # Purwosari: a stale Awas reading is no data, never Awas now; it says when it was.
    stale = city["Purwosari"]["flood"]
    assert (stale["level"], stale["no_data"], stale["gauges"]) == (None, True, 0)  # type: ignore[index]
    (gauge,) = stale["by_gauge"]  # type: ignore[index]
    assert (gauge["level"], gauge["no_data_reason"]) == (None, "silent")
    assert datetime.fromisoformat(gauge["last_reading_at"]) == now - timedelta(hours=3)
    # Pohjentrek's gauge never reported.
    assert city["Pohjentrek"]["flood"]["by_gauge"][0]["no_data_reason"] == "never_reported"  # type: ignore[index]
    assert city["Pohjentrek"]["air"] is None

    geo = http.get("/city/status", params={"format": "geojson"})
    assert geo.headers["content-type"].startswith("application/geo+json")
    features = {f["id"]: f for f in geo.json()["features"]}
    assert features["Bangil"]["properties"]["flood"]["label"] == "Siaga"
    assert features["Bangil"]["geometry"]["coordinates"] == [bangil["lon"], bangil["lat"]]


def test_gauge_status_of_the_alert_service_wins(
    http: httpx.Client, conn: psycopg.Connection
) -> None:
    now = datetime.now(UTC)
    _store(conn, Reading.at(now, "fg-welang-3", "water_level", 0.5))
    exists = conn.execute("SELECT to_regclass('gauge_status') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        pytest.skip("no gauge_status table in this schema yet")
    conn.execute(
        "INSERT INTO gauge_status (sensor_id, level, since, observed_at, value) "
        "VALUES ('fg-welang-3', 3, %s, %s, 3.1)",
        [now, now],
    )
    flood = _by_name(http.get("/city/status").json())["Bangil"]["flood"]
    assert flood["label"] == "Awas" and flood["source"] == "gauge_status"  # type: ignore[index]


def _gauge(conn: psycopg.Connection, observed: datetime, updated: datetime) -> None:
    conn.execute(
        "INSERT INTO gauge_status (sensor_id, level, since, observed_at, value, updated_at) "
        "VALUES ('fg-welang-3', 3, %s, %s, 3.1, %s) ON CONFLICT (sensor_id) DO UPDATE SET "
        "observed_at = EXCLUDED.observed_at, updated_at = EXCLUDED.updated_at",
        [observed, observed, updated],
    )


def test_a_stale_gauge_or_a_stopped_alert_service_shows_no_data(
    http: httpx.Client, conn: psycopg.Connection
) -> None:
    now = datetime.now(UTC)
    # Its deadline: 3 intervals of 60 s. A dead gauge's last Awas, four minutes old.
    _store(conn, Reading.at(now - timedelta(minutes=4), "fg-welang-3", "water_level", 3.1))
    _gauge(conn, now - timedelta(minutes=4), now - timedelta(minutes=4))
    for format in ("json", "geojson"):
        body = http.get("/city/status", params={"format": format}).json()
        rows = body.get("kecamatan") or [f["properties"] for f in body["features"]]
        flood = next(r for r in rows if r["kecamatan"] == "Bangil")["flood"]
        assert (flood["level"], flood["label"], flood["no_data"]) == (None, None, True), format
        gauge = flood["by_gauge"][0]
        assert gauge["no_data_reason"] == "silent" and gauge["last_reading_at"] is not None
    # The gauge reports again, but the alert service has stopped: still no level shown.
    _store(conn, Reading.at(now, "fg-welang-3", "water_level", 0.5))
    gauge = _by_name(http.get("/city/status").json())["Bangil"]["flood"]["by_gauge"][0]  # type: ignore[index]
    assert (gauge["level"], gauge["no_data_reason"]) == (None, "not_evaluated")
    assert datetime.fromisoformat(gauge["last_reading_at"]) == now
    # The service evaluates it: current again.
    _gauge(conn, now, now)
    gauge = _by_name(http.get("/city/status").json())["Bangil"]["flood"]["by_gauge"][0]  # type: ignore[index]
    assert (gauge["level"], gauge["label"], gauge["no_data"]) == (3, "Awas", False)


def test_congestion_index_definition() -> None:
    assert congestion(0.0, 0.0, "town") == 0.0  # an empty road at night is free
    assert congestion(0.5, 0.0, "national") == 1.0
    assert congestion(0.25, 30.0, "national") == pytest.approx((0.5 + 0.5) / 2)
    assert [congestion_category(x) for x in (0.1, 0.5, 0.9)] == ["lancar", "padat", "macet"]


def test_kecamatan_layer(http: httpx.Client, mini_city) -> None:  # type: ignore[no-untyped-def]
    response = http.get("/city/kecamatan")
    assert response.headers["content-type"].startswith("application/geo+json")
    features = {f["id"]: f for f in response.json()["features"]}
    assert set(features) == {k.name for k in mini_city.kecamatan}
    bangil = next(k for k in mini_city.kecamatan if k.name == "Bangil")
    assert features["Bangil"]["geometry"]["coordinates"] == [bangil.lon, bangil.lat]
    assert features["Bangil"]["properties"]["sensors"] == 5


def test_latest_values_with_etag_and_304(http: httpx.Client, conn: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    _store(conn, Reading.at(now, "fg-welang-1", "water_level", 1.0))
    first = http.get("/latest", params={"family": "flood_gauge"})
    assert first.status_code == 200
    body = first.json()
    assert body["readings"][0]["unit"] == "m" and body["count"] == 1
    assert "max-age" in first.headers["cache-control"]
    etag = first.headers["etag"]
    again = http.get("/latest", params={"family": "flood_gauge"}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    _store(conn, Reading.at(now + timedelta(seconds=1), "fg-welang-1", "water_level", 1.1))
    changed = http.get("/latest", params={"family": "flood_gauge"}, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["readings"][0]["value"] == 1.1
    assert http.get("/latest", params={"family": "street_node"}).json()["count"] == 0
    assert http.get("/latest", params={"sensor": "nope"}).status_code == 404


def test_sensor_filters_bbox_and_catalogue(month: httpx.Client) -> None:
    inside = month.get("/sensors", params={"bbox": "112.77,-7.61,112.81,-7.59"}).json()
    assert {s["id"] for s in inside} == {
        "fg-welang-3", "tc-bangil-1", "tc-bangil-2", "sn-bangil-1", "sn-bangil-2"
    }  # fmt: skip
    assert month.get("/sensors", params={"bbox": "0,0,1,1"}).json() == []
    bangil = month.get("/sensors", params={"kecamatan": "BANGIL", "family": "traffic_counter"})
    assert [s["id"] for s in bangil.json()] == ["tc-bangil-1", "tc-bangil-2"]
    catalogue = month.get("/catalogue").json()
    families = {f["family"]: f for f in catalogue["families"]}
    assert set(families) == {f.value for f in CATALOGUE}
    level = next(m for m in families["flood_gauge"]["metrics"] if m["name"] == "water_level")
    assert level["unit"] == "m" and level["description"]
