"""`pantau up` and `pantau bench`: the developer tools, where the `tools` extra is installed."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Annotated

import typer

from pantau.cli.common import TOOLS_HINT, cli_settings, err


def tools_module(name: str, command: str) -> ModuleType:
    """The tools module ``name``; exit 2 with one line saying what to install where it is not."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is None or not (
            error.name == "pantau.tools" or error.name.startswith("pantau.tools.")
        ):
            raise
        err.print(
            f"`{command}` {TOOLS_HINT}", style="red", markup=False, highlight=False, soft_wrap=True
        )
        raise typer.Exit(2) from None


def up(
    scenario: Annotated[str, typer.Option(help="Simulator scenario to run")] = "normal",
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 60.0,
    simulate: Annotated[bool, typer.Option(help="Run the city simulator")] = True,
) -> None:
    """Run the whole platform on this machine until Ctrl-C."""
    run_platform = tools_module("pantau.tools.up", "pantau up").run_platform
    settings = cli_settings(use_stack=False)
    raise typer.Exit(run_platform(settings, scenario=scenario, speed=speed, simulate=simulate))
