"""History over a simulated month of the mini city: pages, buckets, WIB days, time zones, CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from api.history.export import export_session, set_local
from api.history.query import resolve
from api.history.sql import export_sql
from api.registry import load_registry
from pantau.catalogue import Family

WIB = ZoneInfo("Asia/Jakarta")


def _walk(client: httpx.Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of a query, following `next` links; checks the cut is always announced."""
    rows: list[dict[str, Any]] = []
    page = client.get("/readings", params=params)
    while True:
        assert page.status_code == 200, page.text
        body = page.json()
        rows += body["readings"]
        assert body["count"] == len(body["readings"])
        if not body["truncated"]:
            assert body["next"] is None
            return rows
        assert body["count"] == int(params["limit"])
        assert page.headers["link"] == f'<{body["next"]}>; rel="next"'
        page = client.get(body["next"])


def _raw(url: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return conn.execute(query, args).fetchall()  # type: ignore[arg-type]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_cursor_pages_cover_a_range_exactly_once(
    month: httpx.Client, month_db: str, order: str
) -> None:
    end = datetime.now(UTC) - timedelta(days=3)
    start = end - timedelta(hours=5)
    rows = _walk(
        month,
        {"family": "flood_gauge", "metric": "water_level", "start": start.isoformat(),
         "end": end.isoformat(), "limit": 97, "order": order},
    )  # fmt: skip
    expected = _raw(
        month_db,
        "SELECT time, sensor_id, value FROM readings WHERE metric = 'water_level' "
        "AND sensor_id LIKE 'fg-%%' AND time >= %s AND time < %s ORDER BY time, sensor_id",
        start,
        end,
    )
    got = [(datetime.fromisoformat(r["time"]), r["sensor_id"], r["value"]) for r in rows]
    assert len(expected) > 500
    assert got == (expected if order == "asc" else expected[::-1])
    assert all(r["time"].endswith("+00:00") for r in rows)


def test_a_cut_answer_says_so_on_the_old_route_too(month: httpx.Client) -> None:
    body = month.get(
        "/sensors/fg-welang-1/readings", params={"metric": "water_level", "limit": 10}
    ).json()
    assert body["truncated"] is True
    assert len(body["readings"]) == 10
    following = month.get(body["next"]).json()
    assert following["readings"][0]["time"] > body["readings"][-1]["time"]


@pytest.mark.parametrize(
    ("resolution", "agg", "bucket", "aggregate"),
    [
        ("5m", "avg", "date_bin('5 minutes', time, TIMESTAMPTZ '2000-01-01Z')", "avg(value)"),
        ("15m", "max", "date_bin('15 minutes', time, TIMESTAMPTZ '2000-01-01Z')", "max(value)"),
        ("1h", "count", "date_trunc('hour', time)", "count(*)"),
        ("1m", "min", "date_trunc('minute', time)", "min(value)"),
        ("1d", "last", "date_trunc('day', time, 'Asia/Jakarta')",
         "(array_agg(value ORDER BY time DESC))[1]"),
    ],
)  # fmt: skip
def test_buckets_equal_what_the_raw_readings_give(
    month: httpx.Client, month_db: str, resolution: str, agg: str, bucket: str, aggregate: str
) -> None:
    now = datetime.now(UTC)
    span = timedelta(days=4) if resolution == "1d" else timedelta(hours=6)
    # Closed buckets only: the raw rows of the open one are still arriving (not here, but the
    # comparison is about materialised data).
    start, end = now - timedelta(days=10), now - timedelta(days=10) + span
    body = month.get(
        "/readings",
        params={"sensor": "tc-bangil-1", "metric": "occupancy", "resolution": resolution,
                "agg": agg, "start": start.isoformat(), "end": end.isoformat(), "limit": 5000},
    ).json()  # fmt: skip
    lo = datetime.fromisoformat(body["start"])
    expected = _raw(
        month_db,
        f"SELECT {bucket} AS b, {aggregate} FROM readings WHERE sensor_id = 'tc-bangil-1' "
        "AND metric = 'occupancy' AND time >= %s GROUP BY 1 HAVING "
        f"{bucket} < %s ORDER BY 1",
        lo,
        end,
    )
    got = [(datetime.fromisoformat(r["time"]), r["value"]) for r in body["readings"]]
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected])
    assert body["agg"] == agg
    assert body["bucket_timezone"] == ("Asia/Jakarta" if resolution == "1d" else None)


def test_day_buckets_are_wib_days_and_the_default_window_has_today(month: httpx.Client) -> None:
    body = month.get(
        "/readings", params={"sensor": "fg-welang-1", "metric": "rainfall", "resolution": "1d"}
    ).json()
    today = datetime.now(WIB).replace(hour=0, minute=0, second=0, microsecond=0)
    times = [datetime.fromisoformat(r["time"]) for r in body["readings"]]
    assert times[-1] == today  # the current WIB day, labelled 17:00 UTC the day before
    assert body["readings"][-1]["time"].endswith("T17:00:00+00:00")
    local = month.get(
        "/readings",
        params={"sensor": "fg-welang-1", "metric": "rainfall", "resolution": "1d",
                "tz": "Asia/Jakarta"},
    ).json()  # fmt: skip
    assert local["readings"][-1]["time"] == today.isoformat()
    assert local["readings"][-1]["time"].endswith("T00:00:00+07:00")
    assert local["tz"] == "Asia/Jakarta"


