"""`pantau db status` numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from typer.testing import CliRunner

from pantau.city import City
from pantau.cli.app import app
from pantau.cli.dbstatus import COUNTED_TABLES, status
from pantau.db import registry
from pantau.db.migrate import LATEST_VERSION, Mode, refresh_rollups
from pantau.db.store import RejectedPayload, prepare, store
from pantau.payload import Reading, Reason, Rejection
from pantau.settings import get_settings
from pantau.tools.services import wait_until


def test_status_of_an_empty_database(empty_db: str) -> None:
    state = status(empty_db)
    assert state.mode is None
    assert state.version == 0
    assert state.latest_version == LATEST_VERSION
    assert not state.up_to_date
    assert state.rows == {}
    assert state.partitions == 0


def test_status_counts_rows(conn: psycopg.Connection, city_db: str, db_mode: Mode) -> None:
    prepare(conn)
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    readings = [
        Reading.at(start + timedelta(minutes=m), "fg-welang-1", "water_level", 1.0 + m / 100)
        for m in range(5)
    ]
    readings.append(Reading.at(start, "sn-bangil-1", "pm25", 30.0))
    rejected = RejectedPayload(
        topic="t/up/x", payload=b"{", received_at=start, rejection=Rejection(Reason.BAD_SHAPE, "x")
    )
    store(conn, readings, [rejected])
    refresh_rollups(city_db)
    state = status(city_db)
    assert state.mode is db_mode
    assert state.version == LATEST_VERSION
    assert state.up_to_date
    assert set(state.rows) == set(COUNTED_TABLES)
    assert state.rows == {
        "sensors": 7,
        "readings": 6,
        "latest_readings": 2,
        "readings_1m": 6,
        "readings_1h": 2,
        "readings_1d": 2,
        "rejected_payloads": 1,
        "alerts": 0,
    }
    assert state.partitions >= 1
    if db_mode is Mode.TIMESCALEDB:
        assert state.timescaledb_version is not None


def test_status_reports_rollup_lag(conn: psycopg.Connection, city_db: str) -> None:
    prepare(conn)
    now = datetime.now(UTC)
    # Readings in every recent bucket: TimescaleDB's watermark is the end of the last
    # materialised bucket that has data.
    readings = [
        Reading.at(now - timedelta(minutes=5 * i), "fg-welang-1", "water_level", 1.0)
        for i in range(1, 600)
    ] + [
        Reading.at(now - timedelta(seconds=20 * i), "fg-welang-2", "water_level", 2.0)
        for i in range(1, 12)
    ]
    store(conn, readings)
    refresh_rollups(city_db)
    state = status(city_db)
    assert list(state.watermarks) == ["readings_1m", "readings_1h", "readings_1d"]
    lag = state.lag
    # Materialised up to the bucket open at the refresh: less than one bucket behind (plus the
    # time the test took).
    for name, width in (("readings_1m", timedelta(minutes=1)), ("readings_1h", timedelta(hours=1)),
                        ("readings_1d", timedelta(days=1))):  # fmt: skip
        behind = lag[name]
        assert behind is not None, name
        assert timedelta(0) <= behind < width + timedelta(minutes=1), name


def _invoke_status(monkeypatch: pytest.MonkeyPatch, url: str) -> tuple[int, str]:
    monkeypatch.setenv("PANTAU_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["db", "status"], terminal_width=200)
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.stdout


@pytest.mark.timescaledb
@pytest.mark.timeout(300)
def test_timescaledb_status_shows_compression_jobs_and_failures(
    timescaledb_db: str, mini_city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(timescaledb_db, autocommit=True) as conn:
        registry.load_city(conn, mini_city)
        prepare(conn)
        start = datetime.now(UTC) - timedelta(days=3)
        store(
            conn,
            [
                Reading.at(
                    start + timedelta(seconds=30 * i), "fg-welang-1", "water_level", i % 40 / 10
                )
                for i in range(6000)
            ],
        )
        conn.execute(
            "SELECT compress_chunk(c) FROM show_chunks('readings', older_than => now() - interval '36 hours') c"
        )
        # A job of the operator's that fails on every run, run by TimescaleDB's scheduler.
        conn.execute(
            "CREATE PROCEDURE pantau_test_failing(job_id int, config jsonb) LANGUAGE plpgsql "
            "AS $$ BEGIN RAISE EXCEPTION 'archive unreachable'; END $$"
        )
        row = conn.execute(
            "SELECT add_job('pantau_test_failing', '1 hour', initial_start => now())"
        ).fetchone()
        assert row is not None
        failing = row[0]

    def failed() -> bool:
        return any(j.job_id == failing and j.failing for j in status(timescaledb_db).jobs)

    wait_until(failed, timeout_s=240, what="TimescaleDB's scheduler running the failing job")
    state = status(timescaledb_db)
    assert state.compression is not None
    assert state.compression.chunks >= 3
    assert 1 <= state.compression.compressed_chunks < state.compression.chunks
    assert state.compression.ratio is not None and state.compression.ratio > 1
    refreshes = {
        j.target for j in state.jobs if j.proc_name == "policy_refresh_continuous_aggregate"
    }
    assert refreshes == {"readings_1m", "readings_1h", "readings_1d"}
    job = next(j for j in state.jobs if j.job_id == failing)
    assert job.total_failures >= 1 and job.last_error == "archive unreachable"
    assert any(f"job {failing} " in p and "archive unreachable" in p for p in state.problems)

    code, out = _invoke_status(monkeypatch, timescaledb_db)
    assert code == 0  # up to date; the problem is shown, not an error of the command
    assert "TimescaleDB jobs" in out
    assert f"problem: job {failing} (pantau_test_failing) failed" in out
    assert "chunks compressed" in out and "x smaller" in out
    assert "lag: readings_1m" in out
