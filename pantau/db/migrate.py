"""Versioned migrations, storage-mode detection and routine maintenance.

``migrate`` is idempotent and safe to run from several processes at once: a session-level
advisory lock serialises them, and each migration commits together with its record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources

import psycopg
from psycopg import sql

from pantau.db import postgres, timescaledb
from pantau.settings import StorageSettings

log = logging.getLogger(__name__)

# Arbitrary but fixed: every Pantau process serialises schema work on this key.
MIGRATION_LOCK = 0x70616E746175


class Mode(StrEnum):
    TIMESCALEDB = "timescaledb"
    POSTGRES = "postgres"


class MigrationError(RuntimeError):
    """The schema could not be brought up to date; the message says why."""


class NotOwnerError(MigrationError):
    """This login may not do the maintenance asked for; only the schema's owner may."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: Callable[[Mode, StorageSettings], str | sql.Composable]


def _read(name: str) -> str:
    return resources.files("pantau.db").joinpath("migrations", name).read_text(encoding="utf-8")


def _file(name: str) -> Callable[[Mode, StorageSettings], str]:
    text = _read(name)
    return lambda mode, storage: text


def _readings(mode: Mode, storage: StorageSettings) -> str | sql.Composable:
    if mode is Mode.TIMESCALEDB:
        return timescaledb.schema_sql(storage)
    return _read("0002_postgres_readings.sql")


def _refreshed_rollups(mode: Mode, storage: StorageSettings) -> str:
    # TimescaleDB's continuous aggregates already work this way.
    return "SELECT 1" if mode is Mode.TIMESCALEDB else postgres.refreshed_rollups_sql()


def _service_logins(mode: Mode, storage: StorageSettings) -> str:
    logins = _read("0010_service_logins.sql")
    if mode is Mode.TIMESCALEDB:
        # The policies keep the aggregates, as the owner; ingest only writes readings.
        return logins
    return logins + _read("0010_postgres_maintenance.sql")


def _rollup_series_reads(mode: Mode, storage: StorageSettings) -> str:
    if mode is Mode.TIMESCALEDB:
        return _read("0007_timescaledb_rollup_series.sql")
    return _read("0007_postgres_rollup_keys.sql")


def _storage_usage(mode: Mode, storage: StorageSettings) -> str:
    return _read(f"0014_{mode.value}_storage_usage.sql")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "core tables", _file("0001_core.sql")),
    Migration(2, "readings and rollups", _readings),
    Migration(3, "rollups refreshed off the write path", _refreshed_rollups),
    Migration(4, "alerts, alert events, gauge status", _file("0004_alerts.sql")),
    Migration(5, "operator API keys", _file("0005_api_keys.sql")),
    Migration(6, "the API's login group", _file("0006_api_role.sql")),
    Migration(7, "rollup series read from the index alone", _rollup_series_reads),
    Migration(8, "no JIT compilation", _file("0008_jit_off.sql")),
    Migration(9, "gateways and the sensors they report for", _file("0009_gateways.sql")),
    Migration(10, "the ingest and alert service logins", _service_logins),
    Migration(11, "reading quality flags", _file("0011_reading_quality.sql")),
    Migration(12, "what was handed to Alertmanager", _file("0012_alert_notifications.sql")),
    Migration(
        13, "key holders, operators' trail, warning commands", _file("0013_control_room.sql")
    ),
    Migration(14, "storage usage for the dashboards, without XML", _storage_usage),
)
LATEST_VERSION = MIGRATIONS[-1].version


def _ensure_bookkeeping(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE IF NOT EXISTS pantau_meta (key text PRIMARY KEY, value text NOT NULL);
        """
    )


def current_mode(conn: psycopg.Connection) -> Mode | None:
    """The storage mode the database was migrated in, or None before the first migration."""
    exists = conn.execute("SELECT to_regclass('pantau_meta') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT value FROM pantau_meta WHERE key = 'storage_mode'").fetchone()
    return None if row is None else Mode(row[0])


def _choose_mode(conn: psycopg.Connection, conninfo: str, wanted: str) -> Mode:
    if wanted == Mode.POSTGRES:
        return Mode.POSTGRES
    if not timescaledb.available(conn):
        if wanted == Mode.TIMESCALEDB:
            raise MigrationError(
                "PANTAU_STORAGE__MODE=timescaledb but the server has no timescaledb extension"
            )
        return Mode.POSTGRES
    reason = _try_create_extension(conninfo)
    if reason is None:
        return Mode.TIMESCALEDB
    if wanted == Mode.TIMESCALEDB:
        raise MigrationError(f"cannot create the timescaledb extension: {reason}")
    log.warning("timescaledb is installed but unusable (%s); using plain PostgreSQL", reason)
    return Mode.POSTGRES


def _try_create_extension(conninfo: str) -> str | None:
    """Create the extension on a connection of its own; None on success, else why not.

    Where the library is installed but not in shared_preload_libraries, the server ends the
    session that tries (FATAL), so the attempt must not be made on the caller's connection,
    which holds the migration lock.
    """
    try:
        with psycopg.connect(conninfo, autocommit=True) as probe:
            timescaledb.create_extension(probe)
    except psycopg.Error as error:
        message = str(error).strip().splitlines()
        return message[0] if message else type(error).__name__
    return None


def applied_version(conn: psycopg.Connection) -> int:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class MigrateResult:
    mode: Mode
    version: int
    applied: tuple[int, ...]


def migrate(
    conninfo: str, storage: StorageSettings, *, now: datetime | None = None
) -> MigrateResult:
    """Apply pending migrations, then make policies and partitions match ``storage``."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        try:
            _ensure_bookkeeping(conn)
            mode = current_mode(conn)
            if mode is None:
                mode = _choose_mode(conn, conninfo, storage.mode)
                conn.execute(
                    "INSERT INTO pantau_meta (key, value) VALUES ('storage_mode', %s)", [mode.value]
                )
            elif storage.mode not in ("auto", mode):
                raise MigrationError(
                    f"database was migrated in {mode} mode; PANTAU_STORAGE__MODE={storage.mode}"
                )
            done = {
                row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()
            }
            applied = []
            for migration in MIGRATIONS:
                if migration.version in done:
                    continue
                log.info("applying migration %04d %s (%s)", migration.version, migration.name, mode)
                with conn.transaction():
                    conn.execute(migration.statements(mode, storage))  # type: ignore[arg-type]
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        [migration.version, migration.name],
                    )
                applied.append(migration.version)
            with conn.transaction():
                if mode is Mode.TIMESCALEDB:
                    timescaledb.apply_policies(conn, storage)
                else:
                    # The retention maintenance may apply when it does not run as the owner.
                    conn.execute(
                        "INSERT INTO pantau_meta (key, value) VALUES ('raw_retention', "
                        "%s::interval::text) ON CONFLICT (key) DO UPDATE SET value = "
                        "EXCLUDED.value",
                        [storage.raw_retention],
                    )
                    # Schema work only: refreshing is routine maintenance's.
                    postgres.maintain(conn, storage, now or datetime.now(UTC), rollups=False)
                _grant_readonly(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])
    return MigrateResult(mode=mode, version=applied_version_of(conninfo), applied=tuple(applied))


