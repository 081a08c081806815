"""`pantau api`: serve the API with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from api.main import configure_logging, create_app
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
    configure_logging(settings)
    # Several workers are separate processes: each builds its app (and pool) itself.
    workers = settings.api.workers
    uvicorn.run(
        "api.main:app_from_environment" if workers > 1 else create_app(settings),
        factory=workers > 1,
        workers=workers if workers > 1 else None,
        host=host or settings.api.host,
        port=port if port is not None else settings.api.port,
        log_config=None,
        access_log=settings.api.access_log,
        # The app believes forwarded headers from `PANTAU_API__TRUSTED_PROXIES` itself; the
        # server's own rule (FORWARDED_ALLOW_IPS) would apply before it, with other addresses.
        proxy_headers=False,
    )
