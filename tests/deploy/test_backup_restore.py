"""Backups: a migrated database with readings survives pg_dump and pg_restore whole.

The steps are those of docs/deploy.md ("Backups and restore"): a custom-format `pg_dump`,
then `pg_restore` into a new database, wrapped in `timescaledb_pre_restore()` /
`timescaledb_post_restore()` where the server runs TimescaleDB.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from pantau.cli.dbstatus import status
from pantau.db.migrate import Mode, migrate
from pantau.settings import StorageSettings
from pantau.tools.scratch import temporary_database

TABLES = ("kecamatan", "sensors", "flood_thresholds", "schema_migrations", "pantau_meta")


def _fingerprint(url: str) -> dict[str, object]:
    """Row counts and content digests of the registry, and a summary of the readings."""
    out: dict[str, object] = {}
    with psycopg.connect(url) as conn:
        for table in TABLES:
            out[table] = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                f"FROM {table} AS t"
            ).fetchone()
        out["readings"] = conn.execute(
            "SELECT count(*), sum(value), min(time), max(time), count(DISTINCT sensor_id) "
            "FROM readings"
        ).fetchone()
    return out


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, f"{command[0]} failed: {result.stderr}"


def test_dump_and_restore_of_a_migrated_database_with_readings(
    city_db: str, db_mode: Mode, admin_url: str, storage: StorageSettings, tmp_path: Path
) -> None:
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore are not installed")
    with psycopg.connect(city_db, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO readings (time, sensor_id, metric, value)
            SELECT now() - make_interval(mins => n), s.id, 'water_level', n / 100.0
            FROM generate_series(1, 1500) AS n,
                 (SELECT id FROM sensors WHERE family = 'flood_gauge') AS s
            """
        )
    before = _fingerprint(city_db)
    assert before["readings"][0] > 0  # type: ignore[index]

    dump = tmp_path / "pantau.dump"
    _run("pg_dump", "--format=custom", f"--file={dump}", f"--dbname={city_db}")
    with temporary_database(admin_url, prefix="pantau_restore") as target:
        timescaledb = db_mode is Mode.TIMESCALEDB
        if timescaledb:
            with psycopg.connect(target, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                conn.execute("SELECT timescaledb_pre_restore()")
        _run("pg_restore", "--exit-on-error", f"--dbname={target}", str(dump))
        if timescaledb:
            with psycopg.connect(target, autocommit=True) as conn:
                conn.execute("SELECT timescaledb_post_restore()")

        assert _fingerprint(target) == before
        # The restored database is current: migrate finds nothing to apply, status agrees,
        # and it takes new readings.
        assert migrate(target, storage).applied == ()
        assert status(target).up_to_date
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO readings (time, sensor_id, metric, value) "
                "VALUES (now(), 'fg-welang-1', 'water_level', 1.0)"
            )
        assert _fingerprint(target)["readings"][0] == before["readings"][0] + 1  # type: ignore[index]
