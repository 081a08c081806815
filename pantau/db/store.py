"""The idempotent write path: readings and rejections committed together, in one transaction.

Readings are copied (binary COPY) into a per-connection staging table, then inserted into
``readings`` skipping any natural key (sensor, metric, time) already stored, so a redelivered
message is stored once. Latest values follow observation time, not arrival time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from pantau.payload import Reading, Rejection

_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS pantau_stage (
    time           timestamptz NOT NULL,
    sensor_id      text NOT NULL,
    metric         text NOT NULL,
    value          double precision NOT NULL,
    time_estimated boolean NOT NULL
) ON COMMIT DELETE ROWS
"""

# Rows are inserted in key order so that concurrent writers take index locks in the same order.
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


@dataclass(frozen=True, slots=True)
class RejectedPayload:
    """A payload (or part of one) that was refused, with its raw bytes."""

    topic: str
    payload: bytes
    received_at: datetime
    rejection: Rejection


def payload_digest(topic: str, payload: bytes) -> bytes:
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
    readings: Sequence[Reading],
    rejected: Iterable[RejectedPayload] = (),
) -> StoreResult:
    """Write one batch in one transaction; returns how many readings were new."""
    rejected = list(rejected)
    with conn.transaction():
        inserted = 0
        if readings:
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY pantau_stage (time, sensor_id, metric, value, time_estimated) "
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["timestamptz", "text", "text", "float8", "bool"])
                    for r in readings:
                        copy.write_row((r.time, r.sensor_id, r.metric, r.value, r.time_estimated))
                inserted = cur.execute(_INSERT).rowcount
                cur.execute(_LATEST)
        if rejected:
            with conn.cursor() as cur:
                cur.executemany(
                    _REJECT,
                    [
                        (
                            payload_digest(item.topic, item.payload),
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
    return StoreResult(staged=len(readings), inserted=inserted, rejected=len(rejected))