def _grant_readonly(conn: psycopg.Connection) -> None:
    """SELECT for the read-only role on each table and view of the schema that lacks it.

    Only those: granting on every table again would rewrite each one's catalogue row, and
    TimescaleDB's background jobs (running again right after a restore) update the rows of the
    hypertables and their chunks, so a blanket GRANT can fail with "tuple concurrently
    updated"."""
    missing = conn.execute(
        """
        SELECT format('%I.%I', n.nspname, c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND NOT has_table_privilege('pantau_readonly', c.oid, 'SELECT')
        ORDER BY 1
        """
    ).fetchall()
    for (name,) in missing:
        conn.execute(f"GRANT SELECT ON {name} TO pantau_readonly")  # a quoted identifier


def applied_version_of(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return applied_version(conn)


@contextmanager
def _maintenance(conninfo: str, *, wait: bool) -> Iterator[psycopg.Connection | None]:
    """An autocommit connection holding the maintenance lock, or None if busy and not waiting."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if wait:
            conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        else:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK]).fetchone()
            if not got or not got[0]:
                yield None
                return
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])


def maintain(
    conninfo: str,
    storage: StorageSettings,
    *,
    now: datetime | None = None,
    wait: bool = True,
    partitions: bool = True,
) -> dict[str, int] | None:
    """Routine upkeep: refresh the rollups and, with ``partitions``, make partitions ahead and
    apply retention.

    In TimescaleDB mode its policies do most of this; what is left is catching the aggregates
    up with late readings older than the refresh policies' windows, which only the aggregates'
    owner may do (:class:`NotOwnerError` for another login). With ``wait=False`` it returns
    None at once when another process holds the lock.
    """
    with _maintenance(conninfo, wait=wait) as conn:
        if conn is None:
            return None
        mode = current_mode(conn)
        if mode is None:
            raise MigrationError("database is not migrated: run `pantau db migrate`")
        if mode is Mode.TIMESCALEDB:
            if not timescaledb.owns_aggregates(conn):
                raise NotOwnerError(
                    "catching the continuous aggregates up with late readings needs their "
                    "owner: run `pantau db maintain` as it"
                )
            # The policies keep the newest buckets; this catches up everything older: late
            # readings before a policy's window, and ranges a late-running policy skipped.
            return {"rollups_caught_up": timescaledb.refresh_aggregates(conn, catch_up=True)}
        with conn.transaction():
            return postgres.maintain(conn, storage, now or datetime.now(UTC), partitions=partitions)


def refresh_rollups(conninfo: str, *, through: datetime | None = None) -> None:
    """Materialise the rollups now, up to each one's bucket open at ``through`` (default: now).

    For tests, backfills and benchmarks: readers see current rollups either way (the open
    buckets are computed live); this moves the work from reading to now and catches up every
    late reading within raw retention. In TimescaleDB mode ``through`` is capped at now, so no
    open bucket is ever materialised, and a refresh policy's job running meanwhile only
    delays it.
    """
    with _maintenance(conninfo, wait=True) as conn:
        assert conn is not None
        if current_mode(conn) is Mode.TIMESCALEDB:
            timescaledb.refresh_aggregates(conn, through=through)
        else:
            with conn.transaction():
                postgres.refresh(conn, through or datetime.now(UTC))


# The logins `pantau db migrate` keeps, each in the group role that holds its privileges.
LOGINS = {
    "pantau_reader": "pantau_readonly",
    "pantau_api": "pantau_operator",
    "pantau_ingest": "pantau_ingester",
    "pantau_alerts": "pantau_alerter",
}


def set_login_password(conninfo: str, login: str, password: str | None) -> None:
    """Create or update one of the LOGINS in its group; no password leaves it unable to log in."""
    group = LOGINS[login]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [login]).fetchone()
        can_login = (
            sql.SQL("LOGIN PASSWORD {}").format(sql.Literal(password))
            if password
            else sql.SQL("NOLOGIN")
        )
        verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
        conn.execute(sql.SQL("{} ROLE {} {}").format(verb, sql.Identifier(login), can_login))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(login)))
