"""`pantau devices` (device accounts with their registry entries) and `pantau broker` (config)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from pantau.broker import (
    BrokerConfigError,
    PasswordFileError,
    ReloadError,
    config_files,
    reload_broker,
    set_service_accounts,
)
from pantau.cli_support import city_or_exit
from pantau.devices import (
    DeviceError,
    Kind,
    add_device,
    import_city,
    link_gateway,
    list_devices,
    remove_device,
    rotate_device,
    unlink_gateway,
)
from pantau.settings import Settings

app = typer.Typer(
    help="Device accounts on the broker, kept together with the sensor registry.",
    no_args_is_help=True,
)
broker_app = typer.Typer(
    help="The production broker: configuration, ACL and service accounts.", no_args_is_help=True
)

console = Console()
err = Console(stderr=True)

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
Registry = Annotated[
    bool,
    typer.Option(
        "--registry/--no-registry",
        help="Also update the sensor registry (needs PANTAU_DATABASE_URL).",
    ),
]
CityOption = Annotated[
    Path | None, typer.Option("--city", help="City file (PANTAU_CITY_FILE).", dir_okay=False)
]


def _settings(
    password_file: Path | None = None,
    reload_command: str | None = None,
    pid_file: Path | None = None,
) -> Settings:
    from pantau.cli import _settings as base_settings  # pantau.cli mounts this app

    settings = base_settings()
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


def _connection(
    settings: Settings, registry: bool
) -> AbstractContextManager[psycopg.Connection | None]:
    if not registry:
        return nullcontext(None)
    from pantau.cli import _database_url

    url = _database_url(settings)
    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.Error as error:
        err.print(f"[red]cannot reach the sensor registry:[/red] {error}")
        raise typer.Exit(1) from None


def _reload(settings: Settings) -> None:
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


def _fail(error: Exception) -> typer.Exit:
    err.print(f"[red]{error}[/red]")
    return typer.Exit(1)


@contextmanager
def _broker_change(settings: Settings, *errors: type[Exception]) -> Iterator[None]:
    """A change of the broker's accounts: ``errors`` become a message and exit status 1; once
    the change is saved, the broker reloads."""
    try:
        yield
    except errors as error:
        raise _fail(error) from None
    _reload(settings)


def _show_secret(device_id: str, secret: str) -> None:
    # The secret alone on standard output (for scripts); the explanation on standard error.
    err.print(f"new secret of [bold]{device_id}[/bold], shown only now: store it on the device")
    typer.echo(secret)


Sensors = Annotated[
    list[str] | None,
    typer.Option(
        "--sensor",
        help="A sensor the gateway may report for (repeat it); the city file's list is added.",
    ),
]


@app.command("add")
def add(
    device_id: Annotated[str, typer.Argument(help="Device id, which is its user name.")],
    gateway: Annotated[
        bool,
        typer.Option(
            help="A gateway: registered with the sensors it may report for (the city file's "
            "`gateways:` entry and --sensor)."
        ),
    ] = False,
    sensor: Sensors = None,
    warning_post: Annotated[
        bool, typer.Option(help="A village warning post listed in PANTAU_BROKER__WARNING_USERS.")
    ] = False,
    registry: Registry = True,
    city: CityOption = None,
    password_file: PasswordFile = None,
    reload_command: ReloadCommand = None,
    pid_file: PidFile = None,
) -> None:
    """Create a device's account and registry entry (from the city file); print its secret."""
    settings = _settings(password_file, reload_command, pid_file)
    kind: Kind = "gateway" if gateway else "warning-post" if warning_post else "sensor"
    if sensor and kind != "gateway":
        raise _fail(DeviceError("--sensor is for a gateway (--gateway)"))
    the_city = city_or_exit(settings, city) if kind in ("sensor", "gateway") else None
    with _broker_change(settings, DeviceError, PasswordFileError, psycopg.Error):
        with _connection(settings, registry and kind in ("sensor", "gateway")) as conn:
            secret = add_device(
                settings, device_id, kind=kind, city=the_city, conn=conn, sensors=sensor
            )
        _show_secret(device_id, secret)


GatewayArgument = Annotated[str, typer.Argument(help="Gateway id (its user name).")]
SensorArguments = Annotated[list[str], typer.Argument(help="Sensor ids.")]


@app.command("link")
def link(
    gateway: GatewayArgument,
    sensors: SensorArguments,
    city: CityOption = None,
) -> None:
    """Let a gateway report for more sensors (registering it if new); applies without a
    restart: ingest reloads the registry when a reading it would refuse arrives."""
    settings = _settings()
    the_city = city_or_exit(settings, city)
    try:
        with _connection(settings, True) as conn:
            assert conn is not None
            added = link_gateway(conn, the_city, gateway, sensors)
    except (DeviceError, psycopg.Error) as error:
        raise _fail(error) from None
    err.print(f"{gateway} may report for {', '.join(added) or 'no new sensor'} from now on")


@app.command("unlink")
def unlink(gateway: GatewayArgument, sensors: SensorArguments) -> None:
    """Stop a gateway reporting for sensors (a lost gateway: `remove` its account too)."""
    settings = _settings()
    try:
        with _connection(settings, True) as conn:
            assert conn is not None
            removed = unlink_gateway(conn, gateway, sensors)
    except (DeviceError, psycopg.Error) as error:
        raise _fail(error) from None
    err.print(f"{gateway} no longer reports for {', '.join(removed) or 'any of them'}")


