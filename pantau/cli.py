"""The `pantau` command: database, city registry, the services, and the whole platform at once."""

from __future__ import annotations

import importlib
import signal
import threading
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from pantau import logs, stack
from pantau.catalogue import catalogue_markdown
from pantau.cli_support import city_or_exit
from pantau.db import registry
from pantau.db.migrate import (
    MigrationError,
    NotOwnerError,
    maintain,
    migrate,
    set_login_password,
)
from pantau.db.status import format_age, format_compression, job_cells, status
from pantau.settings import Settings, SettingsError, get_settings, settings_table

app = typer.Typer(
    help="Pantau: sensor platform for Kabupaten Pasuruan.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema, maintenance and status.", no_args_is_help=True)
city_app = typer.Typer(help="City files and the sensor registry.", no_args_is_help=True)
alertmanager_app = typer.Typer(
    help="Notifications through Prometheus Alertmanager (docs/alerts.md).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(city_app, name="city")
app.add_typer(alertmanager_app, name="alertmanager")
app.add_typer(importlib.import_module("pantau.keys").app, name="keys")
app.add_typer(importlib.import_module("pantau.devices_cli").app, name="devices")
app.add_typer(importlib.import_module("pantau.devices_cli").broker_app, name="broker")
app.add_typer(importlib.import_module("pantau.grafana").app, name="grafana")

console = Console()
err = Console(stderr=True)


def _settings(*, use_stack: bool = True) -> Settings:
    try:
        settings = get_settings()
    except SettingsError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    logs.configure(settings.log_level, json=settings.log_json)
    if use_stack:  # the stack `pantau up` runs from this checkout, where nothing is configured
        settings = stack.adopt(settings, announce=_announce)
    return settings


def _announce(line: str) -> None:
    err.print(line, style="dim", highlight=False, soft_wrap=True)


def _database_url(settings: Settings) -> str:
    try:
        return settings.require_database_url()
    except SettingsError as error:
        err.print(
            f"[red]{error}[/red]: set it (e.g. postgresql://postgres@127.0.0.1:5432/pantau), "
            "or start `pantau up` here: commands use the stack it runs"
        )
        raise typer.Exit(2) from None


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations and make policies/partitions match the settings (idempotent)."""
    settings = _settings()
    url = _database_url(settings)
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


@db_app.command("maintain")
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
    settings = _settings()
    url = _database_url(settings)
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


@db_app.command("status")
def db_status() -> None:
    """Report the storage mode, migration version, row counts, rollup lag and (TimescaleDB)
    compression and background jobs; problems are printed in red."""
    settings = _settings()
    try:
        state = status(_database_url(settings))
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


@city_app.command("load")
def city_load(
    path: Annotated[
        Path | None, typer.Argument(help="City file; default: PANTAU_CITY_FILE")
    ] = None,
) -> None:
    """Put a city file's kecamatan and sensors into the registry (idempotent)."""
    settings = _settings()
    city = city_or_exit(settings, path)
    try:
        with psycopg.connect(_database_url(settings), autocommit=True) as conn:
            result = registry.load_city(conn, city)
    except psycopg.Error as error:
        err.print(f"[red]cannot load the city:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(
        f"{city.name}: {result.kecamatan} kecamatan, {result.sensors} sensors, "
        f"{result.thresholds_changed} threshold version(s) added"
    )


@city_app.command("show")
def city_show(
    path: Annotated[
        Path | None, typer.Argument(help="City file; default: PANTAU_CITY_FILE")
    ] = None,
) -> None:
    """Validate a city file and list its sensors."""
    city = city_or_exit(_settings(), path)
    table = Table(
        title=f"{city.name}: {len(city.sensors)} sensors in {len(city.kecamatan)} kecamatan"
    )
    for column in ("id", "family", "kecamatan", "name", "interval"):
        table.add_column(column)
    for s in city.sensors:
        table.add_row(s.id, s.family.value, s.kecamatan, s.name, f"{s.interval_s:g} s")
    console.print(table)


@alertmanager_app.command("config")
def alertmanager_config(
    out: Annotated[
        Path,
        typer.Option(
            help="Directory to write alertmanager.yml and pantau.tmpl into.", file_okay=False
        ),
    ] = Path("alertmanager"),
    check: Annotated[
        bool, typer.Option(help="Only report whether the files there are in step (exit 1 if not).")
    ] = False,
) -> None:
    """Write Alertmanager's configuration (routes, receivers, inhibition) and the message
    templates for the current settings (PANTAU_NOTIFY__*)."""
    from pantau.alertmanager import AlertmanagerConfigError, write_config

    settings = _settings(use_stack=False)
    try:
        stale = write_config(settings.notify, out, check=check)
    except AlertmanagerConfigError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    if check:
        if stale:
            err.print(f"[red]out of step with the settings: {', '.join(stale)}[/red]")
            raise typer.Exit(1)
        err.print("in step with the settings")
        return
    err.print(f"wrote {', '.join(stale) or 'nothing (already in step)'} in {out}")


@app.command("config")
def config_reference(
    update: Annotated[
        Path | None,
        typer.Option(help="Rewrite the table between the settings markers of this file instead"),
    ] = None,
) -> None:
    """Print the configuration reference (Markdown), generated from the settings."""
    if update is None:
        typer.echo(settings_table())
        return
    text = update.read_text(encoding="utf-8")
    start, end = "<!-- settings:start -->", "<!-- settings:end -->"
    if start not in text or end not in text:
        err.print(f"[red]{update} has no {start} ... {end} markers[/red]")
        raise typer.Exit(2)
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    update.write_text(f"{head}{start}\n{settings_table()}\n{end}{tail}", encoding="utf-8")


@app.command("catalogue")
def catalogue_reference() -> None:
    """Print the sensor catalogue (Markdown): metrics, units, ranges, Smart Data Models."""
    typer.echo(catalogue_markdown(), nl=False)


@app.command()
def up(
    scenario: Annotated[str, typer.Option(help="Simulator scenario to run")] = "normal",
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 60.0,
    simulate: Annotated[bool, typer.Option(help="Run the city simulator")] = True,
) -> None:
    """Run the whole platform on this machine until Ctrl-C."""
    from pantau.up import run_platform

    settings = _settings(use_stack=False)
    raise typer.Exit(run_platform(settings, scenario=scenario, speed=speed, simulate=simulate))


def _delegate(name: str, module: str, help_text: str) -> None:
    """Mount a service's own command-line app, imported only when it is called."""

    @app.command(
        name,
        help=help_text,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def command(ctx: typer.Context) -> None:
        sub = importlib.import_module(module).app
        sub(args=ctx.args, prog_name=f"pantau {name}")


_delegate("ingest", "ingest.cli", "Run the ingest service (MQTT to the database).")
_delegate("simulate", "simulators.cli", "Simulate the city's sensors over MQTT.")
_delegate("api", "api.cli", "Run the open-data and operator API.")
_delegate("bench", "pantau.bench.cli", "Benchmarks (e.g. `pantau bench ingest`).")
_delegate("alerts", "alerts.cli", "Run the alert service (early warnings over MQTT).")


def main() -> None:
    app()
