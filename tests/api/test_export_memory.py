"""A year of one-minute data for a whole family streams as CSV without growing the server.

The family is the flood gauges of the mini city, one metric (water level) to keep the test's
set-up short: three series of 525,600 one-minute buckets, about 90 MB of CSV.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import psycopg
import pytest

from pantau.city import City
from pantau.db import registry
from pantau.db.migrate import migrate, refresh_rollups
from pantau.settings import StorageSettings
from pantau.tools.bench.api import api_process
from pantau.tools.services import tree_memory_bytes

MIB = 1024 * 1024
# What the server may grow by while streaming the whole export (the export is far larger).
GROWTH_LIMIT_BYTES = 32 * MIB
YEAR_STORAGE = StorageSettings(
    raw_retention=timedelta(days=400),
    retention_1m=timedelta(days=401),
    retention_1h=timedelta(days=730),
    retention_1d=timedelta(days=3650),
    chunk_interval=timedelta(days=30),
)


@pytest.fixture
def year_db(empty_db: str, mini_city: City) -> str:
    migrate(empty_db, YEAR_STORAGE)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        registry.load_city(conn, mini_city)
        # One reading a minute for a year for every flood gauge, made by the server itself
        # (fast; the test is about reading it back).
        conn.execute(
            """
            INSERT INTO readings (time, sensor_id, metric, value)
            SELECT t, s, m, round((1.5 + sin(extract(epoch FROM t) / 7200.0))::numeric, 3)
            FROM generate_series(date_trunc('minute', now()) - interval '365 days',
                                 date_trunc('minute', now()) - interval '1 minute',
                                 interval '1 minute') AS t,
                 unnest(ARRAY['fg-welang-1', 'fg-welang-2', 'fg-welang-3']) AS s,
                 unnest(ARRAY['water_level']) AS m
            """
        )
    refresh_rollups(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("ANALYZE")  # plans as on a database autovacuum has seen
    return empty_db


@pytest.fixture
def year_api(year_db: str) -> Iterator[tuple[str, int]]:
    """The API as its own process (`python -m api`): base URL and pid."""
    with api_process(year_db) as served:
        yield served


@pytest.mark.slow
def test_year_of_minutes_for_a_family_streams_in_bounded_memory(
    year_api: tuple[str, int],
) -> None:
    base, pid = year_api
    params = {"family": "flood_gauge", "metric": "water_level", "resolution": "1m", "agg": "avg", "format": "csv",
              "start": "2000-01-01", "end": "2199-01-01"}  # fmt: skip
    with httpx.Client(base_url=base, timeout=120) as client:
        # Too long a range is refused; a year fits.
        assert client.get("/readings", params=params).status_code == 400
        end = client.get("/readings", params={"family": "flood_gauge"}).json()["end"]
        params |= {"start": _minus_days(end, 366), "end": end}
        # Warm up (imports, pool, first query plans) before taking the baseline.
        small = {**params, "start": _minus_days(end, 1)}
        assert client.get("/readings", params=small).status_code == 200
        baseline = tree_memory_bytes(pid)
        peak = baseline
        done = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.wait(0.05):
                peak = max(peak, tree_memory_bytes(pid))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        size = lines = 0
        last = b""
        with client.stream(
            "GET", "/readings", params=params, headers={"Accept-Encoding": "identity"}
        ) as response:
            assert response.status_code == 200
            assert "attachment" in response.headers["content-disposition"]
            for chunk in response.iter_bytes():
                size += len(chunk)
                lines += chunk.count(b"\n")
                last = (last + chunk)[-200:]
        done.set()
        watcher.join()
    minutes = 365 * 24 * 60
    assert lines == 1 + 3 * minutes  # header, then every minute of 3 gauges
    assert size > 80 * MIB
    assert last.rstrip().split(b"\n")[-1].split(b",")[1] == b"fg-welang-3"
    growth = peak - baseline
    assert growth < GROWTH_LIMIT_BYTES, (
        f"server grew {growth / MIB:.0f} MiB for {size / MIB:.0f} MiB"
    )


def _minus_days(moment: str, days: int) -> str:
    return (datetime.fromisoformat(moment) - timedelta(days=days)).isoformat()
