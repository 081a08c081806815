"""`pantau api`: serve the API with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from api.main import create_app
from pantau import logs
from pantau.settings import SettingsError, get_settings

app = typer.Typer(help="Serve the open-data and operator API.", add_completion=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Override PANTAU_API__HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Override PANTAU_API__PORT")] = None,
) -> None:
    """Run the API until interrupted."""
    try:
        settings = get_settings()
        settings.require_database_url()
    except SettingsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    logs.configure(settings.log_level, json=settings.log_json)
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port if port is not None else settings.api.port,
        log_config=None,
    )
