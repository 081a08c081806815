"""`pantau alertmanager`: Alertmanager's configuration and message templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pantau.alertmanager import AlertmanagerConfigError, write_config
from pantau.cli.common import cli_settings, err

app = typer.Typer(
    help="Notifications through Prometheus Alertmanager (docs/alerts.md).", no_args_is_help=True
)


@app.command("config")
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
    settings = cli_settings(use_stack=False)
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
