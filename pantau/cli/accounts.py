"""Device accounts on the broker, kept together with the sensor registry.

A device logs in with its own id as user name; the broker's ACL lets it publish only to
``ROOT/up/<id>`` and read only ``ROOT/down/<id>/#``. Its secret is random, shown once, and
stored only as a hash in the broker's password file. A sensor gets an account together with
its registry entry (from the city file); a gateway, which publishes SenML packs for other
sensors, together with its registry entry and the sensors it may report for (ingest refuses
any other reading on its uplink); a village warning post gets an account alone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psycopg
import yaml

from pantau.city import SENSOR_ID_PATTERN, City, Gateway
from pantau.cli.mosquitto import (
    editing_password_file,
    hash_password,
    new_secret,
    read_password_file,
)
from pantau.db import registry
from pantau.db.registry import RegistryError
from pantau.settings import Settings

Kind = Literal["sensor", "gateway", "warning-post", "service"]
CREDENTIALS_HEADER = (
    "# Device secrets written by `pantau devices import-city`: hand each to its device, then\n"
    "# keep this file out of reach (the broker stores only hashes).\n"
)


class DeviceError(ValueError):
    """A device command cannot be carried out; the message says why."""


def gateway_id(kecamatan: str) -> str:
    """The account of the gateway that serves a kecamatan (it publishes SenML packs)."""
    slug = "".join(c if c.isalnum() else "-" for c in kecamatan.lower()).strip("-")
    return f"gw-{slug}"[:63]


def service_accounts(settings: Settings) -> set[str]:
    """Accounts of Pantau's own services, which `pantau broker accounts` manages instead."""
    broker = settings.broker
    return {broker.ingest_user, broker.alerts_user, broker.public_user}


def _password_file(settings: Settings) -> Path:
    path = settings.broker.password_file
    if path is None:
        raise DeviceError("PANTAU_BROKER__PASSWORD_FILE is not set (or give --password-file)")
    return path


def _check_name(settings: Settings, device_id: str, kind: Kind) -> None:
    if device_id in service_accounts(settings):
        raise DeviceError(
            f"{device_id} is a service account: set its password in the settings and run "
            "`pantau broker accounts`"
        )
    if kind == "warning-post":
        if device_id not in settings.broker.warning_users:
            raise DeviceError(
                f"{device_id} is not in PANTAU_BROKER__WARNING_USERS: add it there and run "
                "`pantau broker config` first, so that the ACL lets it read the warnings"
            )
    elif not re.fullmatch(SENSOR_ID_PATTERN, device_id):
        raise DeviceError(f"{device_id!r} is not a valid device id ({SENSOR_ID_PATTERN})")


def register_sensor(conn: psycopg.Connection, city: City | None, sensor_id: str) -> bool:
    """Put the sensor's entry from the city file into the registry; False if it is in neither.

    A sensor missing from the city file may already be registered: then it is left as it is.
    """
    if city is not None and any(s.id == sensor_id for s in city.sensors):
        sensor = city.sensor(sensor_id)
        (kecamatan,) = [k for k in city.kecamatan if k.name == sensor.kecamatan]
        # One sensor of a validated city: its downstream links may name sensors not in this
        # subset, which the full validation would refuse.
        subset = City.model_construct(
            name=city.name, timezone=city.timezone, kecamatan=(kecamatan,), sensors=(sensor,)
        )
        registry.load_city(conn, subset)
        return True
    return conn.execute("SELECT 1 FROM sensors WHERE id = %s", [sensor_id]).fetchone() is not None


def _city_gateway(city: City | None, gateway_id: str) -> Gateway | None:
    return next((g for g in city.gateways if g.id == gateway_id), None) if city else None


