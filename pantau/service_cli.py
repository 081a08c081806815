"""The `run` command shared by the long-running services (`pantau ingest`, `pantau alerts`)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Collection
from types import FrameType
from typing import NoReturn, Protocol

import typer
from rich.console import Console

from pantau import logs
from pantau.settings import Settings, SettingsError, get_settings

# The interpreter's default hands the GIL over every 5 ms. A writer thread gives it up at each
# round trip to the database and then waits up to that long for the decoding thread to yield,
# while its connection sits idle (with one writer connection this convoy cost about a third of
# the write throughput). A shorter interval keeps the database busy; the extra switching costs
# far less (docs/benchmarks.md). It also lets paho's network thread receive, acknowledge and
# publish while a service works through a batch.
GIL_SWITCH_INTERVAL_S = 0.0005

CHECK_HELP = "Validate the settings, print them (secrets hidden) and exit."

err = Console(stderr=True)


class Service(Protocol):
    """What `run_service` needs of a service: run until asked to stop."""

    def run(self) -> int: ...

    def request_stop(self) -> None: ...


def run_service(
    *, check: bool, sections: Collection[str], service: Callable[[Settings], Service]
) -> NoReturn:
    """Load the settings (exit 2 on a bad one), print ``sections`` of them for ``--check``, or
    build ``service`` and run it until SIGTERM or Ctrl-C, exiting with its status."""
    try:
        settings = get_settings()
        settings.require_database_url()
    except SettingsError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    if check:
        typer.echo(settings.model_dump_json(indent=2, include=set(sections)))
        raise typer.Exit(0)
    logs.configure(settings.log_level, json=settings.log_json)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    running = service(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        running.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    raise typer.Exit(running.run())