@app.command("rotate")
def rotate(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    password_file: PasswordFile = None,
    reload_command: ReloadCommand = None,
    pid_file: PidFile = None,
) -> None:
    """Give a device a new secret (printed once); the old one is refused after the reload."""
    settings = _settings(password_file, reload_command, pid_file)
    with _broker_change(settings, DeviceError, PasswordFileError):
        _show_secret(device_id, rotate_device(settings, device_id))


@app.command("remove")
def remove(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    password_file: PasswordFile = None,
    reload_command: ReloadCommand = None,
    pid_file: PidFile = None,
) -> None:
    """Delete a device's account; its registry entry and readings stay."""
    settings = _settings(password_file, reload_command, pid_file)
    with _broker_change(settings, DeviceError, PasswordFileError):
        remove_device(settings, device_id)
        err.print(f"{device_id}: account removed (its registry entry and history are kept)")


@app.command("list")
def list_command(
    registry: Registry = True,
    city: CityOption = None,
    password_file: PasswordFile = None,
) -> None:
    """Accounts, and registered sensors that have none."""
    settings = _settings(password_file)
    try:
        with _connection(settings, registry) as conn:
            rows = list_devices(settings, city=city_or_exit(settings, city), conn=conn)
    except (PasswordFileError, DeviceError, psycopg.Error) as error:
        raise _fail(error) from None
    table = Table(title=f"{sum(r.has_account for r in rows)} accounts")
    for column in ("id", "kind", "account", "registered", "family", "kecamatan"):
        table.add_column(column)
    for row in rows:
        registered = "?" if row.registered is None else "yes" if row.registered else "no"
        table.add_row(
            row.id,
            row.kind,
            "yes" if row.has_account else "[red]none[/red]",
            registered,
            row.family or "",
            row.kecamatan or "",
        )
    console.print(table)
    # Whom each gateway may report for: a line each, which a narrow table would cut.
    for row in rows:
        if row.kind == "gateway":
            sensors = ", ".join(row.reports_for) or "nobody (`pantau devices link` it)"
            console.print(f"{row.id} reports for: {sensors}", soft_wrap=True)


@app.command("import-city")
def import_city_command(
    path: Annotated[
        Path | None, typer.Argument(help="City file; default: PANTAU_CITY_FILE", dir_okay=False)
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="Merge the new secrets into this YAML file (device: secret), as "
            "`pantau simulate --credentials` reads it.",
            dir_okay=False,
        ),
    ] = None,
    gateways: Annotated[
        bool, typer.Option(help="Also an account for every gateway of the file (SenML packs).")
    ] = True,
    registry: Registry = True,
    password_file: PasswordFile = None,
    reload_command: ReloadCommand = None,
    pid_file: PidFile = None,
) -> None:
    """Give every sensor of a city file (and its gateways) an account; idempotent."""
    settings = _settings(password_file, reload_command, pid_file)
    city = city_or_exit(settings, path)
    try:
        with _connection(settings, registry) as conn:
            result = import_city(
                settings, city, gateways=gateways, credentials=credentials, conn=conn
            )
    except (DeviceError, PasswordFileError, psycopg.Error) as error:
        raise _fail(error) from None
    err.print(
        f"{city.name}: {len(result.created)} accounts created, {len(result.existing)} existed"
        + (f"; secrets in {credentials}" if credentials and result.created else "")
    )
    if credentials is None:
        for name, secret in result.created.items():
            typer.echo(f"{name},{secret}")
    if result.without_secret:
        err.print(
            f"[yellow]{len(result.without_secret)} existing accounts have no secret in "
            f"{credentials or 'the output'}; `pantau devices rotate` them to get a new one[/yellow]"
        )
    if result.created:
        _reload(settings)


@broker_app.command("config")
def broker_config(
    out: Annotated[
        Path, typer.Option(help="Directory to write mosquitto.conf and acl into.", file_okay=False)
    ] = Path("mosquitto"),
    check: Annotated[
        bool, typer.Option(help="Only report whether the files there are in step (exit 1 if not).")
    ] = False,
) -> None:
    """Write the broker's configuration and ACL for the current settings."""
    settings = _settings()
    try:
        files = config_files(settings)
    except BrokerConfigError as error:
        raise _fail(error) from None
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


@broker_app.command("accounts")
def broker_accounts(
    password_file: PasswordFile = None,
    reload_command: ReloadCommand = None,
    pid_file: PidFile = None,
) -> None:
    """Set the service accounts' passwords from the settings (idempotent)."""
    settings = _settings(password_file, reload_command, pid_file)
    path = settings.broker.password_file
    if path is None:
        raise _fail(
            DeviceError("PANTAU_BROKER__PASSWORD_FILE is not set (or give --password-file)")
        )
    try:
        changed = set_service_accounts(settings, path)
    except PasswordFileError as error:
        raise _fail(error) from None
    err.print(f"service accounts set: {', '.join(changed) or 'none changed'}")
    if changed:
        _reload(settings)


# `pantau devices watch DEVICE_ID`: the device's rejection notices (pantau/feedback.py).
from pantau.feedback import watch_command  # noqa: E402

app.command("watch")(watch_command)
