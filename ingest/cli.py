"""`pantau ingest`: run the ingest service with the settings from the environment."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import typer
from rich.console import Console

from ingest.service import IngestService
from pantau import logs
from pantau.settings import SettingsError, get_settings

app = typer.Typer(
    help="Ingest: MQTT to the database, nothing lost, duplicated or stalled.",
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)

# The interpreter's default hands the GIL over every 5 ms. A writer thread gives it up at each
# round trip to the database and then waits up to that long for the decoding thread to yield,
# while its connection sits idle (with one writer connection this convoy cost about a third of
# the write throughput). A shorter interval keeps the database busy; the extra switching costs
# far less (docs/benchmarks.md).
GIL_SWITCH_INTERVAL_S = 0.0005


@app.command()
def run(
    check: bool = typer.Option(
        False, "--check", help="Validate the settings, print them (secrets hidden) and exit."
    ),
) -> None:
    """Run the ingest service until SIGTERM or Ctrl-C (all options: PANTAU_* settings)."""
    try:
        settings = get_settings()
        settings.require_database_url()
    except SettingsError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    if check:
        typer.echo(
            settings.model_dump_json(
                indent=2, include={"database_url", "mqtt", "ingest", "storage"}
            )
        )
        return
    logs.configure(settings.log_level, json=settings.log_json)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    service = IngestService(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        service.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    raise typer.Exit(service.run())


def main() -> None:
    app(prog_name="pantau ingest")
