"""Compare a database with a manifest: what was lost, duplicated, changed or unexpected.

The manifest's keys are bulk-loaded (binary COPY) into a temporary table and compared with
``readings`` in SQL, in one pass, so a run of a million readings verifies in seconds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from pantau.db.migrate import refresh_rollups
from pantau.db.store import message_digest
from simulators.manifest import Fault, Key, Manifest

# Values travel as JSON numbers; allow for the last bit of a decimal round trip.
VALUE_TOLERANCE = 1e-9
_MINUTE = timedelta(minutes=1)

_KEYS = """
CREATE TEMPORARY TABLE pantau_verify_keys (
    sensor_id text NOT NULL,
    metric    text NOT NULL,
    time      timestamptz NOT NULL,
    value     double precision NOT NULL
) ON COMMIT DROP
"""

# One pass over the manifest's keys and the stored rows in its time range: every key that is
# lost, unexpected or stored with another value, and how many stored rows matched a key (more
# than the keys stored means a key stored twice).
_DIFF = """
WITH joined AS MATERIALIZED (
    SELECT coalesce(k.sensor_id, r.sensor_id) AS sensor_id,
           coalesce(k.metric, r.metric) AS metric,
           coalesce(k.time, r.time) AS time,
           CASE WHEN r.sensor_id IS NULL THEN 'lost'
                WHEN k.sensor_id IS NULL THEN 'unexpected'
                WHEN abs(r.value - k.value) > %(tolerance)s * greatest(1.0, abs(k.value))
                    THEN 'mismatch'
                ELSE 'ok' END AS kind
    FROM pantau_verify_keys k
    FULL JOIN (
        SELECT sensor_id, metric, time, value FROM readings
        WHERE sensor_id = ANY(%(sensors)s) AND time BETWEEN %(first)s AND %(last)s
    ) r ON r.sensor_id = k.sensor_id AND r.metric = k.metric AND r.time = k.time
)
SELECT kind, sensor_id, metric, time, NULL::bigint FROM joined WHERE kind <> 'ok'
UNION ALL
SELECT 'matched', NULL, NULL, NULL, count(*) FROM joined WHERE kind IN ('ok', 'mismatch')
"""

# Per sensor and metric over the whole minutes covering the manifest: raw rows, and the rows
# the 1-minute rollup counted.
_RAW_COUNTS = """
SELECT sensor_id, metric, count(*) FROM readings
WHERE sensor_id = ANY(%(sensors)s) AND time >= %(start)s AND time < %(stop)s
GROUP BY 1, 2
"""
_ROLLUP_COUNTS = """
SELECT sensor_id, metric, sum(value_count)::bigint FROM readings_1m
WHERE sensor_id = ANY(%(sensors)s) AND bucket >= %(start)s AND bucket < %(stop)s
GROUP BY 1, 2
"""


@dataclass(slots=True)
class VerifyReport:
    """Outcome of comparing a database with a manifest."""

    expected: int
    stored: int
    lost: list[Key] = field(default_factory=list)
    duplicated: int = 0
    value_mismatch: list[Key] = field(default_factory=list)
    unexpected: list[Key] = field(default_factory=list)
    rejected_missing: list[Fault] = field(default_factory=list)
    # Part of ``duplicated``: rows the 1-minute rollup counted beyond any that could have been
    # stored (a row deleted after it was counted is reported as lost, not double counted).
    rollup_excess: int = 0
    # For information: stored rows the rollup has not counted (not part of ``ok``).
    rollup_missing: int = 0
    faults_expected_rejected: int = 0
    time_range: tuple[datetime, datetime] | None = None

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.value_mismatch
            or self.unexpected
            or self.rejected_missing
        )


def report_counts(report: VerifyReport) -> dict[str, int | bool]:
    """The report as counts, for machines (``pantau simulate verify --json``)."""
    return {
        "expected": report.expected,
        "stored": report.stored,
        "lost": len(report.lost),
        "duplicated": report.duplicated,
        "value_mismatch": len(report.value_mismatch),
        "unexpected": len(report.unexpected),
        "rejected_missing": len(report.rejected_missing),
        "ok": report.ok,
    }


def verify(conninfo: str, manifest: Manifest) -> VerifyReport:
    """Check the database at ``conninfo`` against ``manifest``; see :class:`VerifyReport`."""
    refresh_rollups(conninfo)
    expect_rejected = [f for f in manifest.faults if f.expect_rejected]
    report = VerifyReport(
        expected=len(manifest.valid),
        stored=0,
        faults_expected_rejected=len(expect_rejected),
        time_range=manifest.time_range(),
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if manifest.valid:
            with conn.transaction():
                _compare(conn, manifest, report)
        report.rejected_missing = _rejected_missing(conn, expect_rejected)
    report.stored = report.expected - len(report.lost)
    return report


def _compare(conn: psycopg.Connection, manifest: Manifest, report: VerifyReport) -> None:
    assert report.time_range is not None
    first, last = report.time_range
    sensors = sorted(manifest.sensors)
    matched = 0
    with conn.cursor() as cur:
        cur.execute(_KEYS)
        with cur.copy(
            "COPY pantau_verify_keys (sensor_id, metric, time, value) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "text", "timestamptz", "float8"])
            for (sensor, metric, time), value in manifest.valid.items():
                copy.write_row((sensor, metric, time, value))
        cur.execute("ANALYZE pantau_verify_keys")
        found: dict[str, list[Key]] = {"lost": [], "unexpected": [], "mismatch": []}
        params = {"tolerance": VALUE_TOLERANCE, "sensors": sensors, "first": first, "last": last}
        for kind, sensor, metric, time, count in cur.execute(_DIFF, params):
            if kind == "matched":
                matched = int(count)
            else:
                found[kind].append((sensor, metric, time))
        report.lost = sorted(found["lost"])
        report.unexpected = sorted(found["unexpected"])
        report.value_mismatch = sorted(found["mismatch"])
        window = {
            "sensors": sensors,
            "start": first.replace(second=0, microsecond=0),
            "stop": last.replace(second=0, microsecond=0) + _MINUTE,
        }
        raw = {(s, m): int(n) for s, m, n in cur.execute(_RAW_COUNTS, window)}
        rolled = {(s, m): int(n) for s, m, n in cur.execute(_ROLLUP_COUNTS, window)}
    lost_by_series = Counter((sensor, metric) for sensor, metric, _ in report.lost)
    for series in raw.keys() | rolled.keys():
        counted, stored = rolled.get(series, 0), raw.get(series, 0)
        report.rollup_excess += max(0, counted - stored - lost_by_series[series])
        report.rollup_missing += max(0, stored - counted)
    stored_twice = matched - (len(manifest.valid) - len(report.lost))
    report.duplicated = stored_twice + report.rollup_excess


def _rejected_missing(conn: psycopg.Connection, faults: list[Fault]) -> list[Fault]:
    if not faults:
        return []
    digests = {message_digest(f.topic, f.payload): f for f in faults}
    found = {
        bytes(row[0])
        for row in conn.execute(
            "SELECT DISTINCT digest FROM rejected_payloads WHERE digest = ANY(%s)",
            [list(digests)],
        ).fetchall()
    }
    return [fault for digest, fault in digests.items() if digest not in found]
