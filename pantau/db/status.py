"""What `pantau db status` reports: mode, migration version, sizes."""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def up_to_date(self) -> bool:
        return self.version == self.latest_version


def status(conninfo: str) -> Status:
    """Read the database's state without changing it."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        mode = current_mode(conn)
        version = applied_version(conn)
        rows: dict[str, int] = {}
        partitions = 0
        if mode is not None and version >= 2:
            for table in COUNTED_TABLES:
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                row = conn.execute(query).fetchone()
                rows[table] = int(row[0]) if row else 0
            partitions = (
                timescaledb.chunk_count(conn)
                if mode is Mode.TIMESCALEDB
                else postgres.partition_count(conn)
            )
        return Status(
            mode=mode,
            version=version,
            latest_version=LATEST_VERSION,
            timescaledb_version=timescaledb.installed_version(conn),
            partitions=partitions,
            rows=rows,
        )
