"""`pantau db status` numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from pantau.db.migrate import LATEST_VERSION, Mode, refresh_rollups
from pantau.db.status import COUNTED_TABLES, status
from pantau.db.store import RejectedPayload, prepare, store
from pantau.payload import Reading, Reason, Rejection


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
