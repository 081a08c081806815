"""What `pantau db status` reports: mode, migration version, sizes, rollup lag and, in
TimescaleDB mode, compression and the background jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from pantau.db import postgres, timescaledb
from pantau.db.migrate import LATEST_VERSION, Mode, applied_version, current_mode

COUNTED_TABLES = (
    "sensors",
    "readings",
    "latest_readings",
    "readings_1m",
    "readings_1h",
    "readings_1d",
    "rejected_payloads",
    "alerts",
)


@dataclass(frozen=True, slots=True)
class Status:
    mode: Mode | None
    version: int
    latest_version: int
    timescaledb_version: str | None
    partitions: int
    rows: dict[str, int] = field(default_factory=dict)
    # The database's clock when read, and each rollup's watermark: materialised below it,
    # computed on the fly from it on (None: nothing materialised yet).
    checked_at: datetime | None = None
    watermarks: dict[str, datetime | None] = field(default_factory=dict)
    compression: timescaledb.Compression | None = None
    jobs: tuple[timescaledb.Job, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return self.version == self.latest_version

    @property
    def lag(self) -> dict[str, timedelta | None]:
        """How far each rollup's materialised part trails the clock."""
        return {
            name: None if mark is None or self.checked_at is None else self.checked_at - mark
            for name, mark in self.watermarks.items()
        }

    @property
    def problems(self) -> list[str]:
        """What an operator should look at, one line each."""
        found = []
        if not self.up_to_date:
            found.append(f"schema at version {self.version} of {self.latest_version}")
        for job in self.jobs:
            if job.failing:
                what = " ".join(filter(None, (job.proc_name, job.target)))
                found.append(
                    f"job {job.job_id} ({what}) failed {job.total_failures} of "
                    f"{job.total_runs} runs; last error: {job.last_error or 'not recorded'}"
                )
        return found


def status(conninfo: str) -> Status:
    """Read the database's state without changing it."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        mode = current_mode(conn)
        version = applied_version(conn)
        rows: dict[str, int] = {}
        partitions = 0
        watermarks: dict[str, datetime | None] = {}
        compression = None
        jobs: tuple[timescaledb.Job, ...] = ()
        if mode is not None and version >= 2:
            for table in COUNTED_TABLES:
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                row = conn.execute(query).fetchone()
                rows[table] = int(row[0]) if row else 0
            if mode is Mode.TIMESCALEDB:
                partitions = timescaledb.chunk_count(conn)
                watermarks = timescaledb.watermarks(conn)
                compression = timescaledb.compression(conn)
                jobs = tuple(timescaledb.jobs(conn))
            else:
                partitions = postgres.partition_count(conn)
                if version >= 3:
                    watermarks = postgres.watermarks(conn)
        clock = conn.execute("SELECT now()").fetchone()
        return Status(
            mode=mode,
            version=version,
            latest_version=LATEST_VERSION,
            timescaledb_version=timescaledb.installed_version(conn),
            partitions=partitions,
            rows=rows,
            checked_at=clock[0] if clock else None,
            watermarks=watermarks,
            compression=compression,
            jobs=jobs,
        )


def format_age(age: timedelta) -> str:
    """``42s``, ``3m 5s``, ``2h 10m``, ``4d 3h``: what an operator reads at a glance."""
    seconds = max(0, int(age.total_seconds()))
    for unit, size, smaller, smaller_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if seconds >= size:
            rest = (seconds % size) // smaller_size
            return f"{seconds // size}{unit}" + (f" {rest}{smaller}" if rest else "")
    return f"{seconds}s"


def format_compression(stats: timescaledb.Compression) -> str:
    text = f"{stats.compressed_chunks} of {stats.chunks} chunks compressed"
    return text if stats.ratio is None else f"{text}, {stats.ratio:.1f}x smaller"


def job_cells(job: timescaledb.Job, now: datetime | None) -> list[str]:
    """One row of the jobs table: id, job, target, schedule, last run, result, failures, next."""

    def ago(moment: datetime | None) -> str:
        if moment is None:
            return "never"
        if now is None:
            return f"{moment:%H:%M:%S}"
        return (
            f"{format_age(now - moment)} ago" if moment <= now else f"in {format_age(moment - now)}"
        )

    result = job.last_run_status or "-"
    if job.job_status not in (None, "Scheduled"):
        result = f"{result}, {job.job_status}"
    return [
        str(job.job_id),
        _JOB_NAMES.get(job.proc_name, job.proc_name),
        job.target or "",
        format_age(job.schedule),
        ago(job.last_run_started_at),
        result,
        f"{job.total_failures} of {job.total_runs}",
        ago(job.next_start) if job.next_start else "-",
    ]


_JOB_NAMES = {
    "policy_refresh_continuous_aggregate": "refresh",
    "policy_compression": "compression",
    "policy_columnstore": "compression",
    "policy_retention": "retention",
    "policy_job_stat_history_retention": "job history retention",
    "policy_telemetry": "telemetry",
}
