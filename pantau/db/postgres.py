"""Plain PostgreSQL storage: range partitions by time and refreshed rollups behind live views.

Readers see the same names as in TimescaleDB mode: ``readings`` and the rollups
``readings_1m``, ``readings_1h`` and ``readings_1d`` with identical columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from pantau.settings import StorageSettings


@dataclass(frozen=True, slots=True)
class Rollup:
    """One rollup level: its view, the table behind it, its bucket and what it is computed from."""

    name: str
    width: timedelta
    # The bucket of a timestamp expression ``{t}``, whatever the reading session's time zone.
    bucket: str
    # ``readings`` for the finest level; each coarser level combines the level below.
    source: str

    @property
    def table(self) -> str:
        return f"{self.name}_mat"

    @property
    def source_time(self) -> str:
        """The source's time column: raw readings have a time, finer rollups a bucket."""
        return "time" if self.source == READINGS else "bucket"

    def floor(self, expr: str) -> str:
        return self.bucket.format(t=expr)

    def aggregate(self, where: str) -> str:
        """The level's rows for the source rows matching ``where``, with the view's columns."""
        if self.source == READINGS:
            return _FROM_RAW.format(bucket=self.floor("time"), where=where)
        return _FROM_FINER.format(bucket=self.floor("bucket"), source=self.source, where=where)


READINGS = "readings"
ROLLUPS = (
    Rollup(name="readings_1m", width=timedelta(minutes=1), bucket="date_trunc('minute', {t}, 'UTC')",
           source=READINGS),
    Rollup(name="readings_1h", width=timedelta(hours=1), bucket="date_trunc('hour', {t}, 'UTC')",
           source="readings_1m"),
    # Days are local days of the city (WIB), as in TimescaleDB mode. WIB is a whole-hour offset
    # without daylight saving, so every hour bucket lies inside one local day.
    Rollup(name="readings_1d", width=timedelta(days=1),
           bucket="date_trunc('day', {t}, 'Asia/Jakarta')",
           source="readings_1h"),
)  # fmt: skip

# The last value is joined back by its key (sensor, metric, time), which is unique, instead of
# sorting every bucket's readings by time. The join side is bounded like the aggregate (``time``
# there is the joined reading's), so it never reads beyond the time range refreshed or shown.
_FROM_RAW = """SELECT g.bucket, g.sensor_id, g.metric, g.value_avg, g.value_min, g.value_max,
       g.value_count, r.value AS value_last, g.last_time
FROM (
    SELECT {bucket} AS bucket, sensor_id, metric,
           avg(value) AS value_avg, min(value) AS value_min, max(value) AS value_max,
           count(*) AS value_count, max(time) AS last_time
    FROM readings
    WHERE {where}
    GROUP BY 1, sensor_id, metric
) g
JOIN readings r ON r.sensor_id = g.sensor_id AND r.metric = g.metric AND r.time = g.last_time
WHERE {where}"""

# Combining the partials of the level below gives the same values as aggregating raw rows: the
# average is weighted by the counts, and the last value is the one with the newest time.
_FROM_FINER = """SELECT {bucket} AS bucket, sensor_id, metric,
       sum(value_avg * value_count) / sum(value_count) AS value_avg,
       min(value_min) AS value_min, max(value_max) AS value_max,
       sum(value_count)::bigint AS value_count,
       (array_agg(value_last ORDER BY last_time DESC))[1] AS value_last,
       max(last_time) AS last_time
FROM {source}
WHERE {where}
GROUP BY 1, sensor_id, metric"""

_COLUMNS = (
    "bucket, sensor_id, metric, value_avg, value_min, value_max, value_count, value_last, last_time"
)


def _watermark(name: str) -> str:
    return f"coalesce((SELECT watermark FROM rollup_watermarks WHERE name = '{name}'), '-infinity')"


