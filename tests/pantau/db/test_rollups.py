"""Every bucket of every rollup equals what the raw readings give, in both storage modes.

Readings arrive on time, late (older than each refresh policy's window, within raw retention),
out of order and redelivered; the rollups are refreshed the way the running system does it
(TimescaleDB: its refresh policies plus the maintenance catch-up; plain PostgreSQL: the
maintenance refresh), also while a policy job or another maintenance run is busy. Then each of
``readings_1m``, ``readings_1h`` and ``readings_1d`` is compared, bucket by bucket, with an
aggregate computed here over ``readings``: average, minimum, maximum, count, last value and
its time.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from pantau.db import timescaledb
from pantau.db.migrate import Mode, maintain, refresh_rollups
from pantau.db.store import prepare, store
from pantau.db.timescaledb import BUCKET_WIDTH
from pantau.payload import Reading
from pantau.settings import StorageSettings
from pantau.tools.services import wait_until

ROLLUPS = tuple(BUCKET_WIDTH)
# The rollups' buckets, written out independently of either mode's implementation: UTC minutes
# and hours, days of the city (WIB).
RAW_BUCKET = {
    "readings_1m": "date_trunc('minute', time, 'UTC')",
    "readings_1h": "date_trunc('hour', time, 'UTC')",
    "readings_1d": "date_trunc('day', time, 'Asia/Jakarta')",
}
_MISMATCHES = """
WITH raw AS (
    SELECT {bucket} AS bucket, sensor_id, metric,
           avg(value) AS value_avg, min(value) AS value_min, max(value) AS value_max,
           count(*) AS value_count, (array_agg(value ORDER BY time DESC))[1] AS value_last,
           max(time) AS last_time
    FROM readings
    GROUP BY 1, 2, 3
)
SELECT bucket, sensor_id, metric,
       r.value_count AS raw_count, a.value_count AS rollup_count,
       r.value_avg AS raw_avg, a.value_avg AS rollup_avg,
       r.value_last AS raw_last, a.value_last AS rollup_last
FROM raw r FULL JOIN {rollup} a USING (bucket, sensor_id, metric)
WHERE r.bucket IS NULL OR a.bucket IS NULL
   OR abs(r.value_avg - a.value_avg) > 1e-9 * greatest(1, abs(r.value_avg))
   OR r.value_min <> a.value_min OR r.value_max <> a.value_max
   OR r.value_count <> a.value_count OR r.value_last <> a.value_last
   OR r.last_time <> a.last_time
ORDER BY 1, 2, 3
"""


def mismatches(conn: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Per rollup, every bucket whose row differs from the raw readings' answer (or is missing
    on either side)."""
    found = {}
    for name in ROLLUPS:
        rows = conn.execute(_MISMATCHES.format(bucket=RAW_BUCKET[name], rollup=name)).fetchall()
        if rows:
            found[name] = rows
    return found


