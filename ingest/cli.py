"""`pantau ingest`: run the ingest service with the settings from the environment."""

from __future__ import annotations

import typer

from ingest.service import IngestService
from pantau.service_cli import CHECK_HELP, run_service

app = typer.Typer(
    help="Ingest: MQTT to the database, nothing lost, duplicated or stalled.",
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def run(check: bool = typer.Option(False, "--check", help=CHECK_HELP)) -> None:
    """Run the ingest service until SIGTERM or Ctrl-C (all options: PANTAU_* settings)."""
    run_service(
        check=check,
        sections={"database_url", "mqtt", "ingest", "storage"},
        service=IngestService,
    )


def main() -> None:
    app(prog_name="pantau ingest")
