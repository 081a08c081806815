"""TimescaleDB mode: hypertable, compression, policies from settings, continuous aggregates.

These run where the test server offers TimescaleDB (2.13 or newer, Community build); elsewhere
the `timescaledb_db` fixture skips them with the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from pantau.db.migrate import migrate
from pantau.db.store import prepare, store
from pantau.db.timescaledb import AGGREGATES, chunk_count
from pantau.payload import Reading
from pantau.settings import StorageSettings
from tests.pantau.db.test_store import check_rollups_match

pytestmark = pytest.mark.timescaledb

ROLLUP_RETENTION = {"readings_1m": "retention_1m", "readings_1h": "retention_1h",
                    "readings_1d": "retention_1d"}  # fmt: skip
BUCKETS = {
    "readings_1m": timedelta(minutes=1),
    "readings_1h": timedelta(hours=1),
    "readings_1d": timedelta(days=1),
}


def _columns(text: str | None) -> list[str]:
    return [part.strip().strip('"') for part in (text or "").split(",") if part.strip()]


def test_readings_is_a_hypertable(timescaledb_db: str, storage: StorageSettings) -> None:
    with psycopg.connect(timescaledb_db) as conn:
        row = conn.execute(
            "SELECT compression_enabled FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = 'public' AND hypertable_name = 'readings'"
        ).fetchone()
        assert row == (True,)
        dimension = conn.execute(
            "SELECT column_name, time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'readings'"
        ).fetchall()
        assert dimension == [("time", storage.chunk_interval)]


def test_compression_is_segmented_by_sensor_and_metric(timescaledb_db: str) -> None:
    with psycopg.connect(timescaledb_db) as conn:
        views = [
            name
            for name in (
                "hypertable_columnstore_settings",
                "hypertable_compression_settings",
            )
            if conn.execute(
                "SELECT to_regclass(%s)", [f"timescaledb_information.{name}"]
            ).fetchone()
            != (None,)
        ]
        if views:
            row = conn.execute(
                f"SELECT segmentby, orderby FROM timescaledb_information.{views[0]} "
                "WHERE hypertable = 'readings'::regclass"
            ).fetchone()
            assert row is not None
            assert _columns(row[0]) == ["sensor_id", "metric"]
            assert _columns(row[1])[0].startswith("time")
        else:  # before TimescaleDB 2.14
            rows = conn.execute(
                "SELECT attname FROM timescaledb_information.compression_settings "
                "WHERE hypertable_name = 'readings' AND segmentby_column_index IS NOT NULL "
                "ORDER BY segmentby_column_index"
            ).fetchall()
            assert [name for (name,) in rows] == ["sensor_id", "metric"]


def _jobs(conn: psycopg.Connection) -> list[tuple[str, str, timedelta, dict[str, object]]]:
    """(proc_name, target, schedule_interval, config); target is the cagg's view name."""
    rows = conn.execute(
        """
        SELECT j.proc_name, coalesce(ca.view_name, j.hypertable_name), j.schedule_interval,
               j.config
        FROM timescaledb_information.jobs j
        LEFT JOIN timescaledb_information.continuous_aggregates ca
          ON j.hypertable_name IN (ca.materialization_hypertable_name, ca.view_name)
        WHERE j.hypertable_name IS NOT NULL  -- not the extension's own housekeeping jobs
        ORDER BY 1, 2
        """
    ).fetchall()
    return [(proc, target, schedule, config) for proc, target, schedule, config in rows]


def _interval(conn: psycopg.Connection, text: object) -> timedelta:
    row = conn.execute("SELECT %s::text::interval", [str(text)]).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _check_policies(url: str, storage: StorageSettings) -> None:
    with psycopg.connect(url) as conn:
        jobs = _jobs(conn)
        compression = [j for j in jobs if j[0] in {"policy_compression", "policy_columnstore"}]
        assert [j[1] for j in compression] == ["readings"]
        assert _interval(conn, compression[0][3]["compress_after"]) == storage.compress_after

        retention = {j[1]: j[3] for j in jobs if j[0] == "policy_retention"}
        assert set(retention) == {"readings", *AGGREGATES}
        assert _interval(conn, retention["readings"]["drop_after"]) == storage.raw_retention
        for name, option in ROLLUP_RETENTION.items():
            assert _interval(conn, retention[name]["drop_after"]) == getattr(storage, option)

        refresh = {j[1]: j for j in jobs if j[0] == "policy_refresh_continuous_aggregate"}
        assert set(refresh) == set(AGGREGATES)
        assert refresh["readings_1m"][2] == storage.refresh_schedule
        for name, (_, _, schedule, config) in refresh.items():
            width = BUCKETS[name]
            assert schedule >= storage.refresh_schedule
            end = _interval(conn, config["end_offset"])
            start = _interval(conn, config["start_offset"])
            assert end == width
            # At least two buckets wide, and inside raw retention so no refresh erases data.
            assert start - end >= 2 * width
            assert start < storage.raw_retention
        assert len(jobs) == 1 + 4 + 3


def test_policies_follow_the_settings(timescaledb_db: str, storage: StorageSettings) -> None:
    _check_policies(timescaledb_db, storage)


def test_changed_settings_replace_the_policies(
    timescaledb_db: str, storage: StorageSettings
) -> None:
    changed = storage.model_copy(
        update={
            "raw_retention": timedelta(days=21),
            "compress_after": timedelta(days=3),
            "retention_1m": timedelta(days=60),
            "refresh_schedule": timedelta(minutes=2),
            "chunk_interval": timedelta(hours=12),
        }
    )
    assert migrate(timescaledb_db, changed).applied == ()
    _check_policies(timescaledb_db, changed)
    with psycopg.connect(timescaledb_db) as conn:
        row = conn.execute(
            "SELECT time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'readings'"
        ).fetchone()
    assert row == (timedelta(hours=12),)


def test_continuous_aggregates_exist(timescaledb_db: str) -> None:
    with psycopg.connect(timescaledb_db) as conn:
        rows = conn.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates "
            "WHERE view_schema = 'public' ORDER BY 1"
        ).fetchall()
    assert rows == [(name, False) for name in sorted(AGGREGATES)]


def test_aggregates_match_after_refresh(timescaledb_db: str, city_db: str) -> None:
    start = (datetime.now(UTC) - timedelta(hours=20)).replace(minute=0, second=0, microsecond=0)
    readings = [
        Reading.at(start + timedelta(seconds=45 * i), "fg-welang-2", "water_level", (i % 17) / 8)
        for i in range(150)
    ]
    with psycopg.connect(city_db, autocommit=True) as conn:
        prepare(conn)
        store(conn, readings[:100])
        check_rollups_match(conn, city_db, readings[:100])
        assert chunk_count(conn) >= 1
        # Late readings in buckets already materialised are picked up by the next refresh.
        store(conn, readings[100:])
        check_rollups_match(conn, city_db, readings)
