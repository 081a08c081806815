"""`pantau devices`: device accounts on the broker with their registry entries, and `watch`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.table import Table

from pantau.cli.accounts import (
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
from pantau.cli.broker import (
    PasswordFile,
    PidFile,
    ReloadCommand,
    broker_settings,
    fail,
    reload_or_say,
)
from pantau.cli.common import adopt_stack, console, database_url, err
from pantau.cli.mosquitto import PasswordFileError
from pantau.cli_support import city_or_exit
from pantau.feedback import FeedbackError, FeedbackListener
from pantau.settings import MqttSettings, Settings, SettingsError, get_settings

app = typer.Typer(
    help="Device accounts on the broker, kept together with the sensor registry.",
    no_args_is_help=True,
)


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


def _connection(
    settings: Settings, registry: bool
) -> AbstractContextManager[psycopg.Connection | None]:
    if not registry:
        return nullcontext(None)
    url = database_url(settings)
    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.Error as error:
        err.print(f"[red]cannot reach the sensor registry:[/red] {error}")
        raise typer.Exit(1) from None


@contextmanager
def _broker_change(settings: Settings, *errors: type[Exception]) -> Iterator[None]:
    """A change of the broker's accounts: ``errors`` become a message and exit status 1; once
    the change is saved, the broker reloads."""
    try:
        yield
    except errors as error:
        raise fail(error) from None
    reload_or_say(settings)


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
    settings = broker_settings(password_file, reload_command, pid_file)
    kind: Kind = "gateway" if gateway else "warning-post" if warning_post else "sensor"
    if sensor and kind != "gateway":
        raise fail(DeviceError("--sensor is for a gateway (--gateway)"))
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
    settings = broker_settings()
    the_city = city_or_exit(settings, city)
    try:
        with _connection(settings, True) as conn:
            assert conn is not None
            added = link_gateway(conn, the_city, gateway, sensors)
    except (DeviceError, psycopg.Error) as error:
        raise fail(error) from None
    err.print(f"{gateway} may report for {', '.join(added) or 'no new sensor'} from now on")


@app.command("unlink")
def unlink(gateway: GatewayArgument, sensors: SensorArguments) -> None:
    """Stop a gateway reporting for sensors (a lost gateway: `remove` its account too)."""
    settings = broker_settings()
    try:
        with _connection(settings, True) as conn:
            assert conn is not None
            removed = unlink_gateway(conn, gateway, sensors)
    except (DeviceError, psycopg.Error) as error:
        raise fail(error) from None
    err.print(f"{gateway} no longer reports for {', '.join(removed) or 'any of them'}")


@app.command("rotate")
def rotate(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    password_file: PasswordFile = None,
    reload_command: ReloadCommand = None,
    pid_file: PidFile = None,
) -> None:
    """Give a device a new secret (printed once); the old one is refused after the reload."""
    settings = broker_settings(password_file, reload_command, pid_file)
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
    settings = broker_settings(password_file, reload_command, pid_file)
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
    settings = broker_settings(password_file)
    try:
        with _connection(settings, registry) as conn:
            rows = list_devices(settings, city=city_or_exit(settings, city), conn=conn)
    except (PasswordFileError, DeviceError, psycopg.Error) as error:
        raise fail(error) from None
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
    settings = broker_settings(password_file, reload_command, pid_file)
    city = city_or_exit(settings, path)
    try:
        with _connection(settings, registry) as conn:
            result = import_city(
                settings, city, gateways=gateways, credentials=credentials, conn=conn
            )
    except (DeviceError, PasswordFileError, psycopg.Error) as error:
        raise fail(error) from None
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
        reload_or_say(settings)


@app.command("watch")
def watch_command(
    device: Annotated[str, typer.Argument(help="Device id (as in its topic ROOT/up/DEVICE_ID).")],
    mqtt_url: Annotated[
        str | None, typer.Option("--mqtt-url", help="Broker, mqtt://HOST:PORT (PANTAU_MQTT__URL).")
    ] = None,
    topic_root: Annotated[
        str | None, typer.Option("--topic-root", help="Topic root (PANTAU_MQTT__TOPIC_ROOT).")
    ] = None,
    username: Annotated[
        str | None,
        typer.Option(help="Broker user (production: the device's own id, which may read it)."),
    ] = None,
    password: Annotated[
        str | None, typer.Option(help="Broker password.", envvar="PANTAU_WATCH_PASSWORD")
    ] = None,
    count: Annotated[
        int, typer.Option(help="Stop after this many notices (0: run until Ctrl-C).", min=0)
    ] = 0,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", help="Stop after this many seconds (0: never).", min=0)
    ] = 0.0,
) -> None:
    """Print a device's rejection notices as ingest publishes them (Ctrl-C stops)."""
    out = console
    try:
        settings = adopt_stack(get_settings())
        update: dict[str, object] = {}
        if mqtt_url is not None:
            update["url"] = mqtt_url
        if topic_root is not None:
            update["topic_root"] = topic_root
        mqtt_settings = MqttSettings.model_validate({**settings.mqtt.model_dump(), **update})
    except (SettingsError, ValueError) as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    listener = FeedbackListener(
        mqtt_settings=mqtt_settings, device_id=device, username=username, password=password
    )
    try:
        listener.start(timeout_s=mqtt_settings.connect_timeout_s)
    except FeedbackError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    err.print(f"watching {listener.topic} on {mqtt_settings.url} (Ctrl-C stops)", soft_wrap=True)
    seen = 0
    deadline = None if not timeout_s else time.monotonic() + timeout_s
    try:
        while not count or seen < count:
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                break
            notice = listener.get(wait)
            if notice is None:
                continue
            seen += 1
            out.print(
                f"{notice.time.isoformat(timespec='seconds')}  {notice.topic}  "
                f"[red]{notice.reason}[/red]  {notice.detail}",
                highlight=False,
                soft_wrap=True,
            )
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
