"""Everything TimescaleDB-specific, in one place.

Requires TimescaleDB 2.18 or newer (the columnstore names of compression) with the Community
licence (compression, retention and refresh policies, continuous aggregates); tested on 2.28 with
PostgreSQL 15 and 2.29 with PostgreSQL 18. Readers see the same names and columns as in plain
PostgreSQL mode.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from pantau.db import READINGS_TABLE
from pantau.settings import StorageSettings

log = logging.getLogger(__name__)

# Buckets of the continuous aggregates, of a timestamp expression ``{t}``. Days are the city's
# local days (WIB): time_bucket with a time zone is allowed in continuous aggregates since
# TimescaleDB 2.8.
BUCKETS = {
    "readings_1m": "time_bucket(INTERVAL '1 minute', {t})",
    "readings_1h": "time_bucket(INTERVAL '1 hour', {t})",
    "readings_1d": "time_bucket(INTERVAL '1 day', {t}, 'Asia/Jakarta')",
}
AGGREGATES = {name: bucket.format(t="time") for name, bucket in BUCKETS.items()}
BUCKET_WIDTH = {
    "readings_1m": timedelta(minutes=1),
    "readings_1h": timedelta(hours=1),
    "readings_1d": timedelta(days=1),
}
# A refresh starts this far inside raw retention: the retention job may run (and drop a chunk)
# between reading the clock and refreshing, and a refreshed window whose raw rows are gone
# loses its aggregate rows.
RETENTION_MARGIN = timedelta(hours=1)
# How long a refresh waits, retrying, while a refresh policy's job holds an overlapping window.
REFRESH_WAIT_S = 300.0
# Since TimescaleDB 2.28 a manual refresh runs in batches of ten buckets by default, each in
# transactions of its own: for the long windows refreshed here (a backfill, the catch-up after
# an outage or a restore) that is six times slower (30 days of minutes for three series: 16.2 s
# batched, 2.6 s in one pass on 2.29.2). One pass registers the whole window at once, which
# the policies' windows never overlap in the catch-up (it ends where they begin).
SINGLE_PASS = '{"buckets_per_batch": 0}'

_AGGREGATE = """
CREATE MATERIALIZED VIEW {name}
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT {bucket} AS bucket, sensor_id, metric,
       avg(value) AS value_avg, min(value) AS value_min, max(value) AS value_max,
       count(*) AS value_count, last(value, time) AS value_last, max(time) AS last_time
FROM readings
GROUP BY 1, sensor_id, metric
WITH NO DATA;
"""


def available(conn: psycopg.Connection) -> bool:
    """Whether the server offers the extension at all."""
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def installed_version(conn: psycopg.Connection) -> str | None:
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    return None if row is None else str(row[0])


def create_extension(conn: psycopg.Connection) -> None:
    """Create the extension; fails where it is not in shared_preload_libraries."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")


def schema_sql(storage: StorageSettings) -> sql.Composed:
    """DDL of the readings hypertable and its continuous aggregates."""
    aggregates = "".join(_AGGREGATE.format(name=n, bucket=b) for n, b in AGGREGATES.items())
    return sql.SQL(
        READINGS_TABLE
        + """;
SELECT create_hypertable('readings', by_range('time', {chunk}));
CREATE UNIQUE INDEX readings_key ON readings (sensor_id, metric, time);
ALTER TABLE readings SET (
    timescaledb.enable_columnstore,
    timescaledb.segmentby = 'sensor_id, metric',
    timescaledb.orderby = 'time DESC'
);
"""
        + aggregates
    ).format(chunk=sql.Literal(storage.chunk_interval))


def apply_policies(conn: psycopg.Connection, storage: StorageSettings) -> None:
    """Make the compression, retention and refresh policies match the settings.

    ``add_*_policy(..., if_not_exists => true)`` keeps an existing policy even when its interval
    differs, so each policy is removed and added again.
    """
    conn.execute(
        "SELECT set_chunk_time_interval('readings', %s::interval)", [storage.chunk_interval]
    )
    # The columnstore names replace the compression ones since TimescaleDB 2.18.
    conn.execute("CALL remove_columnstore_policy('readings', if_exists => true)")
    conn.execute(
        "CALL add_columnstore_policy('readings', after => %s::interval)", [storage.compress_after]
    )
    conn.execute("SELECT remove_retention_policy('readings', if_exists => true)")
    conn.execute(
        "SELECT add_retention_policy('readings', drop_after => %s::interval)",
        [storage.raw_retention],
    )
    for name, width in BUCKET_WIDTH.items():
        # Refresh a window that ends one bucket ago (the open bucket is served in real time)
        # and starts well inside raw retention: refreshing a window whose raw rows were
        # dropped would erase the aggregate.
        start = min(width * 4, storage.raw_retention / 2)
        schedule = max(storage.refresh_schedule, width / 60)
        conn.execute(
            "SELECT remove_continuous_aggregate_policy(%s::regclass, if_exists => true)", [name]
        )
        conn.execute(
            "SELECT add_continuous_aggregate_policy(%s::regclass, start_offset => %s::interval, "
            "end_offset => %s::interval, schedule_interval => %s::interval)",
            [name, start, width, schedule],
        )
        conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", [name])
        conn.execute(
            "SELECT add_retention_policy(%s::regclass, drop_after => %s::interval)",
            [name, storage.rollup_retention[name]],
        )


