"""The write path: idempotent readings, latest values by observation time, rollups, rejections."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.copy import FileWriter

from pantau.db.migrate import refresh_rollups
from pantau.db.store import (
    RejectedPayload,
    StagedReadings,
    StoreResult,
    message_digest,
    prepare,
    store,
)
from pantau.payload import Reading, Reason, Rejection

ROLLUPS = ("readings_1m", "readings_1h", "readings_1d")


def _hour_ago(hours: int = 3) -> datetime:
    """The start of an hour a few hours back: well inside retention, one bucket in every rollup."""
    return (datetime.now(UTC) - timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)


def _count(conn: psycopg.Connection, query: str, *params: object) -> int:
    row = conn.execute(query, list(params)).fetchone()
    assert row is not None
    return int(row[0])


def test_store_inserts_readings(conn: psycopg.Connection) -> None:
    prepare(conn)
    start = _hour_ago()
    batch = [
        Reading.at(start, "fg-welang-1", "water_level", 1.25),
        Reading.at(start, "fg-welang-1", "rainfall", 0.5, True),
        Reading.at(start, "tc-bangil-1", "count_motorcycle", 412.0),
    ]
    result = store(conn, batch)
    assert result == StoreResult(staged=3, inserted=3, rejected=0)
    assert result.duplicates == 0
    rows = conn.execute(
        "SELECT time, sensor_id, metric, value, time_estimated FROM readings "
        "ORDER BY sensor_id, metric"
    ).fetchall()
    assert rows == [
        (start, "fg-welang-1", "rainfall", 0.5, True),
        (start, "fg-welang-1", "water_level", 1.25, False),
        (start, "tc-bangil-1", "count_motorcycle", 412.0, False),
    ]


def test_duplicates_are_stored_once(conn: psycopg.Connection, city_db: str) -> None:
    prepare(conn)
    start = _hour_ago()
    reading = Reading.at(start, "fg-welang-1", "water_level", 1.0)
    same_batch = [reading, reading, Reading.at(start + timedelta(minutes=1), *reading[1:])]
    first = store(conn, same_batch)
    assert (first.staged, first.inserted, first.duplicates) == (3, 2, 1)
    # The whole batch again, as after a redelivery: nothing new, every row a duplicate.
    again = store(conn, same_batch)
    assert (again.staged, again.inserted, again.duplicates) == (3, 0, 3)
    # Same key with another value: the first stored value wins.
    changed = store(conn, [Reading.at(start, "fg-welang-1", "water_level", 9.0)])
    assert changed.duplicates == 1
    assert _count(conn, "SELECT count(*) FROM readings") == 2
    assert _count(conn, "SELECT count(*) FROM readings WHERE value = 9.0") == 0
    refresh_rollups(city_db)
    for rollup in ROLLUPS:
        row = conn.execute(f"SELECT sum(value_count) FROM {rollup}").fetchone()
        assert row == (2,), rollup


def _latest(conn: psycopg.Connection, sensor: str, metric: str) -> tuple[datetime, float]:
    row = conn.execute(
        "SELECT time, value FROM latest_readings WHERE sensor_id = %s AND metric = %s",
        [sensor, metric],
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_latest_value_follows_observation_time(conn: psycopg.Connection) -> None:
    prepare(conn)
    start = _hour_ago()
    store(conn, [Reading.at(start + timedelta(minutes=10), "fg-welang-2", "water_level", 2.0)])
    assert _latest(conn, "fg-welang-2", "water_level") == (start + timedelta(minutes=10), 2.0)
    # A late reading (older observation, arriving later) must not replace the newer value.
    late = store(
        conn, [Reading.at(start + timedelta(minutes=5), "fg-welang-2", "water_level", 1.0)]
    )
    assert late.inserted == 1
    assert _latest(conn, "fg-welang-2", "water_level") == (start + timedelta(minutes=10), 2.0)
    # Within one batch the newest observation wins, whatever the order.
    store(
        conn,
        [
            Reading.at(start + timedelta(minutes=30), "fg-welang-2", "water_level", 3.0),
            Reading.at(start + timedelta(minutes=20), "fg-welang-2", "water_level", 2.5),
        ],
    )
    assert _latest(conn, "fg-welang-2", "water_level") == (start + timedelta(minutes=30), 3.0)
    # A redelivered older reading changes nothing either.
    store(conn, [Reading.at(start + timedelta(minutes=10), "fg-welang-2", "water_level", 2.0)])
    assert _latest(conn, "fg-welang-2", "water_level") == (start + timedelta(minutes=30), 3.0)
    assert _count(conn, "SELECT count(*) FROM latest_readings") == 1


def _rollup(
    conn: psycopg.Connection, table: str, sensor: str, metric: str
) -> tuple[tuple[float, float, float, int, float], datetime]:
    rows = conn.execute(
        f"SELECT value_avg, value_min, value_max, value_count, value_last, last_time "
        f"FROM {table} WHERE sensor_id = %s AND metric = %s",
        [sensor, metric],
    ).fetchall()
    assert len(rows) == 1, (table, rows)
    avg, low, high, count, last, last_time = rows[0]
    return (float(avg), low, high, int(count), last), last_time


def test_late_reading_updates_rollups(conn: psycopg.Connection, city_db: str) -> None:
    prepare(conn)
    start = _hour_ago()
    store(
        conn,
        [
            Reading.at(start + timedelta(seconds=10), "fg-welang-3", "water_level", 1.0),
            Reading.at(start + timedelta(seconds=30), "fg-welang-3", "water_level", 3.0),
        ],
    )
    refresh_rollups(city_db)
    for table in ROLLUPS:
        values, last_time = _rollup(conn, table, "fg-welang-3", "water_level")
        assert values == pytest.approx((2.0, 1.0, 3.0, 2, 3.0)), table
        assert last_time == start + timedelta(seconds=30)
    # Late: observed between the two, arrives after both. It joins the same buckets but is not
    # the last value of any of them.
    store(conn, [Reading.at(start + timedelta(seconds=20), "fg-welang-3", "water_level", 5.0)])
    refresh_rollups(city_db)
    for table in ROLLUPS:
        values, last_time = _rollup(conn, table, "fg-welang-3", "water_level")
        assert values == pytest.approx((3.0, 1.0, 5.0, 3, 3.0)), table
        assert last_time == start + timedelta(seconds=30)
    # A late reading in an older bucket of its own leaves this bucket alone.
    store(conn, [Reading.at(start - timedelta(minutes=61), "fg-welang-3", "water_level", 0.5)])
    refresh_rollups(city_db)
    assert _count(conn, "SELECT count(*) FROM readings_1m WHERE sensor_id = 'fg-welang-3'") == 2
    assert _count(conn, "SELECT count(*) FROM readings_1h WHERE sensor_id = 'fg-welang-3'") == 2
    row = conn.execute(
        "SELECT value_avg, value_count, value_last FROM readings_1m "
        "WHERE sensor_id = 'fg-welang-3' AND bucket = %s",
        [start],
    ).fetchone()
    assert row is not None
    assert (float(row[0]), int(row[1]), row[2]) == pytest.approx((3.0, 3, 3.0))


def test_daily_rollup_uses_local_days(conn: psycopg.Connection, city_db: str) -> None:
    """A day in Pasuruan (WIB, UTC+7) starts at 17:00 UTC the evening before."""
    prepare(conn)
    local_midnight = (datetime.now(UTC) + timedelta(hours=7)).replace(
        hour=0, minute=0, second=0, microsecond=0
    ) - timedelta(hours=7, days=1)
    store(
        conn,
        [
            Reading.at(local_midnight - timedelta(minutes=1), "sn-bangil-1", "pm25", 10.0),
            Reading.at(local_midnight + timedelta(minutes=1), "sn-bangil-1", "pm25", 20.0),
        ],
    )
    refresh_rollups(city_db)
    rows = conn.execute(
        "SELECT bucket, value_avg FROM readings_1d WHERE sensor_id = 'sn-bangil-1' ORDER BY 1"
    ).fetchall()
    assert rows == [(local_midnight - timedelta(days=1), 10.0), (local_midnight, 20.0)]


def _rejected(topic: str, payload: bytes, reason: Reason, at: datetime) -> RejectedPayload:
    return RejectedPayload(
        topic=topic, payload=payload, received_at=at, rejection=Rejection(reason, "detail")
    )


def test_rejected_payload_is_upserted(conn: psycopg.Connection) -> None:
    prepare(conn)
    first_seen = datetime.now(UTC) - timedelta(minutes=5)
    topic, payload = "pantau/up/fg-welang-1", b'{"values": {"water_level": 99}}'
    result = store(conn, [], [_rejected(topic, payload, Reason.OUT_OF_RANGE, first_seen)])
    assert result == StoreResult(staged=0, inserted=0, rejected=1)
    later = first_seen + timedelta(minutes=3)
    store(conn, [], [_rejected(topic, payload, Reason.OUT_OF_RANGE, later)])
    rows = conn.execute(
        "SELECT digest, reason, topic, payload, received_at, last_seen_at, times_seen "
        "FROM rejected_payloads"
    ).fetchall()
    assert rows == [
        (message_digest(topic, payload), "out_of_range", topic, payload, first_seen, later, 2)
    ]
    # Another reason for the same payload, or the same payload on another topic: new rows.
    store(
        conn,
        [],
        [
            _rejected(topic, payload, Reason.UNKNOWN_METRIC, later),
            _rejected("pantau/up/fg-welang-2", payload, Reason.OUT_OF_RANGE, later),
        ],
    )
    assert _count(conn, "SELECT count(*) FROM rejected_payloads") == 3


def test_readings_and_rejections_commit_together(conn: psycopg.Connection) -> None:
    prepare(conn)
    start = _hour_ago()
    good = [Reading.at(start, "fg-welang-1", "water_level", 1.0)]
    broken = RejectedPayload(
        topic="pantau/up/fg-welang-1",
        payload=b"x",
        received_at=None,  # type: ignore[arg-type]  # NOT NULL fails after the readings went in
        rejection=Rejection(Reason.BAD_SHAPE, "detail"),
    )
    with pytest.raises(psycopg.errors.NotNullViolation):
        store(conn, good, [broken])
    assert _count(conn, "SELECT count(*) FROM readings") == 0
    assert _count(conn, "SELECT count(*) FROM latest_readings") == 0
    # The connection and its staging table are still usable, and the batch is not half-stored.
    assert store(conn, good).inserted == 1
    assert _count(conn, "SELECT count(*) FROM readings") == 1


def test_empty_batch_and_repeated_prepare(conn: psycopg.Connection) -> None:
    prepare(conn)
    prepare(conn)
    assert store(conn, []) == StoreResult(staged=0, inserted=0, rejected=0)


def test_payload_digest() -> None:
    digest = message_digest("a/up/x", b"{}")
    assert len(digest) == 32
    assert digest == message_digest("a/up/x", b"{}")
    assert digest != message_digest("a/up/y", b"{}")
    assert digest != message_digest("a/up/x", b"{} ")
    # The separator keeps topic and payload apart.
    assert message_digest("a", b"b/c") != message_digest("a/b", b"/c")


WIB = timedelta(hours=7)


def _bucket(table: str, when: datetime) -> datetime:
    if table == "readings_1m":
        return when.replace(second=0, microsecond=0)
    if table == "readings_1h":
        return when.replace(minute=0, second=0, microsecond=0)
    local = (when + WIB).replace(hour=0, minute=0, second=0, microsecond=0)
    return local - WIB


def check_rollups_match(
    conn: psycopg.Connection, url: str, readings: list[Reading], *, refresh: bool = True
) -> None:
    """Every rollup row equals the aggregate of the raw readings, computed here in Python."""
    if refresh:
        refresh_rollups(url)
    for table in ROLLUPS:
        groups: dict[tuple[datetime, str, str], list[Reading]] = {}
        for r in readings:
            groups.setdefault((_bucket(table, r.time), r.sensor_id, r.metric), []).append(r)
        rows = conn.execute(
            f"SELECT bucket, sensor_id, metric, value_avg, value_min, value_max, "
            f"value_count, value_last, last_time FROM {table} ORDER BY 1, 2, 3"
        ).fetchall()
        assert [row[:3] for row in rows] == sorted(groups), table
        for bucket, sensor, metric, avg, low, high, count, last, last_time in rows:
            members = groups[(bucket, sensor, metric)]
            values = [r.value for r in members]
            newest = max(members, key=lambda r: r.time)
            assert float(avg) == pytest.approx(sum(values) / len(values)), table
            assert (low, high, int(count)) == (min(values), max(values), len(values)), table
            assert (last, last_time) == (newest.value, newest.time), table


def test_rollups_match_raw_readings(conn: psycopg.Connection, city_db: str) -> None:
    prepare(conn)
    start = _hour_ago(30)
    readings = [
        Reading.at(start + timedelta(seconds=37 * i), sensor, metric, float((i * 7) % 23) / 10)
        for i in range(200)
        for sensor, metric in (("fg-welang-1", "water_level"), ("sn-bangil-2", "noise"))
        if metric != "noise" or i % 3 == 0
    ]
    readings = [r._replace(value=r.value + 40) if r.metric == "noise" else r for r in readings]
    # Out of order and in two batches, the second one late. Before the first refresh every
    # bucket is computed live from the readings; after it, from what was materialised.
    store(conn, readings[1::2])
    check_rollups_match(conn, city_db, readings[1::2], refresh=False)
    check_rollups_match(conn, city_db, readings[1::2])
    store(conn, list(reversed(readings[::2])))
    check_rollups_match(conn, city_db, readings)


def _psycopg_copy_bytes(conn: psycopg.Connection, readings: list[Reading]) -> bytes:
    """What psycopg itself writes for these rows (its FileWriter sends nothing to the server)."""
    out = io.BytesIO()
    with psycopg.Copy(conn.cursor(), binary=True, writer=FileWriter(out)) as copy:
        copy.set_types(["timestamptz", "text", "text", "float8", "bool"])
        for reading in readings:
            copy.write_row((reading.time, *reading[1:]))
    return out.getvalue()


@given(
    st.lists(
        st.builds(
            Reading.at,
            st.datetimes(
                min_value=datetime(1900, 1, 1),
                max_value=datetime(2200, 1, 1),
                timezones=st.just(UTC),
            ),
            st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
            st.sampled_from(["water_level", "pm2_5", "count_motorcycle", "lampu_nyala"]),
            st.floats(allow_nan=False, allow_infinity=False),
            st.booleans(),
        ),
        max_size=30,
    )
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_staged_readings_are_what_psycopg_would_copy(
    conn: psycopg.Connection, readings: list[Reading]
) -> None:
    staged = StagedReadings(readings[:10])
    staged.add(readings[10:])
    assert staged.count == len(readings)
    assert staged.copy_data() == _psycopg_copy_bytes(conn, readings)
    observed = [r.time.timestamp() for r in readings if not r.time_estimated]
    assert staged.observed_times_s().tolist() == pytest.approx(observed, abs=1e-6)


def test_staged_readings_store_like_objects(conn: psycopg.Connection) -> None:
    prepare(conn)
    start = _hour_ago()
    batch = [
        Reading.at(
            start + timedelta(microseconds=i), "fg-welang-1", "water_level", i / 7, i % 2 == 0
        )
        for i in range(100)
    ]
    assert store(conn, StagedReadings(batch)) == StoreResult(staged=100, inserted=100, rejected=0)
    assert store(conn, batch) == StoreResult(staged=100, inserted=0, rejected=0)  # the same keys
    rows = conn.execute(
        "SELECT time, sensor_id, metric, value, time_estimated FROM readings ORDER BY time"
    ).fetchall()
    assert [Reading.at(*row) for row in rows] == batch
