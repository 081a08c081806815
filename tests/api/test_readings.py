"""Readings over real HTTP: raw and rolled up, JSON and CSV, with clear errors."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from pantau.db import store
from pantau.db.migrate import refresh_rollups
from pantau.payload import Reading


def _seed(conn: psycopg.Connection) -> datetime:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    store.prepare(conn)
    store.store(
        conn,
        [
            Reading.at(
                start + timedelta(seconds=20 * i), "tc-bangil-1", "count_motorcycle", float(i)
            )
            for i in range(6)
        ],
    )
    return start


def test_raw_readings_as_json(http: httpx.Client, conn: psycopg.Connection) -> None:
    start = _seed(conn)
    body = http.get(
        "/sensors/tc-bangil-1/readings",
        params={"metric": "count_motorcycle", "start": start.isoformat()},
    ).json()
    assert body["unit"] == "count"
    assert [r["value"] for r in body["readings"]] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_minute_rollup_as_csv(http: httpx.Client, conn: psycopg.Connection, city_db: str) -> None:
    start = _seed(conn)
    refresh_rollups(city_db)
    response = http.get(
        "/sensors/tc-bangil-1/readings",
        params={
            "metric": "count_motorcycle",
            "start": start.isoformat(),
            "resolution": "1m",
            "format": "csv",
        },
    )
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    # Three readings per minute: 0,1,2 then 3,4,5.
    assert [(float(r["avg"]), int(r["count"]), float(r["last"])) for r in rows] == [
        (1.0, 3, 2.0),
        (4.0, 3, 5.0),
    ]


def test_bad_requests_get_clear_errors(http: httpx.Client) -> None:
    wrong_metric = http.get("/sensors/tc-bangil-1/readings", params={"metric": "water_level"})
    assert wrong_metric.status_code == 422
    assert "water_level" in wrong_metric.json()["detail"]
    assert http.get("/sensors/nope/readings", params={"metric": "x"}).status_code == 404
    bad_time = http.get(
        "/sensors/tc-bangil-1/readings", params={"metric": "avg_speed", "start": "yesterday"}
    )
    assert bad_time.status_code == 400
    assert "start is not a time" in bad_time.json()["detail"]
    reversed_range = http.get(
        "/sensors/tc-bangil-1/readings",
        params={
            "metric": "avg_speed",
            "start": "2026-01-02T00:00:00Z",
            "end": "2026-01-01T00:00:00Z",
        },
    )
    assert reversed_range.status_code == 400
    assert reversed_range.headers["content-type"] == "application/problem+json"