def link_gateway(
    conn: psycopg.Connection, city: City | None, gateway_id: str, sensors: list[str]
) -> list[str]:
    """Register a gateway and let it report for ``sensors`` (and those the city file lists for
    it); returns the links added. Each sensor must be in the city file or the registry."""
    entry = _city_gateway(city, gateway_id)
    wanted = sorted(set(sensors) | set(entry.sensors if entry else ()))
    if not wanted:
        raise DeviceError(
            f"{gateway_id}: name the sensors it reports for (--sensor), or list it under "
            "`gateways:` in the city file"
        )
    if (city is not None and any(s.id == gateway_id for s in city.sensors)) or conn.execute(
        "SELECT 1 FROM sensors WHERE id = %s", [gateway_id]
    ).fetchone():
        raise DeviceError(f"{gateway_id} is a sensor: a sensor reports only for itself")
    unknown = [s for s in wanted if not register_sensor(conn, city, s)]
    if unknown:
        raise DeviceError(
            f"neither in the city file nor in the sensor registry: {', '.join(unknown)}"
        )
    try:
        return registry.register_gateway(
            conn,
            gateway_id,
            wanted,
            name=entry.name if entry else None,
            kecamatan=entry.kecamatan if entry else None,
        )
    except RegistryError as error:
        raise DeviceError(str(error)) from None


def unlink_gateway(conn: psycopg.Connection, gateway_id: str, sensors: list[str]) -> list[str]:
    """Stop a gateway reporting for ``sensors``; returns the links removed."""
    if not conn.execute("SELECT 1 FROM gateways WHERE id = %s", [gateway_id]).fetchone():
        raise DeviceError(f"{gateway_id} is not a registered gateway")
    return registry.unlink_gateway(conn, gateway_id, sensors)


def add_device(
    settings: Settings,
    device_id: str,
    *,
    kind: Kind = "sensor",
    city: City | None = None,
    conn: psycopg.Connection | None = None,
    sensors: list[str] | None = None,
) -> str:
    """Create the account (and, with ``conn``, the registry entry of a sensor or a gateway with
    the ``sensors`` it reports for); the secret.

    A sensor must be in the city file or already in the registry; so must a gateway's sensors.
    Without ``conn`` the registry is not touched.
    """
    _check_name(settings, device_id, kind)
    path = _password_file(settings)
    if device_id in read_password_file(path):
        raise DeviceError(f"{device_id} already has an account: `pantau devices rotate` it")
    if kind == "sensor" and conn is not None and not register_sensor(conn, city, device_id):
        raise DeviceError(
            f"{device_id} is neither in the city file nor in the sensor registry: add it to "
            "the city file first (or give --gateway for a gateway)"
        )
    if kind == "gateway" and conn is not None:
        link_gateway(conn, city, device_id, sensors or [])
    secret = new_secret()
    with editing_password_file(path) as accounts:
        if device_id in accounts:  # added by someone else meanwhile
            raise DeviceError(f"{device_id} already has an account: `pantau devices rotate` it")
        accounts[device_id] = hash_password(secret)
    return secret


def rotate_device(settings: Settings, device_id: str) -> str:
    """Give an existing device account a new secret; the old one stops working on reload."""
    if device_id in service_accounts(settings):
        raise DeviceError(f"{device_id} is a service account: change it in the settings")
    secret = new_secret()
    with editing_password_file(_password_file(settings)) as accounts:
        if device_id not in accounts:
            raise DeviceError(f"{device_id} has no account: `pantau devices add` it")
        accounts[device_id] = hash_password(secret)
    return secret