def owns_aggregates(conn: psycopg.Connection) -> bool:
    """Whether this login may refresh the continuous aggregates: TimescaleDB allows only their
    owner, and not from a SECURITY DEFINER function either (a refresh commits on its own)."""
    row = conn.execute(
        "SELECT coalesce(bool_and(pg_has_role(c.relowner, 'USAGE')), false) FROM pg_class c "
        "WHERE c.oid IN (SELECT to_regclass(name) FROM unnest(%s::text[]) AS name)",
        [list(AGGREGATES)],
    ).fetchone()
    return bool(row and row[0])


def _configured(conn: psycopg.Connection) -> tuple[timedelta | None, dict[str, timedelta | None]]:
    """Raw retention (``drop_after``) and each aggregate's refresh-policy ``start_offset``, as
    the database's own policies have them (None: no such policy, or an open start)."""
    rows = conn.execute(
        """
        SELECT proc_name, hypertable_name, (config->>'drop_after')::interval,
               (config->>'start_offset')::interval
        FROM timescaledb_information.jobs
        WHERE proc_name IN ('policy_retention', 'policy_refresh_continuous_aggregate')
          AND hypertable_schema = current_schema()
        """
    ).fetchall()
    retention = next(
        (drop for proc, name, drop, _ in rows if proc == "policy_retention" and name == "readings"),
        None,
    )
    starts = {
        name: start
        for proc, name, _, start in rows
        if proc == "policy_refresh_continuous_aggregate"
    }
    return retention, starts


