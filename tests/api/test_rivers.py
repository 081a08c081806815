"""River lines and the gauge view over real HTTP: lines through the gauges downstream, and a
gauge's day during a flood with the alert service's forecast."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import psycopg
import pytest

from pantau.city import City, load_city
from pantau.db import registry
from pantau.settings import DEFAULT_CITY_FILE
from tests.fixtures.api import api_settings, serve
from tests.fixtures.flood import Flood


def test_each_river_is_a_line_through_its_gauges_downstream(
    http: httpx.Client, mini_city: City
) -> None:
    response = http.get("/city/rivers")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/geo+json")
    (welang,) = response.json()["features"]
    gauges = sorted(mini_city.of_family(mini_city.sensors[0].family), key=lambda s: s.river_km)
    assert welang["id"] == "Welang"
    assert welang["geometry"] == {
        "type": "LineString",
        "coordinates": [[g.lon, g.lat] for g in gauges],
    }
    assert welang["properties"]["gauges"] == ["fg-welang-1", "fg-welang-2", "fg-welang-3"]
    assert welang["properties"]["river_km"] == [0, 12, 20]
    assert welang["properties"]["length_km"] == 20


def test_every_river_of_the_regency(db_url: str) -> None:
    city = load_city(DEFAULT_CITY_FILE)
    with psycopg.connect(db_url, autocommit=True) as conn:
        registry.load_city(conn, city)
    with serve(api_settings(db_url)) as base:
        features = httpx.get(f"{base}/city/rivers").json()["features"]
    by_river: dict[str, list[str]] = {}
    for sensor in sorted(
        (s for s in city.sensors if s.river), key=lambda s: (s.river_km or 0, s.id)
    ):
        by_river.setdefault(sensor.river or "", []).append(sensor.id)
    assert {f["id"]: f["properties"]["gauges"] for f in features} == by_river
    kinds = {f["id"]: f["geometry"]["type"] for f in features}
    assert kinds.pop("Gembong") == "Point", "a single gauge is no line"
    assert set(kinds.values()) == {"LineString"}


def test_a_gauge_view_during_a_flood(flood_db: Flood) -> None:
    with serve(api_settings(flood_db.url)) as base:
        response = httpx.get(f"{base}/gauges/{flood_db.rising}", timeout=10)
        assert response.status_code == 200, response.text
        view = response.json()
    assert view["resolution"] == "5m"
    assert view["thresholds"] == {"waspada": 1.8, "siaga": 2.4, "awas": 3.0}
    levels = view["water_level"]["points"]
    assert 280 <= len(levels) <= 290, "a day of five-minute buckets"
    assert levels[-1]["max"] >= view["thresholds"]["waspada"]
    assert sum(p["mm"] for p in view["rainfall"]["points"]) > 10, "the storm's rain"
    assert not view["stale"]
    status = view["status"]
    assert status["level"] == 1 and status["rate_m_per_h"] > 0
    assert status["next_level"] == 2 and status["next_level_label"] == "Siaga"
    # The dashed line: from the fitted level now to Siaga at the predicted time.
    start, crossing = view["forecast"]
    assert crossing["value"] == pytest.approx(2.4)
    assert crossing["time"] == status["next_level_at"]
    assert start["time"] == status["observed_at"]
    hours = (_at(crossing["time"]) - _at(start["time"])) / timedelta(hours=1)
    assert crossing["value"] - start["value"] == pytest.approx(status["rate_m_per_h"] * hours)
    assert abs(start["value"] - status["value"]) < 0.2, "the line starts near the reading"
    # The fit reaches back over its window to the same line.
    fit_from, fit_to = view["fit"]
    assert fit_to == start
    assert _at(fit_to["time"]) - _at(fit_from["time"]) == timedelta(minutes=30)
    marks = [(m["rule"], m["change"], m["level_label"]) for m in view["alerts"]]
    assert ("flood_level", "opened", "Waspada") in marks
    # Warned from upstream before its own level rose, and rising fast.
    assert next(r for r, change, _ in marks if change == "opened") == "upstream"
    assert "rising_fast" in {r for r, _, _ in marks}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_the_gauge_view_is_for_flood_gauges(http: httpx.Client) -> None:
    for path, status in [
        ("/gauges/tc-bangil-1", 422),
        ("/gauges/no-such-gauge", 404),
        ("/gauges/fg-welang-1?hours=0", 422),
        ("/gauges/fg-welang-1?hours=169", 422),
    ]:
        response = http.get(path)
        assert response.status_code == status, path
        assert response.headers["content-type"].startswith("application/problem+json")
    quiet = http.get("/gauges/fg-welang-1", params={"hours": 6}).json()
    assert quiet["resolution"] == "1m"
    assert quiet["water_level"]["points"] == [] and quiet["stale"]
    assert quiet["status"] is None and quiet["forecast"] == [] and quiet["fit"] == []