def remove_device(settings: Settings, device_id: str) -> None:
    """Delete a device account. Its registry entry stays: its readings still refer to it."""
    if device_id in service_accounts(settings):
        raise DeviceError(f"{device_id} is a service account, not a device")
    with editing_password_file(_password_file(settings)) as accounts:
        if accounts.pop(device_id, None) is None:
            raise DeviceError(f"{device_id} has no account")


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One line of `pantau devices list`."""

    id: str
    kind: Kind
    has_account: bool
    registered: bool | None  # None: the registry was not consulted
    family: str | None = None
    kecamatan: str | None = None
    reports_for: tuple[str, ...] = ()  # a gateway's sensors


def list_devices(
    settings: Settings, *, city: City | None = None, conn: psycopg.Connection | None = None
) -> list[DeviceRow]:
    """Every account, and every sensor of the registry (or city file) with or without one."""
    accounts = set(read_password_file(_password_file(settings)))
    sensors: dict[str, tuple[str, str]] = {}
    # Gateway id: (kecamatan, sensors it reports for).
    gateways: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    kecamatan: set[str] = set()
    if conn is not None:
        rows = conn.execute("SELECT id, family, kecamatan FROM sensors").fetchall()
        sensors = {sensor_id: (family, place) for sensor_id, family, place in rows}
        kecamatan = {name for (name,) in conn.execute("SELECT name FROM kecamatan")}
        gateways = {
            gateway: (place, tuple(linked))
            for gateway, place, linked in conn.execute(
                "SELECT g.id, g.kecamatan, coalesce(array_agg(l.sensor_id ORDER BY l.sensor_id) "
                "FILTER (WHERE l.sensor_id IS NOT NULL), '{}') "
                "FROM gateways g LEFT JOIN gateway_sensors l ON l.gateway_id = g.id GROUP BY g.id"
            ).fetchall()
        }
    elif city is not None:
        sensors = {s.id: (s.family.value, s.kecamatan) for s in city.sensors}
        gateways = {g.id: (g.kecamatan, tuple(sorted(g.sensors))) for g in city.gateways}
    if city is not None:
        kecamatan |= {k.name for k in city.kecamatan}
    # Accounts named like a kecamatan's gateway but not (yet) registered as one: they report
    # for nobody until they are (`pantau devices link`).
    unregistered = {gateway_id(name) for name in kecamatan} - set(sensors)
    out = []
    for name in sorted(accounts | set(sensors) | set(gateways)):
        kind: Kind = "sensor"
        if name in service_accounts(settings):
            kind = "service"
        elif name in settings.broker.warning_users:
            kind = "warning-post"
        elif name in gateways or name in unregistered:
            kind = "gateway"
        place, linked = gateways.get(name, (None, ()))
        family, place = sensors.get(name, (None, place))
        known = name in sensors or name in gateways
        registered = known if conn is not None else None
        out.append(DeviceRow(name, kind, name in accounts, registered, family, place, linked))
    return out


@dataclass
class ImportResult:
    """What `import-city` did."""

    created: dict[str, str] = field(default_factory=dict)  # account: secret, new this run
    existing: list[str] = field(default_factory=list)
    # Accounts that existed already but whose secret the credentials file does not hold.
    without_secret: list[str] = field(default_factory=list)


def city_accounts(city: City, *, gateways: bool) -> list[str]:
    """The device accounts a city needs: every sensor, and every gateway of the file."""
    names = [s.id for s in city.sensors]
    if gateways:
        names += sorted(g.id for g in city.gateways)
    return names


def import_city(
    settings: Settings,
    city: City,
    *,
    gateways: bool = True,
    credentials: Path | None = None,
    conn: psycopg.Connection | None = None,
) -> ImportResult:
    """Give every sensor (and gateway) of the city an account; idempotent.

    Existing accounts keep their secret. With ``credentials``, the secrets are merged into
    that YAML file (device: secret), which ``pantau simulate --credentials`` reads. With
    ``conn``, the city is loaded into the registry as well.
    """
    if conn is not None:
        registry.load_city(conn, city)
    known = _read_credentials(credentials) if credentials is not None else {}
    result = ImportResult()
    with editing_password_file(_password_file(settings)) as accounts:
        for name in city_accounts(city, gateways=gateways):
            if name in accounts:
                result.existing.append(name)
                if name not in known:
                    result.without_secret.append(name)
                continue
            secret = new_secret()
            accounts[name] = hash_password(secret)
            result.created[name] = secret
    if credentials is not None and result.created:
        _write_credentials(credentials, {**known, **result.created})
    return result


def _read_credentials(path: Path) -> dict[str, str]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as error:
        raise DeviceError(f"{path}: cannot read the credentials file: {error}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DeviceError(f"{path}: expected a mapping of device id to secret")
    return {str(k): str(v) for k, v in raw.items()}


def _write_credentials(path: Path, secrets: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    # Secrets: readable by the owner only, from the first byte written.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(CREDENTIALS_HEADER)
        yaml.safe_dump(dict(sorted(secrets.items())), handle, default_flow_style=False)
    os.replace(temporary, path)
