"""`pantau alerts`: run the alert service with the settings from the environment."""

from __future__ import annotations

import typer

from alerts.service import AlertService
from pantau.service_cli import CHECK_HELP, run_service

app = typer.Typer(
    help="Alerts: flood levels, predicted arrival, offline sensors and city alerts.",
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def run(check: bool = typer.Option(False, "--check", help=CHECK_HELP)) -> None:
    """Run the alert service until SIGTERM or Ctrl-C (all options: PANTAU_* settings)."""
    run_service(
        check=check, sections={"database_url", "mqtt", "alerts", "notify"}, service=AlertService
    )


def main() -> None:
    app(prog_name="pantau alerts")
