"""Plain PostgreSQL mode: partitions made ahead, retention by dropping them, strays moved."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import psycopg

from pantau.db import postgres
from pantau.db.migrate import MIGRATIONS, Mode, maintain, migrate
from pantau.db.store import prepare, store
from pantau.payload import Reading
from pantau.settings import StorageSettings

VIEWS = tuple(rollup.name for rollup in postgres.ROLLUPS)

_PARTITIONS = r"""
SELECT c.relname,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'readings'::regclass AND c.relname <> 'readings_default'
ORDER BY 2
"""


def _partitions(url: str) -> list[tuple[str, datetime, datetime]]:
    with psycopg.connect(url) as conn:
        return [(name, lo, hi) for name, lo, hi in conn.execute(_PARTITIONS)]


def _where(conn: psycopg.Connection, when: datetime) -> list[str]:
    """The partitions holding readings at ``when``."""
    rows = conn.execute(
        "SELECT tableoid::regclass::text FROM readings WHERE time = %s", [when]
    ).fetchall()
    return [name for (name,) in rows]


def _store_at(url: str, *times: datetime) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        prepare(conn)
        store(conn, [Reading.at(t, "fg-welang-1", "water_level", 1.0) for t in times])


def _day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def test_partitions_cover_retention_and_days_ahead(
    postgres_db: str, storage: StorageSettings
) -> None:
    now = datetime.now(UTC)
    parts = _partitions(postgres_db)
    assert parts, "no partitions after migrate"
    # Contiguous, one chunk wide, from the retention horizon to `premake_partitions` ahead.
    for (_, _, upper), (_, lower, _) in itertools.pairwise(parts):
        assert upper == lower
    assert {hi - lo for _, lo, hi in parts} == {storage.chunk_interval}
    assert parts[0][1] <= now - storage.raw_retention
    assert parts[-1][2] >= _day(now) + storage.chunk_interval * (storage.premake_partitions + 1)


def test_readings_land_in_their_partition(
    postgres_db: str, storage: StorageSettings, city_db: str
) -> None:
    now = datetime.now(UTC)
    ahead = _day(now) + storage.chunk_interval * storage.premake_partitions + timedelta(hours=1)
    _store_at(postgres_db, now - timedelta(hours=1), ahead)
    with psycopg.connect(postgres_db) as conn:
        for when in (now - timedelta(hours=1), ahead):
            (partition,) = _where(conn, when)
            assert partition.startswith("readings_p"), partition
        assert conn.execute("SELECT count(*) FROM readings_default").fetchone() == (0,)


def test_maintain_drops_old_partitions_and_makes_new_ones(
    postgres_db: str, storage: StorageSettings, city_db: str
) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=2)
    recent = _day(now) + storage.chunk_interval * storage.premake_partitions + timedelta(hours=1)
    _store_at(postgres_db, old, recent)
    before = _partitions(postgres_db)
    later = now + storage.raw_retention + timedelta(days=1)
    done = maintain(postgres_db, storage, now=later)
    assert done is not None
    after = _partitions(postgres_db)
    cutoff = later - storage.raw_retention
    assert all(hi > cutoff for _, _, hi in after)
    dropped = [p for p in before if p[2] <= cutoff]
    assert dropped
    assert done["partitions_dropped"] == len(dropped)
    assert done["partitions_created"] == len(set(after) - set(before)) > 0
    assert after[-1][2] >= _day(later) + storage.chunk_interval * (storage.premake_partitions + 1)
    with psycopg.connect(postgres_db) as conn:
        # The old reading went with its partition; the newer one is kept.
        assert _where(conn, old) == []
        assert len(_where(conn, recent)) == 1
        names = {name for (name,) in conn.execute("SELECT relname FROM pg_class")}
    assert not names & {name for name, _, _ in dropped}
    # Running it again changes nothing.
    assert maintain(postgres_db, storage, now=later) == {
        "rollup_rows": 0,
        "partitions_created": 0,
        "partitions_dropped": 0,
    }


def test_stray_row_is_moved_out_of_the_default_partition(
    postgres_db: str, storage: StorageSettings, city_db: str
) -> None:
    now = datetime.now(UTC)
    far = now + timedelta(days=30)
    _store_at(postgres_db, far)
    with psycopg.connect(postgres_db) as conn:
        assert _where(conn, far) == ["readings_default"]
    maintain(postgres_db, storage, now=far)
    with psycopg.connect(postgres_db) as conn:
        (partition,) = _where(conn, far)
        assert partition.startswith("readings_p")
        assert conn.execute("SELECT count(*) FROM readings_default").fetchone() == (0,)
        # The moved row is still unique: storing it again is a duplicate.
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        prepare(conn)
        again = store(conn, [Reading.at(far, "fg-welang-1", "water_level", 1.0)])
    assert again.duplicates == 1


def test_rollups_outlive_raw_readings(
    postgres_db: str, storage: StorageSettings, city_db: str
) -> None:
    now = datetime.now(UTC)
    when = now - timedelta(hours=1)
    _store_at(postgres_db, when)
    maintain(postgres_db, storage, now=now + timedelta(days=30))
    with psycopg.connect(postgres_db) as conn:
        assert _where(conn, when) == []
        for table in VIEWS:
            row = conn.execute(f"SELECT sum(value_count) FROM {table}").fetchone()
            assert row == (1,), table
    # Past the 1-minute rollup's retention, its rows go; the longer rollups stay.
    maintain(postgres_db, storage, now=now + storage.retention_1m + timedelta(days=1))
    with psycopg.connect(postgres_db) as conn:
        assert conn.execute("SELECT count(*) FROM readings_1m").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM readings_1h").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM readings_1d").fetchone() == (1,)


def test_migrate_makes_partitions_for_its_clock(empty_db: str, storage: StorageSettings) -> None:
    storage = storage.model_copy(update={"mode": "postgres"})
    then = datetime(2030, 1, 15, 12, tzinfo=UTC)
    migrate(empty_db, storage, now=then)
    parts = _partitions(empty_db)
    assert parts[0][1] <= then - storage.raw_retention
    assert parts[-1][2] >= _day(then) + storage.chunk_interval * (storage.premake_partitions + 1)


_ROLLUP_ROWS = (
    "SELECT bucket, sensor_id, metric, value_avg, value_min, value_max, value_count, value_last, "
    "last_time FROM {} ORDER BY 1, 2, 3"
)


def _rows(url: str, table: str, time_zone: str = "UTC") -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('TimeZone', %s, false)", [time_zone])
        return conn.execute(_ROLLUP_ROWS.format(table)).fetchall()


def _refresh(url: str, storage: StorageSettings, now: datetime) -> int:
    done = maintain(url, storage, now=now, partitions=False)
    assert done is not None
    return done["rollup_rows"]


def test_rollups_are_live_before_refresh_and_the_same_after(
    postgres_db: str, storage: StorageSettings, city_db: str
) -> None:
    # Nothing is materialised yet: the view computes every bucket live.
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=2)
    times = [now + timedelta(minutes=m, seconds=s) for m in (0, 1, 70) for s in (0, 10)]
    _store_at(postgres_db, *times)
    live = {t: _rows(postgres_db, t) for t in VIEWS}
    assert sum(int(row[6]) for row in live["readings_1m"]) == len(times)  # type: ignore[call-overload]
    assert len(live["readings_1m"]) == 3
    assert _rows(postgres_db, "readings_1m_mat") == []
    # Materialised up to the open bucket at the refresh's clock: every bucket here is closed.
    later = now + timedelta(days=2)
    assert _refresh(postgres_db, storage, later) > 0
    for table, rows in live.items():
        assert _rows(postgres_db, f"{table}_mat") == rows, table
        assert _rows(postgres_db, table) == rows, table
    assert _refresh(postgres_db, storage, later) == 0


def test_late_readings_note_their_hours_and_are_refreshed(
    postgres_db: str, storage: StorageSettings, city_db: str
) -> None:
    # Mid-minute: the current readings a second or two before the clock stay in its open minute
    # (above the watermark) whatever the second the test starts at.
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    _store_at(postgres_db, now - timedelta(hours=2))
    _refresh(postgres_db, storage, now)
    late = now - timedelta(hours=5)
    # One batch: a late reading and current ones note two ranges, not one spanning five hours.
    _store_at(postgres_db, late, now - timedelta(seconds=2), now - timedelta(seconds=1))
    with psycopg.connect(postgres_db) as conn:
        noted = conn.execute("SELECT lo, hi FROM rollup_invalidations ORDER BY lo").fetchall()
    assert noted == [(late, late), (now - timedelta(seconds=2), now - timedelta(seconds=1))]
    # Below the watermark the late reading waits for the refresh, as in TimescaleDB.
    assert sum(int(r[6]) for r in _rows(postgres_db, "readings_1h")) == 3  # type: ignore[call-overload]
    _refresh(postgres_db, storage, now)
    assert sum(int(r[6]) for r in _rows(postgres_db, "readings_1h")) == 4  # type: ignore[call-overload]
    with psycopg.connect(postgres_db) as conn:
        assert conn.execute("SELECT count(*) FROM rollup_invalidations").fetchone() == (0,)


def test_reading_committed_during_a_refresh_is_picked_up_by_the_next(
    postgres_db: str, storage: StorageSettings, city_db: str
) -> None:
    when = datetime.now(UTC) - timedelta(seconds=5)
    with psycopg.connect(postgres_db) as writer:
        prepare(writer)
        # Stored but not committed while the refresh moves the watermark past it.
        store(writer, [Reading.at(when, "fg-welang-1", "water_level", 7.0)])
        _refresh(postgres_db, storage, when + timedelta(hours=1))
        writer.commit()
    assert _rows(postgres_db, "readings_1m") == []
    _refresh(postgres_db, storage, when + timedelta(hours=1))
    (row,) = _rows(postgres_db, "readings_1m")
    assert row[6:8] == (1, 7.0)


def test_rollup_buckets_ignore_the_session_time_zone(
    postgres_db: str, storage: StorageSettings, city_db: str
) -> None:
    now = datetime.now(UTC)
    _store_at(postgres_db, now + timedelta(minutes=3), now + timedelta(hours=30))
    # Half-hour offset: buckets by local hour would start at :30 UTC. Computed live, then
    # materialised.
    for clock in (now, now + timedelta(days=3)):
        _refresh(postgres_db, storage, clock)
        for table in VIEWS:
            kolkata = _rows(postgres_db, table, "Asia/Kolkata")
            assert len(kolkata) == 2, table
            assert kolkata == _rows(postgres_db, table), table
            if table != "readings_1m":
                minutes = {row[0].astimezone(UTC).minute for row in kolkata}  # type: ignore[attr-defined]
                assert minutes == {0}, table


def test_refresh_ignores_daylight_saving_of_the_session(
    postgres_db: str, storage: StorageSettings, city_db: str
) -> None:
    # New York moves its clocks on 8 March 2026 at 07:00 UTC; the WIB day from 7 March 17:00 UTC
    # to 8 March 17:00 UTC spans it, so "one day later" in that zone is 23 hours.
    day = datetime(2026, 3, 7, 17, tzinfo=UTC)
    _store_at(postgres_db, day + timedelta(hours=2), day + timedelta(hours=23, minutes=30))
    with psycopg.connect(postgres_db) as conn:
        conn.execute("SET TimeZone = 'America/New_York'")
        postgres.refresh(conn, day + timedelta(days=3))
        conn.commit()
    (row,) = _rows(postgres_db, "readings_1d_mat")
    assert (row[0], row[6]) == (day, 2)


def test_migration_keeps_rollups_kept_by_the_old_trigger(
    empty_db: str, storage: StorageSettings
) -> None:
    storage = storage.model_copy(update={"mode": "postgres"})
    now = datetime.now(UTC)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now());"
            "CREATE TABLE pantau_meta (key text PRIMARY KEY, value text NOT NULL);"
            "INSERT INTO pantau_meta VALUES ('storage_mode', 'postgres')"
        )
        for migration in MIGRATIONS[:2]:
            conn.execute(migration.statements(Mode.POSTGRES, storage))  # type: ignore[arg-type]
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                [migration.version, migration.name],
            )
    # Readings need no registry; the city's tables take the shape of later migrations.
    _store_at(empty_db, now - timedelta(hours=3), now - timedelta(hours=3, seconds=-5), now)
    before = {t: _rows(empty_db, t) for t in VIEWS}
    assert sum(int(r[6]) for r in before["readings_1h"]) == 3  # type: ignore[call-overload]
    assert migrate(empty_db, storage).applied == tuple(m.version for m in MIGRATIONS[2:])
    for table, rows in before.items():
        assert _rows(empty_db, table) == rows, table
    _store_at(empty_db, now - timedelta(hours=3, seconds=-10))
    _refresh(empty_db, storage, now + timedelta(days=1))
    assert sum(int(r[6]) for r in _rows(empty_db, "readings_1d_mat")) == 4  # type: ignore[call-overload]


def test_reading_older_than_raw_retention_leaves_the_rollups_alone(
    postgres_db: str, storage: StorageSettings
) -> None:
    now = datetime.now(UTC)
    when = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    _store_at(postgres_db, when, when + timedelta(seconds=20), when + timedelta(seconds=40))
    later = now + storage.raw_retention + timedelta(days=2)
    maintain(postgres_db, storage, now=later)  # materialised, then the raw partition dropped
    kept = {t: _rows(postgres_db, t) for t in VIEWS}
    assert [row[6] for row in kept["readings_1m"]] == [3]
    # A reading of that long-gone minute arrives: it lands in the default partition, is noted,
    # and the next maintenance deletes it. Recomputing its minute from raw rows would erase
    # the three readings the rollups keep.
    _store_at(postgres_db, when + timedelta(seconds=50))
    with psycopg.connect(postgres_db) as conn:
        assert _where(conn, when + timedelta(seconds=50)) == ["readings_default"]
    _refresh(postgres_db, storage, later)
    maintain(postgres_db, storage, now=later)
    for table, rows in kept.items():
        assert _rows(postgres_db, table) == rows, table
