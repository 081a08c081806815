"""What the command groups share: the settings (with the running local stack's addresses where
nothing is configured), the database URL, and the consoles."""

from __future__ import annotations

from collections.abc import Callable

import typer
from rich.console import Console

from pantau import logs, stack
from pantau.settings import Settings, SettingsError, get_settings
from pantau.stack import StackRecord

console = Console()
err = Console(stderr=True)

TOOLS_HINT = "needs the developer tools: pip install 'pantau[tools]'"


def announce(line: str) -> None:
    """One dim line on stderr (e.g. which running stack a command talks to)."""
    err.print(line, style="dim", highlight=False, soft_wrap=True)


def running_stack(settings: Settings) -> StackRecord | None:
    """The record of the `pantau up` stack running from the state directory, if any."""
    return stack.running(settings.state_dir.resolve())


def adopt_stack(settings: Settings, *, say: Callable[[str], None] = announce) -> Settings:
    """``settings`` with the running stack's database and broker where none is configured."""
    return stack.adopt(settings, announce=say)


def cli_settings(*, use_stack: bool = True) -> Settings:
    """The settings (exit 2 on a bad one), with logging configured."""
    try:
        settings = get_settings()
    except SettingsError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    logs.configure(settings.log_level, json=settings.log_json)
    if use_stack:  # the stack `pantau up` runs from this checkout, where nothing is configured
        settings = adopt_stack(settings)
    return settings


def database_url(settings: Settings) -> str:
    """The database URL of the settings; exit 2 with a hint where there is none."""
    try:
        return settings.require_database_url()
    except SettingsError as error:
        err.print(
            f"[red]{error}[/red]: set it (e.g. postgresql://postgres@127.0.0.1:5432/pantau), "
            "or start `pantau up` here: commands use the stack it runs"
        )
        raise typer.Exit(2) from None
