"""Suspect readings over real HTTP: what quality control recorded, for operators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

PROBLEM = "application/problem+json"


@pytest.fixture
def op(http: httpx.Client, operator_key: str) -> httpx.Client:
    http.headers["X-API-Key"] = operator_key
    return http


def _flag(conn: psycopg.Connection, sensor: str, at: datetime, value: float, reason: str) -> None:
    conn.execute(
        "INSERT INTO reading_flags (sensor_id, metric, time, value, reason, reference_time, "
        "reference_value) VALUES (%s, 'water_level', %s, %s, %s, %s, 1.0)",
        [sensor, at, value, reason, None if reason == "range" else at - timedelta(minutes=1)],
    )


def test_suspect_readings_newest_first_with_counts_filters_and_pages(
    op: httpx.Client, conn: psycopg.Connection
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    _flag(conn, "fg-welang-1", now - timedelta(minutes=3), 3.3, "spike")
    _flag(conn, "fg-welang-2", now - timedelta(minutes=3), 3.6, "gradient")
    _flag(conn, "fg-welang-3", now - timedelta(minutes=2), -0.3, "range")
    _flag(conn, "fg-welang-1", now - timedelta(days=3), 9.0, "spike")  # outside the default day

    body = op.get("/operator/suspect-readings").json()
    assert [(i["sensor_id"], i["reason"]) for i in body["items"]] == [
        ("fg-welang-3", "range"),
        ("fg-welang-2", "gradient"),
        ("fg-welang-1", "spike"),
    ]
    assert {c["reason"]: c["readings"] for c in body["counts"]} == {
        "gradient": 1,
        "range": 1,
        "spike": 1,
    }
    assert body["items"][0]["reference_time"] is None and body["items"][0]["value"] == -0.3
    spikes = op.get("/operator/suspect-readings", params={"reason": "spike"}).json()["items"]
    assert [i["sensor_id"] for i in spikes] == ["fg-welang-1"]
    week = op.get(
        "/operator/suspect-readings",
        params={"sensor": "fg-welang-1", "since": (now - timedelta(days=7)).isoformat()},
    ).json()
    assert [i["value"] for i in week["items"]] == [3.3, 9.0]
    # Pages of one: rows at the same time are neither skipped nor repeated.
    seen, url = [], "/operator/suspect-readings?limit=1"
    while url:
        page = op.get(url).json()
        seen += [(i["sensor_id"], i["time"]) for i in page["items"]]
        url = page["next"]
    assert len(seen) == 3 == len(set(seen))


def test_bad_suspect_reading_queries_are_problems(op: httpx.Client) -> None:
    for params, status in [
        ({"reason": "weird"}, 422),
        ({"since": "yesterday"}, 400),
        ({"before": "not a cursor"}, 400),
        ({"sensor": "x' OR 1=1"}, 422),
        ({"limit": 0}, 422),
    ]:
        response = op.get("/operator/suspect-readings", params=params)
        assert response.status_code == status, (params, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
