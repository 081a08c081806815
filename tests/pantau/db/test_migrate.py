"""Migrations: idempotent, safe to run concurrently, mode kept, read-only role granted."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from pantau.db.migrate import (
    LATEST_VERSION,
    MIGRATION_LOCK,
    MIGRATIONS,
    MigrateResult,
    MigrationError,
    Mode,
    applied_version,
    current_mode,
    maintain,
    migrate,
)
from pantau.db.store import prepare, store
from pantau.payload import Reading
from pantau.settings import StorageSettings

CORE_TABLES = {
    "schema_migrations", "pantau_meta", "kecamatan", "sensors", "flood_thresholds",
    "latest_readings", "rejected_payloads", "alerts", "readings",
}  # fmt: skip
VERSIONS = tuple(m.version for m in MIGRATIONS)


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')"
        ).fetchall()
    return {name for (name,) in rows}


def _versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def test_migrate_is_idempotent(empty_db: str, storage: StorageSettings) -> None:
    with psycopg.connect(empty_db) as conn:
        assert applied_version(conn) == 0
        assert current_mode(conn) is None
    first = migrate(empty_db, storage)
    assert first.version == LATEST_VERSION
    assert first.applied == VERSIONS
    tables = _tables(empty_db)
    assert tables >= CORE_TABLES
    second = migrate(empty_db, storage)
    assert second == MigrateResult(mode=first.mode, version=LATEST_VERSION, applied=())
    assert _tables(empty_db) == tables
    assert _versions(empty_db) == list(VERSIONS)


def test_concurrent_migrations_apply_once(empty_db: str, storage: StorageSettings) -> None:
    workers = 4
    start = threading.Barrier(workers)

    def run() -> MigrateResult:
        start.wait(timeout=30)
        return migrate(empty_db, storage)

    with ThreadPoolExecutor(workers) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(run) for _ in range(workers)]]
    assert {r.version for r in results} == {LATEST_VERSION}
    assert {r.mode for r in results} == {results[0].mode}
    assert sorted(r.applied for r in results) == [(), (), (), VERSIONS]
    assert _versions(empty_db) == list(VERSIONS)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pantau_meta WHERE key = 'storage_mode'"
        ).fetchone() == (1,)
    tables = _tables(empty_db)
    assert tables >= CORE_TABLES
    assert migrate(empty_db, storage).applied == ()
    assert _tables(empty_db) == tables


def test_auto_mode_follows_the_server(db_mode: Mode, server_has_timescaledb: bool) -> None:
    assert db_mode is (Mode.TIMESCALEDB if server_has_timescaledb else Mode.POSTGRES)


def test_mode_cannot_change_after_the_first_migration(
    db_url: str, db_mode: Mode, storage: StorageSettings
) -> None:
    other = "postgres" if db_mode is Mode.TIMESCALEDB else "timescaledb"
    with pytest.raises(MigrationError, match=f"migrated in {db_mode} mode") as caught:
        migrate(db_url, storage.model_copy(update={"mode": other}))
    assert "PANTAU_STORAGE__MODE" in str(caught.value)
    # Naming the mode it already has, or auto, is fine.
    assert migrate(db_url, storage.model_copy(update={"mode": db_mode.value})).applied == ()


def test_timescaledb_mode_needs_the_extension(
    empty_db: str, storage: StorageSettings, server_has_timescaledb: bool
) -> None:
    if server_has_timescaledb:
        pytest.skip("the test server offers TimescaleDB")
    with pytest.raises(MigrationError, match="no timescaledb extension"):
        migrate(empty_db, storage.model_copy(update={"mode": "timescaledb"}))
    # Nothing half-done: the database can still be migrated in plain mode.
    assert migrate(empty_db, storage).mode is Mode.POSTGRES


def test_explicit_postgres_mode(empty_db: str, storage: StorageSettings) -> None:
    result = migrate(empty_db, storage.model_copy(update={"mode": "postgres"}))
    assert result.mode is Mode.POSTGRES
    with psycopg.connect(empty_db) as conn:
        assert current_mode(conn) is Mode.POSTGRES


def test_maintain_needs_a_migrated_database(empty_db: str, storage: StorageSettings) -> None:
    with pytest.raises(MigrationError, match="pantau db migrate"):
        maintain(empty_db, storage)


def test_maintain_without_waiting_skips_when_locked(db_url: str, storage: StorageSettings) -> None:
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        assert maintain(db_url, storage, wait=False) is None
        holder.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])
    assert maintain(db_url, storage, wait=False) is not None


def test_readonly_role_can_read_but_not_write(conn: psycopg.Connection, city_db: str) -> None:
    prepare(conn)
    when = datetime.now(UTC) - timedelta(hours=1)
    store(conn, [Reading.at(when, "fg-welang-1", "water_level", 1.0)])
    with psycopg.connect(city_db) as reader:  # not autocommit: SET ROLE ends with it
        reader.execute("SET ROLE pantau_readonly")
        for table in ("readings", "latest_readings", "sensors", "readings_1m",
                      "current_flood_thresholds"):  # fmt: skip
            reader.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert reader.execute("SELECT count(*) FROM readings").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), reader.transaction():
            reader.execute(
                "INSERT INTO readings (time, sensor_id, metric, value) "
                "VALUES (now(), 'fg-welang-1', 'water_level', 1)"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege), reader.transaction():
            reader.execute("DELETE FROM sensors")
        reader.rollback()
    assert conn.execute("SELECT count(*) FROM sensors").fetchone() == (7,)


def _database_defaults(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT coalesce(s.setconfig, '{}') FROM pg_database d LEFT JOIN pg_db_role_setting s "
            "ON s.setdatabase = d.oid AND s.setrole = 0 WHERE d.datname = current_database()"
        ).fetchone()
    assert row is not None
    return list(row[0])


def test_sessions_of_the_database_run_without_jit(empty_db: str, storage: StorageSettings) -> None:
    assert _database_defaults(empty_db) == []
    migrate(empty_db, storage)
    # A default of the database: every new session has it, whoever connects.
    assert _database_defaults(empty_db) == ["jit=off"]
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SHOW jit").fetchone() == ("off",)


def test_jit_stays_on_with_a_warning_when_the_migrator_does_not_own_the_database(
    empty_db: str, storage: StorageSettings
) -> None:
    role = f"pantau_not_owner_{uuid.uuid4().hex[:8]}"
    [jit_off] = [m for m in MIGRATIONS if m.version == 8]
    text = str(jit_off.statements(Mode.POSTGRES, storage))
    warnings: list[str] = []
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        try:
            conn.add_notice_handler(lambda notice: warnings.append(notice.message_primary or ""))
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            conn.execute(text)  # no error: the migration goes on
            conn.execute("RESET ROLE")
        finally:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert len(warnings) == 1 and "only the owner of database" in warnings[0], warnings
    assert _database_defaults(empty_db) == []
