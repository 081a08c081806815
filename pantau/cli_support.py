"""Pieces the command lines share: a bad input is a clear message and an exit status."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from pantau.city import City, CityFileError, load_city
from pantau.settings import Settings

err = Console(stderr=True)


def city_or_exit(settings: Settings, path: Path | None) -> City:
    """The city file ``path`` (default: PANTAU_CITY_FILE); an invalid one exits with status 2."""
    try:
        return load_city(path or settings.city_file)
    except CityFileError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
