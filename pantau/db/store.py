"""The idempotent write path: readings and rejections committed together, in one transaction.

Readings are copied (binary COPY) into a per-connection staging table, then inserted into
``readings`` skipping any natural key (sensor, metric, time) already stored, so a redelivered
message is stored once. Latest values follow observation time, not arrival time.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import psycopg

from pantau.payload import Reading, Rejection

_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS pantau_stage (
    time           timestamptz NOT NULL,
    sensor_id      text COLLATE "C" NOT NULL,
    metric         text COLLATE "C" NOT NULL,
    value          double precision NOT NULL,
    time_estimated boolean NOT NULL
) ON COMMIT DELETE ROWS
"""

# Rows are inserted in key order so that concurrent writers take index locks in the same order
# (the staging table sorts text as the key does, byte-wise, whatever the database's collation).
# Of two identical keys within one batch, DO NOTHING keeps the first.
_INSERT = """
INSERT INTO readings (time, sensor_id, metric, value, time_estimated)
SELECT time, sensor_id, metric, value, time_estimated
FROM pantau_stage
ORDER BY sensor_id, metric, time
ON CONFLICT DO NOTHING
"""

# Latest values move only forward in observation time, so replaying the whole staged batch is
# idempotent: a redelivered reading is never newer than what it already set.
_LATEST = """
INSERT INTO latest_readings AS l (sensor_id, metric, time, value, updated_at)
SELECT sensor_id, metric, time, value, now()
FROM (
    SELECT DISTINCT ON (sensor_id, metric) sensor_id, metric, time, value
    FROM pantau_stage
    ORDER BY sensor_id, metric, time DESC
) newest
ORDER BY sensor_id, metric
ON CONFLICT (sensor_id, metric) DO UPDATE
    SET time = EXCLUDED.time, value = EXCLUDED.value, updated_at = EXCLUDED.updated_at
    WHERE l.time < EXCLUDED.time
"""

_REJECT = """
INSERT INTO rejected_payloads AS r
    (digest, reason, topic, detail, payload, received_at, last_seen_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (digest, reason) DO UPDATE
    SET times_seen = r.times_seen + 1, last_seen_at = EXCLUDED.last_seen_at
"""


# PostgreSQL's binary COPY format ("Binary Format" in the COPY reference): a signature, flags
# and header-extension length, then per row the field count and each field as length + bytes,
# then a trailer. The types are those of the staging table, in its column order.
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_TRAILER = struct.pack(">h", -1)
_ROW_HEAD = struct.Struct(">hiq")  # 5 fields; time: 8 bytes of microseconds since 2000
_ROW_TAIL = struct.Struct(">idi?")  # value: 8 bytes float8; time_estimated: 1 byte bool
# PostgreSQL counts timestamps from 2000-01-01, readings from 1970-01-01 (both UTC).
_PG_EPOCH_US = 946_684_800_000_000
# (sensor_id, metric) -> both text fields, encoded. Bounded by the registry's sensors times
# their metrics (only those are ever decoded), but capped anyway.
_ID_FIELDS: dict[tuple[str, str], bytes] = {}
_ID_FIELDS_MAX = 200_000


class StagedReadings:
    """Readings encoded for the staging table's binary COPY, added as they are decoded.

    Ingest encodes on its decoding thread, so that the writing thread, whose round trips to the
    database are the pipeline's critical path, only streams bytes. The encoding is byte for byte
    what psycopg's ``Copy.write_row`` produces for the staging table's types (a test checks).
    """

    __slots__ = ("_rows", "_times_us", "count")

    def __init__(self, readings: Iterable[Reading] = ()) -> None:
        self._rows = bytearray()
        # Observation times (Unix microseconds) of readings that carried one, for the
        # publish-to-commit latency.
        self._times_us = array("q")
        self.count = 0
        self.add(readings)

    def add(self, readings: Iterable[Reading]) -> None:
        rows, times, ids = self._rows, self._times_us, _ID_FIELDS
        head, tail = _ROW_HEAD.pack, _ROW_TAIL.pack
        added = 0
        for micros, sensor_id, metric, value, estimated in readings:
            fields = ids.get((sensor_id, metric))
            if fields is None:
                fields = _id_fields(sensor_id, metric)
            rows += head(5, 8, micros - _PG_EPOCH_US)
            rows += fields
            rows += tail(8, value, 1, estimated)
            if not estimated:
                times.append(micros)
            added += 1
        self.count += added

    def copy_data(self) -> bytes:
        """The whole COPY stream: signature, rows, trailer."""
        return _SIGNATURE + self._rows + _TRAILER

    def observed_times_s(self) -> np.ndarray[tuple[int], np.dtype[np.float64]]:
        """Unix times of the readings that carried an observation time."""
        return np.frombuffer(self._times_us, dtype=np.int64) / 1e6


def _id_fields(sensor_id: str, metric: str) -> bytes:
    sensor, name = sensor_id.encode(), metric.encode()
    fields = struct.pack(">i", len(sensor)) + sensor + struct.pack(">i", len(name)) + name
    if len(_ID_FIELDS) >= _ID_FIELDS_MAX:
        _ID_FIELDS.clear()
    _ID_FIELDS[(sensor_id, metric)] = fields
    return fields


@dataclass(frozen=True, slots=True)
class RejectedPayload:
    """A payload (or part of one) that was refused, with its raw bytes."""

    topic: str
    payload: bytes
    received_at: datetime
    rejection: Rejection


def message_digest(topic: str, payload: bytes) -> bytes:
    """Identity of a raw message, for deduplicating rejections."""
    return hashlib.sha256(topic.encode() + b"\0" + payload).digest()


@dataclass(frozen=True, slots=True)
class StoreResult:
    staged: int
    inserted: int
    rejected: int

    @property
    def duplicates(self) -> int:
        return self.staged - self.inserted


def prepare(conn: psycopg.Connection) -> None:
    """Create the connection's staging table (once per connection)."""
    conn.execute(_STAGE)


def store(
    conn: psycopg.Connection,
    readings: Sequence[Reading] | StagedReadings,
    rejected: Iterable[RejectedPayload] = (),
) -> StoreResult:
    """Write one batch in one transaction; returns how many readings were new.

    ``readings`` may come already encoded (:class:`StagedReadings`).
    """
    staged = readings if isinstance(readings, StagedReadings) else StagedReadings(readings)
    rejected = list(rejected)
    with conn.transaction():
        inserted = 0
        if staged.count:
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY pantau_stage (time, sensor_id, metric, value, time_estimated) "
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.write(staged.copy_data())
                inserted = cur.execute(_INSERT).rowcount
                cur.execute(_LATEST)
        if rejected:
            with conn.cursor() as cur:
                cur.executemany(
                    _REJECT,
                    [
                        (
                            message_digest(item.topic, item.payload),
                            item.rejection.reason.value,
                            item.topic,
                            item.rejection.detail,
                            item.payload,
                            item.received_at,
                            item.received_at,
                        )
                        for item in rejected
                    ],
                )
    return StoreResult(staged=staged.count, inserted=inserted, rejected=len(rejected))