def refreshed_rollups_sql() -> str:
    """DDL turning the trigger-kept rollup tables into refreshed rollups behind live views.

    Like TimescaleDB's real-time continuous aggregates: each rollup is a view over a table
    materialised up to a watermark by :func:`refresh`, joined with the newer buckets computed on
    the fly from the level below. Writers only note which time ranges they touched.
    """
    parts = [
        "DROP TRIGGER readings_rollup ON readings;",
        "DROP FUNCTION pantau_rollup_readings();",
        # NULL: nothing materialised yet; refresh materialises everything up to now.
        "CREATE TABLE rollup_watermarks (name text PRIMARY KEY, watermark timestamptz);",
        "CREATE TABLE rollup_invalidations (lo timestamptz NOT NULL, hi timestamptz NOT NULL);",
    ]
    for rollup in ROLLUPS:
        # The trigger kept every bucket current until now: materialised up to the open bucket.
        # Empty, nothing is materialised yet and the view computes everything, as a new
        # continuous aggregate does.
        parts += [
            f"ALTER TABLE {rollup.name} RENAME TO {rollup.table};",
            f"ALTER INDEX {rollup.name}_bucket RENAME TO {rollup.table}_bucket;",
            f"INSERT INTO rollup_watermarks SELECT '{rollup.name}', CASE WHEN EXISTS "
            f"(SELECT 1 FROM {rollup.table}) THEN {rollup.floor('now()')} END;",
            f"CREATE VIEW {rollup.name} AS\n"
            f"SELECT {_COLUMNS} FROM {rollup.table}\nWHERE bucket < {_watermark(rollup.name)}\n"
            f"UNION ALL\n"
            + rollup.aggregate(f"{rollup.source_time} >= {_watermark(rollup.name)}")
            + ";",
        ]
    parts.append(_NOTE_RANGES)
    return "\n".join(parts)


# One row per statement and hour touched: a batch of current readings notes one range, and a
# late reading among them notes its own instead of widening one range over everything between.
_NOTE_RANGES = """
CREATE FUNCTION pantau_note_readings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_invalidations (lo, hi)
    SELECT min(time), max(time) FROM new_rows GROUP BY date_trunc('hour', time, 'UTC');
    RETURN NULL;
END
$$;
-- Statement-level with a transition table: one cheap insert per batch, not one per reading.
CREATE TRIGGER readings_note AFTER INSERT ON readings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pantau_note_readings();
"""


def refresh(conn: psycopg.Connection, now: datetime) -> int:
    """Materialise every rollup up to the bucket open at ``now``; return the rows written.

    Recomputes the buckets between the old and the new watermark, and every older bucket whose
    time range writers noted since the last refresh (late or redelivered readings). Runs in the
    caller's transaction; the caller holds the maintenance lock. A range noted by a transaction
    that commits during the refresh is picked up by the next one.
    """
    # Bucket arithmetic (a day later) must not follow a session zone's daylight saving.
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    noted = conn.execute("DELETE FROM rollup_invalidations RETURNING lo, hi").fetchall()
    horizon = _raw_horizon(conn)
    written = 0
    for rollup in ROLLUPS:
        row = conn.execute(
            f"SELECT watermark, {rollup.floor('%s::timestamptz')} FROM rollup_watermarks "
            "WHERE name = %s FOR UPDATE",
            [now, rollup.name],
        ).fetchone()
        assert row is not None, rollup.name
        old, new = row
        # A refresh for an earlier clock (a test, a skewed host) never moves a watermark back.
        mark = new if old is None else max(old, new)
        spans: list[tuple[datetime | None, datetime]] = []
        if old is None or mark > old:
            spans.append((old, mark))
        if noted:
            aligned = conn.execute(
                f"SELECT {rollup.floor('lo')}, {rollup.floor('hi')} + %s "
                "FROM unnest(%s::timestamptz[], %s::timestamptz[]) AS n(lo, hi)",
                [rollup.width, [lo for lo, _ in noted], [hi for _, hi in noted]],
            ).fetchall()
            # Newer buckets are still computed live by the view.
            if rollup.source == READINGS and horizon is not None:
                # Raw rows older than the oldest partition are gone (or a very late reading
                # bound for deletion): recomputing those buckets would erase them.
                aligned = [(max(lo, _ceil(horizon, rollup.width)), hi) for lo, hi in aligned]
            spans += [(lo, min(hi, mark)) for lo, hi in aligned if lo < min(hi, mark)]
        for lo, hi in _merge(spans):
            bounds = {"lo": lo, "hi": hi}
            conn.execute(f"DELETE FROM {rollup.table} WHERE {_within('bucket', lo)}", bounds)
            cur = conn.execute(
                f"INSERT INTO {rollup.table} ({_COLUMNS}) "
                + rollup.aggregate(_within(rollup.source_time, lo)),
                bounds,
            )
            written += cur.rowcount
        conn.execute(
            "UPDATE rollup_watermarks SET watermark = %s WHERE name = %s", [mark, rollup.name]
        )
    return written


