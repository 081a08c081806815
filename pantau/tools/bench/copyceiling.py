"""Scenario (b): the database's raw COPY ceiling.

`python -m pantau.tools.bench.copyceiling --database URL --rows N` copies N synthetic readings (binary
COPY, explicit types, 5,000 rows a transaction) into a scratch table shaped like ``readings``,
with its unique key, and prints one JSON line: rows, seconds, peak memory.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import psycopg

from pantau.tools.bench._common import emit, peak_rss_bytes

BATCH = 5_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", required=True)
    parser.add_argument("--rows", type=int, required=True)
    args = parser.parse_args()
    base = datetime.now(UTC) - timedelta(days=1)
    sensors = [f"s-{i:03d}" for i in range(50)]
    with psycopg.connect(args.database, autocommit=True) as conn:
        conn.execute(
            """
            DROP TABLE IF EXISTS bench_copy;
            CREATE TABLE bench_copy (
                time timestamptz NOT NULL, sensor_id text NOT NULL, metric text NOT NULL,
                value double precision NOT NULL, time_estimated boolean NOT NULL DEFAULT false);
            CREATE UNIQUE INDEX bench_copy_key ON bench_copy (sensor_id, metric, time);
            """
        )
        started = time.perf_counter()
        done = 0
        while done < args.rows:
            size = min(BATCH, args.rows - done)
            with conn.transaction(), conn.cursor() as cur, cur.copy(
                "COPY bench_copy (time, sensor_id, metric, value, time_estimated) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy:  # fmt: skip
                copy.set_types(["timestamptz", "text", "text", "float8", "bool"])
                for i in range(done, done + size):
                    copy.write_row(
                        (base + timedelta(milliseconds=i // 50), sensors[i % 50], "water_level",
                         float(i % 1000) / 100, False)
                    )  # fmt: skip
            done += size
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
    emit({"rows": done, "seconds": elapsed, "peak_rss_bytes": peak_rss_bytes()})


if __name__ == "__main__":
    main()
