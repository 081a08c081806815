"""`pantau db`: migrations, maintenance and the database's status."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import psycopg
import typer
from rich.table import Table

from pantau.cli.common import cli_settings, console, database_url, err
from pantau.cli.dbstatus import format_age, format_compression, job_cells, status
from pantau.db.migrate import (
    MigrationError,
    NotOwnerError,
    maintain,
    migrate,
    set_login_password,
)

app = typer.Typer(help="Database schema, maintenance and status.", no_args_is_help=True)


@app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations and make policies/partitions match the settings (idempotent)."""
    settings = cli_settings()
    url = database_url(settings)
    try:
        result = migrate(url, settings.storage)
        for login, password in (
            ("pantau_reader", settings.readonly_password),
            ("pantau_api", settings.api_password),
            ("pantau_ingest", settings.ingest_password),
            ("pantau_alerts", settings.alerts_password),
        ):
            if password is not None:
                set_login_password(url, login, password.get_secret_value())
    except (MigrationError, psycopg.Error) as error:
        err.print(f"[red]migration failed:[/red] {error}")
        raise typer.Exit(1) from None
    applied = ", ".join(f"{v:04d}" for v in result.applied) or "none (already up to date)"
    # One line however many versions, for logs and scripts.
    console.print(
        f"mode: [bold]{result.mode}[/bold]  version: {result.version}  applied: {applied}",
        soft_wrap=True,
    )


@app.command("maintain")
def db_maintain(
    every_s: Annotated[
        float,
        typer.Option(
            "--every-s",
            min=0,
            help="Keep going: maintain again every so many seconds until stopped (0: once).",
        ),
    ] = 0.0,
) -> None:
    """Refresh the rollups, create partitions ahead and apply retention (plain PostgreSQL);
    catch the aggregates up with late readings (TimescaleDB, whose policies do the rest)."""
    settings = cli_settings()
    url = database_url(settings)
    stop = threading.Event()
    if every_s:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    while True:
        try:
            done = maintain(url, settings.storage)
        except (MigrationError, psycopg.Error) as error:
            err.print(f"[red]maintenance failed:[/red] {error}")
            if not every_s or isinstance(error, NotOwnerError):
                raise typer.Exit(1) from None
        else:
            if done is not None and "rollups_caught_up" in done:
                console.print(f"TimescaleDB: {done['rollups_caught_up']} aggregate(s) caught up")
            else:
                console.print(done)
        if not every_s or stop.wait(every_s):
            return


@app.command("status")
def db_status() -> None:
    """Report the storage mode, migration version, row counts, rollup lag and (TimescaleDB)
    compression and background jobs; problems are printed in red."""
    settings = cli_settings()
    try:
        state = status(database_url(settings))
    except psycopg.Error as error:
        err.print(f"[red]cannot read the database:[/red] {error}")
        raise typer.Exit(1) from None
    table = Table(title="Pantau database", show_header=False)
    table.add_row("mode", str(state.mode or "not migrated"))
    table.add_row("migration version", f"{state.version} of {state.latest_version}")
    table.add_row("timescaledb", state.timescaledb_version or "not installed")
    table.add_row("partitions/chunks", str(state.partitions))
    for name, count in state.rows.items():
        table.add_row(f"rows: {name}", f"{count:,}")
    for name, lag in state.lag.items():
        mark = state.watermarks[name]
        table.add_row(
            f"lag: {name}",
            "nothing materialised yet"
            if lag is None or mark is None
            else f"{format_age(lag)} (materialised up to {mark:%Y-%m-%d %H:%M} UTC)",
        )
    if state.compression is not None:
        table.add_row("compression", format_compression(state.compression))
    console.print(table)
    if state.jobs:
        jobs = Table(title="TimescaleDB jobs")
        for column in ("id", "job", "target", "every", "last run", "result", "failed", "next"):
            jobs.add_column(column)
        for job in state.jobs:
            jobs.add_row(*job_cells(job, state.checked_at), style="red" if job.failing else None)
        console.print(jobs)
    for problem in state.problems:
        console.print(f"[red]problem: {problem}[/red]")
    if not state.up_to_date:
        raise typer.Exit(1)
