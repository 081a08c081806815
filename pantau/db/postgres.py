"""Plain PostgreSQL storage: range partitions by time and incrementally kept rollup tables.

Readers see the same names as in TimescaleDB mode: ``readings`` and the rollups
``readings_1m``, ``readings_1h`` and ``readings_1d`` with identical columns.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from pantau.db import READINGS_TABLE
from pantau.settings import StorageSettings

# Rollup name, its bucket expression, and the finer partials it is computed from.
ROLLUPS = {
    "readings_1m": "date_trunc('minute', b)",
    "readings_1h": "date_trunc('hour', b)",
    # Days are local days of the city (WIB), as in TimescaleDB mode. WIB is a whole-hour offset,
    # so every hour bucket lies inside one local day.
    "readings_1d": "(date_trunc('day', b AT TIME ZONE 'Asia/Jakarta') AT TIME ZONE 'Asia/Jakarta')",
}

_ROLLUP_TABLE = """
CREATE TABLE {name} (
    bucket      timestamptz NOT NULL,
    sensor_id   text COLLATE "C" NOT NULL,
    metric      text COLLATE "C" NOT NULL,
    value_avg   double precision NOT NULL,
    value_min   double precision NOT NULL,
    value_max   double precision NOT NULL,
    value_count bigint NOT NULL,
    value_last  double precision NOT NULL,
    last_time   timestamptz NOT NULL,
    PRIMARY KEY (sensor_id, metric, bucket)
);
CREATE INDEX {name}_bucket ON {name} (bucket);
"""

# Partials of one rollup level (sum, count, min, max, last) computed from the level below: the
# rows a statement inserted are scanned once, for minutes; hours and days combine minutes.
_PARTIALS = """
    {name}_part AS (
        SELECT {bucket} AS b, sensor_id, metric, sum(s) AS s, sum(n) AS n, min(lo) AS lo,
               max(hi) AS hi, (array_agg(last ORDER BY lt DESC))[1] AS last, max(lt) AS lt
        FROM {source}
        GROUP BY 1, sensor_id, metric
    ),"""

# Merge partials into a rollup, in key order so that concurrent writers lock rollup rows in the
# same order and cannot deadlock.
_MERGE = """
        INSERT INTO {name} AS r (bucket, sensor_id, metric, value_avg, value_min, value_max,
                                 value_count, value_last, last_time)
        SELECT b, sensor_id, metric, s / n, lo, hi, n, last, lt
        FROM {name}_part
        ORDER BY sensor_id, metric, b
        ON CONFLICT (sensor_id, metric, bucket) DO UPDATE SET
            value_avg = (r.value_avg * r.value_count + EXCLUDED.value_avg * EXCLUDED.value_count)
                        / (r.value_count + EXCLUDED.value_count),
            value_min = least(r.value_min, EXCLUDED.value_min),
            value_max = greatest(r.value_max, EXCLUDED.value_max),
            value_count = r.value_count + EXCLUDED.value_count,
            value_last = CASE WHEN EXCLUDED.last_time >= r.last_time
                              THEN EXCLUDED.value_last ELSE r.value_last END,
            last_time = greatest(r.last_time, EXCLUDED.last_time)"""


def _rollup_statement() -> str:
    """One statement merging the inserted rows into every rollup (data-modifying CTEs)."""
    ctes = [
        "raw AS (SELECT time AS b, sensor_id, metric, value AS s, 1 AS n, value AS lo, "
        "value AS hi, value AS last, time AS lt FROM new_rows)"
    ]
    source = "raw"
    for name, bucket in ROLLUPS.items():
        ctes.append(_PARTIALS.format(name=name, bucket=bucket, source=source).strip().rstrip(","))
        source = f"{name}_part"
    *inner, last = list(ROLLUPS)
    ctes += [f"{name}_merge AS ({_MERGE.format(name=name)})" for name in inner]
    return "WITH " + ",\n".join(ctes) + _MERGE.format(name=last) + ";"


def schema_sql() -> str:
    """DDL of the readings table, its default partition and the rollups with their trigger."""
    tables = "".join(_ROLLUP_TABLE.format(name=n) for n in ROLLUPS)
    return f"""{READINGS_TABLE} PARTITION BY RANGE (time);
