"""`pantau config` and `pantau catalogue`: the references generated from the code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pantau.catalogue import catalogue_markdown
from pantau.cli.common import err
from pantau.settings import settings_table


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


def catalogue_reference() -> None:
    """Print the sensor catalogue (Markdown): metrics, units, ranges, Smart Data Models."""
    typer.echo(catalogue_markdown(), nl=False)
