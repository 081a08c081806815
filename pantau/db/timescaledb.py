"""Everything TimescaleDB-specific, in one place.

Requires TimescaleDB 2.13 or newer (``by_range`` dimension builder) with the Community licence
(compression, retention and refresh policies, continuous aggregates). Readers see the same
names and columns as in plain PostgreSQL mode.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
from psycopg import sql

from pantau.db import READINGS_TABLE
from pantau.settings import StorageSettings

# Buckets of the continuous aggregates. Days are the city's local days (WIB): time_bucket with a
# time zone is allowed in continuous aggregates since TimescaleDB 2.8.
AGGREGATES = {
    "readings_1m": "time_bucket(INTERVAL '1 minute', time)",
    "readings_1h": "time_bucket(INTERVAL '1 hour', time)",
    "readings_1d": "time_bucket(INTERVAL '1 day', time, 'Asia/Jakarta')",
}
BUCKET_WIDTH = {
    "readings_1m": timedelta(minutes=1),
    "readings_1h": timedelta(hours=1),
    "readings_1d": timedelta(days=1),
}

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
    timescaledb.compress,
    timescaledb.compress_segmentby = 'sensor_id, metric',
    timescaledb.compress_orderby = 'time DESC'
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
    conn.execute("SELECT remove_compression_policy('readings', if_exists => true)")
    conn.execute(
        "SELECT add_compression_policy('readings', compress_after => %s::interval)",
        [storage.compress_after],
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


def refresh_aggregates(conn: psycopg.Connection) -> None:
    """Materialise every continuous aggregate over all time (tests, backfills).

    Needs an autocommit connection: refresh_continuous_aggregate cannot run in a transaction.
    """
    for name in AGGREGATES:
        conn.execute("CALL refresh_continuous_aggregate(%s::regclass, NULL, NULL)", [name])


def chunk_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM show_chunks('readings')").fetchone()
    return int(row[0]) if row else 0
