"""The `pantau` command: database, city registry, the services, and the whole platform at once.

One module a command group; the services' own command lines are imported only when called.
"""

from __future__ import annotations

import importlib

import typer

from pantau.cli import alertmanager, broker, city, db, devices, grafana, keys, local, reference

app = typer.Typer(
    help="Pantau: sensor platform for Kabupaten Pasuruan.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(city.app, name="city")
app.add_typer(alertmanager.app, name="alertmanager")
app.add_typer(keys.app, name="keys")
app.add_typer(devices.app, name="devices")
app.add_typer(broker.app, name="broker")
app.add_typer(grafana.app, name="grafana")
app.command("config")(reference.config_reference)
app.command("catalogue")(reference.catalogue_reference)
app.command("up")(local.up)


def _delegate(name: str, module: str, help_text: str, *, tools: bool = False) -> None:
    """Mount a service's own command-line app, imported only when it is called."""

    @app.command(
        name,
        help=help_text,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def command(ctx: typer.Context) -> None:
        found = local.tools_module(module, f"pantau {name}") if tools else None
        sub = (found or importlib.import_module(module)).app
        sub(args=ctx.args, prog_name=f"pantau {name}")


_delegate("ingest", "ingest.cli", "Run the ingest service (MQTT to the database).")
_delegate("simulate", "simulators.cli", "Simulate the city's sensors over MQTT.")
_delegate("api", "api.cli", "Run the open-data and operator API.")
_delegate("bench", "pantau.tools.bench.cli", "Benchmarks (e.g. `pantau bench ingest`).", tools=True)
_delegate("alerts", "alerts.cli", "Run the alert service (early warnings over MQTT).")


def main() -> None:
    app()
