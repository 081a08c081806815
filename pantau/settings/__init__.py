"""One typed settings object per process.

Every option is read from the environment (prefix ``PANTAU_``; nested groups use ``__``, as in
``PANTAU_MQTT__URL``) or from a ``.env`` file, once, at start-up. Services receive the object as
an argument, so tests build their own with ``Settings(...)`` instead of patching the
environment. An invalid value stops the process with a message that names the option.

Each group of options has a module of its own (``pantau.settings.mqtt``, ``.ingest``,
``.storage``, ``.alerts``, ``.api``, ``.notify``, ``.broker``); this one puts them together in
:class:`Settings` and generates the README's configuration table (:func:`settings_table`).
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from pantau.settings.alerts import AlertSettings
from pantau.settings.api import ApiSettings
from pantau.settings.broker import BrokerSettings
from pantau.settings.ingest import IngestSettings
from pantau.settings.mqtt import MqttSettings
from pantau.settings.notify import ALERT_RULES, FLOOD_RULES, NotifySettings, Receiver
from pantau.settings.storage import StorageSettings

__all__ = [
    "ALERT_RULES",
    "DEFAULT_CITY_FILE",
    "FLOOD_RULES",
    "AlertSettings",
    "ApiSettings",
    "BrokerSettings",
    "IngestSettings",
    "MqttSettings",
    "NotifySettings",
    "Receiver",
    "Settings",
    "SettingsError",
    "StorageSettings",
    "describe_validation_error",
    "get_settings",
    "settings_table",
]

DEFAULT_CITY_FILE = Path(__file__).parent.parent / "cities" / "pasuruan.yaml"


class Settings(BaseSettings):
    """Everything one Pantau process is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="PANTAU_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL/TimescaleDB connection URL. `pantau up` starts a private "
        "cluster when it is unset.",
    )
    readonly_password: SecretStr | None = Field(
        default=None,
        description="Password of the read-only login `pantau_reader` (Grafana, public API); "
        "unset leaves it unable to log in.",
    )
    api_password: SecretStr | None = Field(
        default=None,
        description="Password of the login `pantau_api` a deployment's API uses: it reads, and "
        "writes only what operators change through it (acknowledgements, the registry, "
        "replays); unset leaves it unable to log in.",
    )
    ingest_password: SecretStr | None = Field(
        default=None,
        description="Password of the login `pantau_ingest` a deployment's ingest uses: it "
        "inserts readings, latest values and rejections (plain PostgreSQL: keeps the rollups "
        "and partitions) and changes nothing else; unset leaves it unable to log in.",
    )
    alerts_password: SecretStr | None = Field(
        default=None,
        description="Password of the login `pantau_alerts` a deployment's alert service uses: "
        "it reads, and writes only its alerts, their events and its own state; unset leaves "
        "it unable to log in.",
    )
    city_file: Path = Field(
        default=DEFAULT_CITY_FILE, description="City file (YAML) describing the deployment."
    )
    state_dir: Path = Field(
        default=Path(".pantau"),
        description="Where `pantau up` keeps its private database, broker and logs.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    log_json: bool = Field(default=False, description="Log as JSON lines instead of text.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in {"postgresql", "postgres"}:
                raise ValueError("expected postgresql://USER@HOST:PORT/DBNAME")
        return value

    def require_database_url(self) -> str:
        """The database URL, or a clear error naming the option."""
        if self.database_url is None:
            raise SettingsError("PANTAU_DATABASE_URL is not set")
        return self.database_url.get_secret_value()


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names it."""


def describe_validation_error(error: ValidationError) -> str:
    """Turn pydantic's error into lines naming the environment variables."""
    lines = []
    for item in error.errors():
        option = "PANTAU_" + "__".join(str(part).upper() for part in item["loc"])
        lines.append(f"{option}: {item['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the process's settings once; raises SettingsError naming any bad option."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None


def settings_table() -> str:
    """The configuration reference as a Markdown table, generated from the settings classes."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name.upper()}__")
                continue
            if info.default_factory is not None:
                made = info.default_factory()  # type: ignore[call-arg]
                default = (
                    _json_default(made)
                    if isinstance(made, list) and made and isinstance(made[0], BaseModel)
                    else str(made)
                )
            elif info.default is None:
                default = "unset"
            elif isinstance(info.default, Path) and info.default == DEFAULT_CITY_FILE:
                default = "built-in Kabupaten Pasuruan file"
            elif isinstance(info.default, timedelta):
                default = _iso_duration(info.default)
            else:
                default = str(info.default)
            description = (info.description or "").replace("|", "\\|")
            rows.append(f"| `{prefix}{name.upper()}` | `{default}` | {description} |")

    walk(Settings, "PANTAU_")
    return "\n".join(rows)


def _json_default(models: list[BaseModel]) -> str:
    """A list of models as the JSON one would set, with only what differs from the defaults."""
    return json.dumps([m.model_dump(exclude_defaults=True) for m in models])


def _iso_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    text = "P" + (f"{days}D" if days else "")
    clock = (
        (f"{hours}H" if hours else "")
        + (f"{minutes}M" if minutes else "")
        + (f"{seconds}S" if seconds else "")
    )
    return text + ("T" + clock if clock else "") if (days or clock) else "PT0S"