def _refresh(
    conn: psycopg.Connection,
    name: str,
    start: datetime | None,
    end: datetime,
    wait_s: float,
    options: str | None = None,
) -> bool:
    """Refresh one aggregate over ``[start, end)``; False if it was already up to date.

    Since TimescaleDB 2.21 a refresh whose window overlaps one in progress (a policy's job)
    fails at once with LockNotAvailable instead of waiting; it is retried with a bounded
    backoff, and each retry recomputes only what is still invalidated. ``options`` goes to the
    procedure's ``options`` argument (TimescaleDB 2.28 and later; None: leave it out).
    """
    deadline = time.monotonic() + wait_s
    delay = 0.05
    waiting = False
    notices: list[str] = []

    def note(diagnostic: psycopg.errors.Diagnostic) -> None:
        notices.append(diagnostic.message_primary or "")

    conn.add_notice_handler(note)
    try:
        while True:
            notices.clear()
            try:
                if options is None:
                    conn.execute(
                        "CALL refresh_continuous_aggregate(%s::regclass, %s::timestamptz, "
                        "%s::timestamptz)",
                        [name, start, end],
                    )
                else:
                    conn.execute(
                        "CALL refresh_continuous_aggregate(%s::regclass, %s::timestamptz, "
                        "%s::timestamptz, options => %s::jsonb)",
                        [name, start, end, options],
                    )
                return not any("up-to-date" in text for text in notices)
            except psycopg.errors.LockNotAvailable as error:
                if time.monotonic() + delay > deadline:
                    raise
                if not waiting:  # one line per wait, not one per retry
                    waiting = True
                    log.info(
                        "%s: waiting up to %.0f s for a concurrent refresh (%s)",
                        name,
                        wait_s,
                        error.diag.message_detail or error.diag.message_primary,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
    finally:
        conn.remove_notice_handler(note)


def refresh_aggregates(
    conn: psycopg.Connection,
    *,
    through: datetime | None = None,
    catch_up: bool = False,
    wait_s: float = REFRESH_WAIT_S,
) -> int:
    """Materialise the continuous aggregates inside raw retention; return how many changed.

    The window of each aggregate starts just inside raw retention (older raw rows may be gone)
    and ends at the start of its bucket open at ``through`` (default and at most: now), so the
    open buckets stay computed in real time. Only invalidated ranges (late, out-of-order or
    redelivered readings; ranges a late-running policy skipped) and buckets not yet
    materialised are recomputed, so a wide window costs little when little changed.

    With ``catch_up`` the window ends where the aggregate's refresh policy window starts, so
    routine catch-up does not collide with the policies: they keep the newest buckets, this
    keeps everything older (and waits for a policy job still running an older window).
    Needs an autocommit connection.
    """
    retention, policy_starts = _configured(conn)
    options = SINGLE_PASS if _refresh_takes_options(conn) else None
    refreshed = 0
    for name, width in BUCKET_WIDTH.items():
        # With catch_up, the end is the policy window's start rounded up to a bucket: every
        # policy run that started earlier began at or before it (no gap between them), and
        # none starting later overlaps it.
        row = conn.execute(
            sql.SQL("SELECT now() - %s::interval + %s::interval, {}, {}").format(
                sql.SQL(BUCKETS[name].format(t="least(%s::timestamptz, now())")),
                sql.SQL(BUCKETS[name].format(t="now() - %s::interval + %s::interval")),
            ),
            [
                retention,
                RETENTION_MARGIN,
                through,
                policy_starts.get(name),
                width - timedelta(microseconds=1),
            ],
        ).fetchone()
        assert row is not None
        start, open_start, policy_window_start = row
        end = policy_window_start if catch_up and policy_window_start is not None else open_start
        if start is not None and end - start < 2 * width:
            continue  # nothing inside retention to refresh
        refreshed += _refresh(conn, name, start, end, wait_s, options)
    return refreshed


def _refresh_takes_options(conn: psycopg.Connection) -> bool:
    """Whether refresh_continuous_aggregate has the ``options`` argument (2.28 and later)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_proc "
        "WHERE proname = 'refresh_continuous_aggregate' AND 'options' = ANY(proargnames))"
    ).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True, slots=True)
class Job:
    """One TimescaleDB background job and how its runs went."""

    job_id: int
    proc_name: str
    target: str | None
    schedule: timedelta
    job_status: str | None
    last_run_started_at: datetime | None
    last_run_status: str | None
    next_start: datetime | None
    total_runs: int
    total_failures: int
    last_error: str | None

    @property
    def failing(self) -> bool:
        return self.last_run_status == "Failed"


def jobs(conn: psycopg.Connection) -> list[Job]:
    """Every job of the database, the extension's own housekeeping included."""
    rows = conn.execute(
        """
        SELECT j.job_id, j.proc_name, j.hypertable_name, j.schedule_interval, s.job_status,
               CASE WHEN isfinite(s.last_run_started_at) THEN s.last_run_started_at END,
               s.last_run_status, CASE WHEN isfinite(s.next_start) THEN s.next_start END,
               coalesce(s.total_runs, 0), coalesce(s.total_failures, 0),
               (SELECT e.err_message FROM timescaledb_information.job_errors e
                WHERE e.job_id = j.job_id ORDER BY e.start_time DESC NULLS LAST LIMIT 1)
        FROM timescaledb_information.jobs j
        LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
        ORDER BY j.job_id
        """
    ).fetchall()
    return [Job(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class Compression:
    chunks: int
    compressed_chunks: int
    bytes_before: int | None
    bytes_after: int | None

    @property
    def ratio(self) -> float | None:
        """Bytes before over bytes after compression, of the compressed chunks."""
        if not self.bytes_before or not self.bytes_after:
            return None
        return self.bytes_before / self.bytes_after


def compression(conn: psycopg.Connection) -> Compression:
    row = conn.execute(
        "SELECT coalesce(sum(total_chunks), 0), coalesce(sum(number_compressed_chunks), 0), "
        "sum(before_compression_total_bytes), sum(after_compression_total_bytes) "
        "FROM hypertable_columnstore_stats('readings')"
    ).fetchone()
    assert row is not None
    return Compression(int(row[0]), int(row[1]), row[2], row[3])


def watermarks(conn: psycopg.Connection) -> dict[str, datetime | None]:
    """Each aggregate's watermark: materialised below it, computed in real time from it on."""
    rows = conn.execute(
        """
        SELECT user_view_name, CASE WHEN mark >= '0001-01-01 00:00+00' THEN mark END
        FROM _timescaledb_catalog.continuous_agg,
             _timescaledb_functions.to_timestamp(
                 _timescaledb_functions.cagg_watermark(mat_hypertable_id)) AS mark
        WHERE user_view_schema = current_schema()
        """
    ).fetchall()
    # NULL: nothing materialised yet (the watermark is the lowest time there is).
    marks: dict[str, datetime | None] = dict(rows)
    return {name: marks[name] for name in AGGREGATES if name in marks}


def chunk_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM show_chunks('readings')").fetchone()
    return int(row[0]) if row else 0