CREATE UNIQUE INDEX readings_key ON readings (sensor_id, metric, time);
CREATE INDEX readings_time ON readings USING brin (time);
-- Catches anything outside the partitions made ahead; maintenance moves it out again.
CREATE TABLE readings_default PARTITION OF readings DEFAULT;
{tables}
CREATE FUNCTION pantau_rollup_readings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{_rollup_statement()}
    RETURN NULL;
END
$$;
-- Statement-level with a transition table: only rows the statement really inserted reach the
-- rollups, so a redelivered reading (ON CONFLICT DO NOTHING) is never counted twice, and a
-- late reading lands in its own (older) bucket.
CREATE TRIGGER readings_rollup AFTER INSERT ON readings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pantau_rollup_readings();
"""


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


def partition_name(lower: datetime) -> str:
    return "readings_p" + lower.astimezone(UTC).strftime("%Y%m%d_%H%M")


def _partitions(conn: psycopg.Connection) -> dict[str, tuple[datetime, datetime]]:
    rows = conn.execute(
        r"""
        SELECT name, bounds[1]::timestamptz, bounds[2]::timestamptz
        FROM (
            SELECT c.relname AS name,
                   regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS bounds
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'readings'::regclass
        ) p
        WHERE bounds IS NOT NULL
        """
    ).fetchall()
    return {name: (lower, upper) for name, lower, upper in rows}


def maintain(conn: psycopg.Connection, storage: StorageSettings, now: datetime) -> dict[str, int]:
    """Create partitions ahead, drop those past retention, trim rollups and rejections.

    Runs in the caller's transaction; the caller holds the maintenance lock.
    """
    step = storage.chunk_interval
    existing = _partitions(conn)
    first = _floor(now - storage.raw_retention, step)
    last = _floor(now, step) + step * storage.premake_partitions
    created = dropped = 0
    lower = first
    while lower <= last:
        upper = lower + step
        if not any(lo < upper and lower < hi for lo, hi in existing.values()):
            _create_partition(conn, lower, upper)
            created += 1
        lower = upper
    cutoff = now - storage.raw_retention
    for name, (_, upper) in existing.items():
        if upper <= cutoff:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            dropped += 1
    conn.execute("DELETE FROM readings_default WHERE time < %s", [cutoff])
    for name, keep in (
        ("readings_1m", storage.retention_1m),
        ("readings_1h", storage.retention_1h),
        ("readings_1d", storage.retention_1d),
    ):
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE bucket < %s").format(sql.Identifier(name)), [now - keep]
        )
    return {"partitions_created": created, "partitions_dropped": dropped}


def _create_partition(conn: psycopg.Connection, lower: datetime, upper: datetime) -> None:
    name = sql.Identifier(partition_name(lower))
    stray = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM readings_default WHERE time >= %s AND time < %s)",
        [lower, upper],
    ).fetchone()
    if stray and stray[0]:
        # Rows for this range sit in the default partition: move them into the new table
        # before attaching it, or PostgreSQL refuses the partition.
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE readings INCLUDING DEFAULTS)").format(name))
        conn.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM readings_default WHERE time >= %s AND time < %s "
                "RETURNING *) INSERT INTO {} SELECT * FROM moved"
            ).format(name),
            [lower, upper],
        )
        conn.execute(
            sql.SQL("ALTER TABLE readings ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                name, sql.Literal(lower), sql.Literal(upper)
            )
        )
    else:
        conn.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF readings FOR VALUES FROM ({}) TO ({})").format(
                name, sql.Literal(lower), sql.Literal(upper)
            )
        )


def partition_count(conn: psycopg.Connection) -> int:
    return len(_partitions(conn))
