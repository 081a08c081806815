"""Plain PostgreSQL mode: partitions made ahead, retention by dropping them, strays moved."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import psycopg

from pantau.db.migrate import maintain, migrate
from pantau.db.store import prepare, store
from pantau.payload import Reading
from pantau.settings import StorageSettings

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
        store(conn, [Reading(t, "fg-welang-1", "water_level", 1.0) for t in times])


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
        again = store(conn, [Reading(far, "fg-welang-1", "water_level", 1.0)])
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
        for table in ("readings_1m", "readings_1h", "readings_1d"):
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