def _buckets(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
    assert row is not None
    return int(row[0])


def _series(
    sensor: str, metric: str, end: datetime, span: timedelta, step: timedelta, seed: int
) -> list[Reading]:
    rng = random.Random(seed)
    count = int(span / step)
    return [
        Reading.at(end - step * i, sensor, metric, round(rng.uniform(0, 50), 3))
        for i in range(count, 0, -1)
    ]


def _store_in_batches(conn: psycopg.Connection, readings: list[Reading], size: int = 50) -> None:
    for i in range(0, len(readings), size):
        store(conn, readings[i : i + size])


def _refresh_policies(conn: psycopg.Connection) -> list[int]:
    rows = conn.execute(
        "SELECT job_id FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_refresh_continuous_aggregate' ORDER BY job_id"
    ).fetchall()
    return [job_id for (job_id,) in rows]


def _run_policies(url: str) -> None:
    """What TimescaleDB's scheduler does: run each refresh policy once (a run may meet the
    scheduler's own run of the same policy and give way)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for job_id in _refresh_policies(conn):
            with suppress(psycopg.errors.LockNotAvailable):
                conn.execute("CALL run_job(%s)", [job_id])


def refresh_as_the_system_does(url: str, storage: StorageSettings, mode: Mode) -> None:
    """TimescaleDB: its refresh policies, then ingest's periodic maintenance (the catch-up);
    plain PostgreSQL: ingest's periodic maintenance (the refresh)."""
    if mode is Mode.TIMESCALEDB:
        _run_policies(url)
    maintain(url, storage, partitions=False)


@contextmanager
def refreshing_meanwhile(url: str, storage: StorageSettings, mode: Mode) -> Iterator[None]:
    """A policy job (TimescaleDB) or another maintenance run (plain) busy in the background."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        while not stop.is_set():
            try:
                if mode is Mode.TIMESCALEDB:
                    _run_policies(url)
                else:
                    maintain(url, storage, wait=False, partitions=False)
            except BaseException as error:  # reported by the test below
                errors.append(error)
                return
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors


def test_every_bucket_equals_the_raw_readings(
    conn: psycopg.Connection, city_db: str, db_mode: Mode, storage: StorageSettings
) -> None:
    prepare(conn)
    now = datetime.now(UTC)
    # On time: each series in observation order, in ingest-sized batches.
    on_time = (
        _series("fg-welang-1", "water_level", now, timedelta(hours=2), timedelta(seconds=15), 1)
        + _series("tc-bangil-1", "count_car", now, timedelta(hours=30), timedelta(minutes=1), 2)
        + _series("sn-bangil-1", "pm25", now, timedelta(days=6), timedelta(minutes=7), 3)
    )
    _store_in_batches(conn, sorted(on_time))

    if db_mode is Mode.TIMESCALEDB:
        # The scheduler ran the 1-minute policy half an hour ago and then not until now: the
        # minutes between were never in any run's window. Real-time aggregation does not cover
        # them (they are below the watermark), so they are missing until the catch-up.
        conn.execute(
            "CALL refresh_continuous_aggregate('readings_1m', %s::timestamptz, %s::timestamptz)",
            [now - timedelta(minutes=34), now - timedelta(minutes=31)],
        )
        _run_policies(city_db)
        assert "readings_1m" in mismatches(conn)
    refresh_as_the_system_does(city_db, storage, db_mode)
    assert mismatches(conn) == {}
    if db_mode is Mode.TIMESCALEDB:
        # As the compression policy would have: late readings below land in compressed chunks.
        compressed = conn.execute(
            "SELECT count(compress_chunk(c)) FROM show_chunks('readings', older_than => %s) c",
            [timedelta(days=2)],
        ).fetchone()
        assert compressed is not None and compressed[0] >= 2

    # Late readings, each older than some refresh policy's window (1 minute: 4 minutes back;
    # 1 hour: 4 hours; 1 day: half the raw retention), and none new to any bucket's last value
    # except where they are the newest.
    late = [
        Reading.at(now - timedelta(seconds=67), "fg-welang-1", "water_level", 99.0),
        Reading.at(now - timedelta(minutes=10, seconds=7), "fg-welang-1", "water_level", -5.0),
        Reading.at(now - timedelta(minutes=95, seconds=3), "fg-welang-1", "water_level", 77.0),
        Reading.at(now - timedelta(hours=6, seconds=11), "tc-bangil-1", "count_car", 500.0),
        Reading.at(now - timedelta(hours=25, seconds=13), "tc-bangil-1", "count_car", 0.5),
        Reading.at(now - timedelta(days=5, seconds=17), "sn-bangil-1", "pm25", 250.0),
        Reading.at(now - timedelta(days=5, hours=3), "sn-bangil-2", "pm10", 40.0),
    ]
    for reading in late:
        store(conn, [reading])
    # Out of order: one batch, shuffled, across all ages.
    rng = random.Random(7)
    scattered = [
        Reading.at(
            now - timedelta(seconds=rng.randrange(30, 6 * 86400)) - timedelta(microseconds=1),
            "tc-bangil-2",
            "count_motorcycle",
            float(i),
        )
        for i in range(200)
    ]
    rng.shuffle(scattered)
    store(conn, scattered)
    # Redelivered: stored keys again, some with another value; the first stored value wins.
    again = rng.sample(on_time, 150) + late[:3]
    store(conn, [r._replace(value=r.value + 1000) if i % 2 else r for i, r in enumerate(again)])
    refresh_as_the_system_does(city_db, storage, db_mode)
    assert mismatches(conn) == {}

    # The same, refreshed by hand (tests, backfills, `pantau simulate verify`) while a policy job
    # or ingest's maintenance runs: the caller never fails, and the open buckets stay live.
    with refreshing_meanwhile(city_db, storage, db_mode):
        for _ in range(3):
            store(conn, [Reading.at(datetime.now(UTC), "fg-welang-3", "water_level", 1.5)])
            refresh_rollups(city_db)
            assert mismatches(conn) == {}
    # Readings arriving after the refresh in the open minute, hour and day are in the rollups
    # at once: the open buckets were not materialised.
    store(
        conn,
        [
            Reading.at(datetime.now(UTC), "fg-welang-1", "water_level", 12.5),
            Reading.at(datetime.now(UTC), "sn-bangil-1", "pm25", 3.25),
        ],
    )
    assert mismatches(conn) == {}
    # Not vacuous: many buckets of every rollup were compared.
    assert _buckets(conn, "readings_1m") > 2000
    assert _buckets(conn, "readings_1h") > 100
    assert _buckets(conn, "readings_1d") >= 15


def _open_buckets(conn: psycopg.Connection) -> list[datetime]:
    row = conn.execute(
        "SELECT " + ", ".join(timescaledb.BUCKETS[name].format(t="now()") for name in ROLLUPS)
    ).fetchone()
    assert row is not None
    return list(row)


@pytest.mark.timescaledb
def test_manual_refresh_never_materialises_the_open_buckets(timescaledb_db: str) -> None:
    with psycopg.connect(timescaledb_db, autocommit=True) as conn:
        prepare(conn)
        now = datetime.now(UTC)
        series = _series(
            "fg-welang-1", "water_level", now, timedelta(days=2), timedelta(seconds=20), 4
        )
        _store_in_batches(conn, series, size=1000)
        before = _open_buckets(conn)
        # Even when asked for more: buckets open now are never materialised.
        refresh_rollups(timescaledb_db, through=now + timedelta(days=1))
        after = _open_buckets(conn)
        marks = timescaledb.watermarks(conn)
    # The materialised part ends where each open bucket starts (a bucket may have closed
    # meanwhile).
    for name, first, last in zip(ROLLUPS, before, after, strict=True):
        assert marks[name] is not None
        assert first <= marks[name] <= last, name


@pytest.mark.timescaledb
def test_refresh_waits_for_a_policy_job_on_the_same_aggregate(
    timescaledb_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Since TimescaleDB 2.21 an overlapping refresh fails at once (and since 2.28 a bare one
    runs in batches, each its own window); ours retries until the policy's job is done."""
    with psycopg.connect(timescaledb_db, autocommit=True) as conn:
        prepare(conn)
        now = datetime.now(UTC)
        store(
            conn,
            _series(
                "fg-welang-1", "water_level", now, timedelta(minutes=20), timedelta(seconds=10), 5
            ),
        )
        job_id = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_refresh_continuous_aggregate' "
            "AND hypertable_name = 'readings_1m'"
        ).fetchone()
        materialized = conn.execute(
            "SELECT format('%I.%I', materialization_hypertable_schema, "
            "materialization_hypertable_name) FROM timescaledb_information.continuous_aggregates "
            "WHERE view_name = 'readings_1m'"
        ).fetchone()
    assert job_id is not None and materialized is not None
    outcome: list[BaseException | None] = []
    with ExitStack() as stack:
        locker = stack.enter_context(psycopg.connect(timescaledb_db))
        policy = stack.enter_context(psycopg.connect(timescaledb_db, autocommit=True))
        check = stack.enter_context(psycopg.connect(timescaledb_db, autocommit=True))
        # Hold the policy's job between registering its window and materialising.
        locker.execute(f"LOCK TABLE {materialized[0]} IN ACCESS EXCLUSIVE MODE")
        policy_pid = policy.info.backend_pid
        job = threading.Thread(target=policy.execute, args=("CALL run_job(%s)", job_id))
        job.start()
        # Whatever fails below, the job ends before its connection is closed (else closing
        # it waits for the job, which waits for the lock: a hang instead of a failure).
        stack.callback(job.join, 60)
        stack.callback(locker.rollback)

        def registered() -> tuple[datetime, datetime] | None:
            # The job's window, once registered (committed: the registration is a transaction
            # of its own) and the job waiting for the lock to materialise.
            row = check.execute(
                "SELECT _timescaledb_functions.to_timestamp(r.start_range), "
                "_timescaledb_functions.to_timestamp(r.end_range) "
                "FROM pg_stat_activity a "
                "JOIN _timescaledb_catalog.continuous_aggs_jobs_refresh_ranges r ON r.pid = a.pid "
                "WHERE a.pid = %s AND a.wait_event_type = 'Lock'",
                [policy_pid],
            ).fetchone()
            return None if row is None else (row[0], row[1])

        wait_until(
            lambda: registered() is not None, timeout_s=30, what="the policy job mid-refresh"
        )
        window = registered()
        assert window is not None
        # A bare refresh of that window fails at once: the window is taken. (Bounded all the
        # same: were it to wait instead, the test fails rather than hangs.)
        check.execute("SET statement_timeout = '20s'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            check.execute("CALL refresh_continuous_aggregate('readings_1m', %s, %s)", window)

        def manual() -> None:
            try:
                # Up to the end of the job's window, so that the 1-minute aggregate's refresh
                # overlaps it even were it batched (a newer batch would wait for the test's
                # lock instead of meeting the job).
                refresh_rollups(timescaledb_db, through=window[1])
                outcome.append(None)
            except BaseException as error:
                outcome.append(error)

        caplog.set_level(logging.INFO, logger="pantau.db.timescaledb")
        caller = threading.Thread(target=manual)
        caller.start()
        wait_until(
            lambda: "readings_1m: waiting" in caplog.text,
            timeout_s=30,
            what="the manual refresh meeting the job",
        )
        caller.join(timeout=1.0)
        assert caller.is_alive(), outcome  # still retrying, not failed
        locker.rollback()  # the job finishes
        caller.join(timeout=60)
    assert outcome == [None]
    with psycopg.connect(timescaledb_db) as conn:
        assert mismatches(conn) == {}