def test_times_without_offset_are_wib(month: httpx.Client) -> None:
    day = (datetime.now(WIB) - timedelta(days=2)).date().isoformat()
    naive = month.get(
        "/readings",
        params={"sensor": "fg-welang-1", "metric": "water_level", "start": f"{day}T10:00:00",
                "end": f"{day}T11:00:00"},
    ).json()  # fmt: skip
    explicit = month.get(
        "/readings",
        params={"sensor": "fg-welang-1", "metric": "water_level",
                "start": f"{day}T03:00:00Z", "end": f"{day}T04:00:00+00:00"},
    ).json()  # fmt: skip
    assert naive["start"] == f"{day}T03:00:00+00:00"
    assert naive["readings"] == explicit["readings"]
    assert len(naive["readings"]) >= 55


def test_csv_export_streams_the_same_rows_as_json(month: httpx.Client) -> None:
    end = datetime.now(UTC) - timedelta(days=1)
    params = {"family": "traffic_counter", "start": (end - timedelta(hours=3)).isoformat(),
              "end": end.isoformat()}  # fmt: skip
    with month.stream("GET", "/readings", params={**params, "format": "csv"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        disposition = response.headers["content-disposition"]
        assert disposition.startswith("attachment; filename=") and disposition.endswith('.csv"')
        assert "content-length" not in response.headers  # streamed, not built whole
        text = response.read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    json_rows = _walk(month, {**params, "limit": 10_000})
    assert len(rows) == len(json_rows) > 1000
    # CSV rows come series by series (the index's order), each series in time order.
    json_rows.sort(key=lambda r: (r["sensor_id"], r["metric"], datetime.fromisoformat(r["time"])))
    for got, want in zip(rows, json_rows, strict=True):
        assert datetime.fromisoformat(got["time"]) == datetime.fromisoformat(want["time"])
        assert (got["sensor_id"], got["metric"]) == (want["sensor_id"], want["metric"])
        assert float(got["value"]) == want["value"]
    units = {r["metric"]: r["unit"] for r in rows}
    assert units["avg_speed"] == "km/h" and units["count_car"] == "count"


def test_csv_in_local_time(month: httpx.Client) -> None:
    response = month.get(
        "/readings",
        params={"sensor": "fg-welang-1", "metric": "water_level", "resolution": "1h",
                "format": "csv", "tz": "Asia/Jakarta"},
    )  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows and all(r["time"].endswith(":00:00+07:00") for r in rows)


def test_series_and_metrics_are_described(month: httpx.Client) -> None:
    body = month.get("/readings", params={"sensor": ["fg-welang-1", "tc-bangil-1"]}).json()
    series = {(s["sensor_id"], s["metric"]): s["unit"] for s in body["series"]}
    assert series[("fg-welang-1", "water_level")] == "m"
    assert series[("tc-bangil-1", "avg_speed")] == "km/h"
    assert ("fg-welang-1", "avg_speed") not in series
    wrong = month.get("/readings", params={"sensor": "fg-welang-1", "metric": "pm25"})
    assert wrong.status_code == 400
    assert "water_level" in wrong.json()["detail"]  # says what the sensor does report


def test_history_pages_carry_an_etag(month: httpx.Client) -> None:
    end = datetime.now(UTC) - timedelta(days=4)
    params = {"sensor": "fg-welang-2", "metric": "water_level", "resolution": "1h",
              "start": (end - timedelta(days=1)).isoformat(), "end": end.isoformat()}  # fmt: skip
    first = month.get("/readings", params=params)
    assert first.status_code == 200 and first.headers["etag"]
    assert first.json()["count"] in (24, 25)  # the first hour is aligned down
    again = month.get("/readings", params=params, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_raw_export_streams_from_the_key_without_sorting_the_range(
    month_db: str, order: str
) -> None:
    end = datetime.now(UTC) - timedelta(days=1)
    with psycopg.connect(month_db) as conn:
        query = resolve(
            load_registry(conn), sensor=None, family=Family.TRAFFIC_COUNTER, metric=None,
            start=(end - timedelta(days=2)).isoformat(), end=end.isoformat(),
            resolution="raw", order=order,
        )  # fmt: skip
        statement, params = export_sql(query, "value")
        with conn.transaction():
            set_local(conn, export_session(query, "UTC"))
            text = psycopg.ClientCursor(conn).mogrify(statement, params)
            [(explained,)] = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + text).fetchall()
    nodes = list(_plan_nodes(explained[0]["Plan"]))
    kinds = [node["Node Type"] for node in nodes]
    scans = [node for node in nodes if "Relation Name" in node]
    assert scans and all(node["Node Type"] == "Index Scan" for node in scans), kinds
    assert "Gather" not in kinds and "Gather Merge" not in kinds, kinds
    if order == "asc":
        # The key's order: merged across partitions or chunks, never sorted.
        assert "Sort" not in kinds and "Incremental Sort" not in kinds, kinds
    else:
        # Newest first within each series: each series sorted alone, as it comes.
        assert "Sort" not in kinds, kinds
        [resort] = [node for node in nodes if node["Node Type"] == "Incremental Sort"]
        assert resort["Presorted Key"] == ["readings.sensor_id", "readings.metric"], resort
    assert nodes[0]["Actual Rows"] > 1000
