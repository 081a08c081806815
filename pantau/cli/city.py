"""`pantau city`: city files and the sensor registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.table import Table

from pantau.cli.common import cli_settings, console, database_url, err
from pantau.cli_support import city_or_exit
from pantau.db import registry

app = typer.Typer(help="City files and the sensor registry.", no_args_is_help=True)


@app.command("load")
def city_load(
    path: Annotated[
        Path | None, typer.Argument(help="City file; default: PANTAU_CITY_FILE")
    ] = None,
) -> None:
    """Put a city file's kecamatan and sensors into the registry (idempotent)."""
    settings = cli_settings()
    city = city_or_exit(settings, path)
    try:
        with psycopg.connect(database_url(settings), autocommit=True) as conn:
            result = registry.load_city(conn, city)
    except psycopg.Error as error:
        err.print(f"[red]cannot load the city:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(
        f"{city.name}: {result.kecamatan} kecamatan, {result.sensors} sensors, "
        f"{result.thresholds_changed} threshold version(s) added"
    )


@app.command("show")
def city_show(
    path: Annotated[
        Path | None, typer.Argument(help="City file; default: PANTAU_CITY_FILE")
    ] = None,
) -> None:
    """Validate a city file and list its sensors."""
    city = city_or_exit(cli_settings(), path)
    table = Table(
        title=f"{city.name}: {len(city.sensors)} sensors in {len(city.kecamatan)} kecamatan"
    )
    for column in ("id", "family", "kecamatan", "name", "interval"):
        table.add_column(column)
    for s in city.sensors:
        table.add_row(s.id, s.family.value, s.kecamatan, s.name, f"{s.interval_s:g} s")
    console.print(table)