def _within(column: str, lo: datetime | None) -> str:
    return f"{column} < %(hi)s" + ("" if lo is None else f" AND {column} >= %(lo)s")


def _merge(
    spans: list[tuple[datetime | None, datetime]],
) -> list[tuple[datetime | None, datetime]]:
    """Overlapping or touching ``[lo, hi)`` spans joined; None is an open lower end."""
    merged: list[tuple[datetime | None, datetime]] = []
    for lo, hi in sorted(spans, key=lambda s: (s[0] is not None, s[0] or s[1])):
        if merged and (lo is None or lo <= merged[-1][1]):
            start, end = merged[-1]
            merged[-1] = (start, max(end, hi))
        else:
            merged.append((lo, hi))
    return merged


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


def _ceil(moment: datetime, step: timedelta) -> datetime:
    floor = _floor(moment, step)
    return floor if floor == moment else floor + step


def _raw_horizon(conn: psycopg.Connection) -> datetime | None:
    """Where complete raw readings begin: the oldest partition's lower bound (None: none)."""
    return min((lower for lower, _ in _partitions(conn).values()), default=None)


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


def maintain(
    conn: psycopg.Connection,
    storage: StorageSettings,
    now: datetime,
    *,
    rollups: bool = True,
    partitions: bool = True,
) -> dict[str, int]:
    """Refresh the rollups, make partitions ahead and apply retention (each can be left out).

    Runs in the caller's transaction; the caller holds the maintenance lock. The rollups are
    refreshed first, so readings are materialised before their partition is dropped.
    """
    done = {"rollup_rows": refresh(conn, now)} if rollups else {}
    if not partitions:
        return done
    step = storage.chunk_interval
    existing = _partitions(conn)
    first = _floor(now - storage.raw_retention, step)
    last = _floor(now, step) + step * storage.premake_partitions
    created = 0
    lower = first
    while lower <= last:
        upper = lower + step
        if not any(lo < upper and lower < hi for lo, hi in existing.values()):
            _create_partition(conn, lower, upper)
            created += 1
        lower = upper
    # As the owner of `readings`, whoever calls (see migration 10).
    row = conn.execute(
        "SELECT pantau_drop_readings_before(%s)", [now - storage.raw_retention]
    ).fetchone()
    dropped = int(row[0]) if row else 0
    for rollup in ROLLUPS:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE bucket < %s").format(sql.Identifier(rollup.table)),
            [now - storage.rollup_retention[rollup.name]],
        )
    return done | {"partitions_created": created, "partitions_dropped": dropped}


def _create_partition(conn: psycopg.Connection, lower: datetime, upper: datetime) -> None:
    # Named readings_pYYYYMMDD_HHMM (UTC) after its lower bound; rows of the range waiting in
    # the default partition move into it. As the owner of `readings`, whoever calls
    # (migration 10).
    conn.execute("SELECT pantau_create_readings_partition(%s, %s)", [lower, upper])


def partition_count(conn: psycopg.Connection) -> int:
    return len(_partitions(conn))


def watermarks(conn: psycopg.Connection) -> dict[str, datetime | None]:
    """Each rollup's watermark: materialised below it, computed on the fly from it on."""
    rows = conn.execute("SELECT name, watermark FROM rollup_watermarks").fetchall()
    return dict(rows)
