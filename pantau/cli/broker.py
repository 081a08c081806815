"""`pantau broker`: the production broker's configuration, ACL and service accounts, and the
options and reload that `pantau devices` shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pantau.cli.accounts import DeviceError
from pantau.cli.common import cli_settings, err
from pantau.cli.mosquitto import (
    BrokerConfigError,
    PasswordFileError,
    ReloadError,
    config_files,
    reload_broker,
    set_service_accounts,
)
from pantau.settings import Settings

app = typer.Typer(
    help="The production broker: configuration, ACL and service accounts.", no_args_is_help=True
)

PasswordFile = Annotated[
    Path | None,
    typer.Option(help="Broker password file (PANTAU_BROKER__PASSWORD_FILE).", dir_okay=False),
]
ReloadCommand = Annotated[
    str | None,
    typer.Option(
        help="How to make the broker re-read its files, e.g. 'docker compose kill -s HUP "
        "mosquitto' (PANTAU_BROKER__RELOAD_COMMAND)."
    ),
]
PidFile = Annotated[
    Path | None,
    typer.Option(help="Send SIGHUP to the broker of this pid file (PANTAU_BROKER__PID_FILE)."),
]


def broker_settings(
    password_file: Path | None = None,
    reload_command: str | None = None,
    pid_file: Path | None = None,
) -> Settings:
    settings = cli_settings()
    overrides = {
        "password_file": password_file,
        "reload_command": reload_command,
        "pid_file": pid_file,
    }
    given = {key: value for key, value in overrides.items() if value is not None}
    if given:
        broker = settings.broker.model_copy(update=given)
        settings = settings.model_copy(update={"broker": broker})
    return settings


def reload_or_say(settings: Settings) -> None:
    try:
        how = reload_broker(settings)
    except ReloadError as error:
        err.print(f"[red]the change is saved, but the broker did not reload:[/red] {error}")
        raise typer.Exit(1) from None
    if how is None:
        err.print(
            "[yellow]saved; the broker applies it once it reloads (SIGHUP, or "
            "`docker compose kill -s HUP mosquitto`): set PANTAU_BROKER__RELOAD_COMMAND or "
            "PANTAU_BROKER__PID_FILE to do it here[/yellow]"
        )
    else:
        err.print(f"broker reloaded: {how}")


def fail(error: Exception) -> typer.Exit:
    err.print(f"[red]{error}[/red]")
    return typer.Exit(1)


@app.command("config")
def broker_config(
    out: Annotated[
        Path, typer.Option(help="Directory to write mosquitto.conf and acl into.", file_okay=False)
    ] = Path("mosquitto"),
    check: Annotated[
        bool, typer.Option(help="Only report whether the files there are in step (exit 1 if not).")
    ] = False,
) -> None:
    """Write the broker's configuration and ACL for the current settings."""
    settings = broker_settings()
    try:
        files = config_files(settings)
    except BrokerConfigError as error:
        raise fail(error) from None
    stale = [
        name
        for name, text in files.items()
        if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text
    ]
    if check:
        if stale:
            err.print(f"[red]out of step with the settings: {', '.join(stale)}[/red]")
            raise typer.Exit(1)
        err.print("in step with the settings")
        return
    out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (out / name).write_text(files[name], encoding="utf-8")
    err.print(f"wrote {', '.join(stale) or 'nothing (already in step)'} in {out}")


@app.command("accounts")
def broker_accounts(
    password_file: PasswordFile = None,
    reload_command: ReloadCommand = None,
    pid_file: PidFile = None,
) -> None:
    """Set the service accounts' passwords from the settings (idempotent)."""
    settings = broker_settings(password_file, reload_command, pid_file)
    path = settings.broker.password_file
    if path is None:
        raise fail(DeviceError("PANTAU_BROKER__PASSWORD_FILE is not set (or give --password-file)"))
    try:
        changed = set_service_accounts(settings, path)
    except PasswordFileError as error:
        raise fail(error) from None
    err.print(f"service accounts set: {', '.join(changed) or 'none changed'}")
    if changed:
        reload_or_say(settings)
