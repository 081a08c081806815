"""One typed settings object per process.

Every option is read from the environment (prefix ``PANTAU_``; nested groups use ``__``, as in
``PANTAU_MQTT__URL``) or from a ``.env`` file, once, at start-up. Services receive the object as
an argument, so tests build their own with ``Settings(...)`` instead of patching the
environment. An invalid value stops the process with a message that names the option.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CITY_FILE = Path(__file__).parent / "cities" / "pasuruan.yaml"


class MqttSettings(BaseModel):
    """How Pantau reaches the MQTT broker."""

    url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="Broker address, `mqtt://host:port` (or `mqtts://` for TLS).",
    )
    username: str | None = Field(default=None, description="Broker user name, if it asks for one.")
    password: SecretStr | None = Field(default=None, description="Broker password.")
    topic_root: str = Field(
        default="pantau",
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        description="Root of every Pantau topic; devices publish to `ROOT/up/DEVICE_ID`.",
    )
    client_id: str = Field(
        default="pantau-ingest-1",
        min_length=1,
        max_length=64,
        description="Fixed client id of this ingest process: its persistent session is keyed on it.",
    )
    shared_group: str | None = Field(
        default=None,
        description="Shared-subscription group that splits messages across several ingest "
        "processes; unset for a plain subscription (one process). See docs/ingest.md: "
        "Mosquitto 2.0 does not restore shared subscriptions after a broker restart.",
    )
    session_expiry_s: PositiveInt = Field(
        default=86_400,
        description="How long the broker keeps an ingest session (and its queued messages) "
        "while the process is away.",
    )
    keepalive_s: PositiveInt = Field(default=30, description="MQTT keep-alive.")
    reconnect_max_delay_s: PositiveInt = Field(
        default=30, description="Longest wait between attempts to reconnect to the broker."
    )
    connect_timeout_s: PositiveFloat = Field(
        default=10.0, description="How long to wait for the broker before giving up at start-up."
    )

    @field_validator("url")
    @classmethod
    def _url_has_host(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"mqtt", "mqtts", "tcp"} or not parts.hostname:
            raise ValueError("expected mqtt://HOST:PORT")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def uplink_filter(self) -> str:
        """Topic filter covering every device's uplink."""
        return f"{self.topic_root}/up/+"

    def uplink_topic(self, device_id: str) -> str:
        """The topic a device publishes its readings to."""
        return f"{self.topic_root}/up/{device_id}"


class IngestSettings(BaseModel):
    """Batching, back-pressure and the outage spool of the ingest service."""

    batch_max_readings: PositiveInt = Field(
        default=5_000, description="Flush a batch once it holds this many readings."
    )
    batch_max_age_ms: int = Field(
        default=100, ge=0, description="Flush a batch once its oldest message is this old."
    )
    max_undelivered_messages: int = Field(
        default=10_000,
        ge=2,
        le=65_535,
        description="Unacknowledged messages held in memory at most; also the Receive Maximum "
        "asked of the broker (MQTT v5 caps it at 65535). The broker's own limit must not be "
        "lower.",
    )
    writer_connections: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Database connections writing batches side by side (the database works on "
        "one batch while the next is copied in); acknowledgements keep the messages' order.",
    )
    mqtt_process: bool = Field(
        default=True,
        description="Run the MQTT client in a process of its own, so that parsing packets and "
        "decoding them use two cores instead of sharing one interpreter lock.",
    )
    batch_max_bytes: PositiveInt = Field(
        default=32 * 1024**2,
        description="Flush a batch once the raw payloads it holds reach this many bytes.",
    )
    max_payload_bytes: PositiveInt = Field(
        default=256 * 1024, description="Larger payloads are rejected as `oversized`."
    )
    max_future_s: int = Field(
        default=300, ge=0, description="Readings further ahead of the clock are rejected."
    )
    retry_initial_ms: int = Field(
        default=200, ge=0, description="First wait before retrying a failed database write."
    )
    retry_max_ms: int = Field(default=10_000, ge=0, description="Longest wait between retries.")
    spool_dir: Path | None = Field(
        default=None,
        description="Directory of the on-disk outage spool; unset keeps everything in memory.",
    )
    spool_max_bytes: PositiveInt = Field(
        default=1024**3, description="Size cap of the spool; when full, back-pressure resumes."
    )
    metrics_port: int = Field(
        default=9108, ge=0, le=65535, description="Prometheus metrics and health port (0: off)."
    )
    metrics_host: str = Field(
        default="0.0.0.0",  # exporters listen on every interface, for Prometheus
        description="Address the metrics and health endpoint listens on.",
    )
    registry_refresh_s: float = Field(
        default=10.0,
        ge=0,
        description="An unknown sensor reloads the sensor registry at most this often before "
        "its payload is rejected as `unknown_sensor`.",
    )
    maintenance_interval_s: float = Field(
        default=3_600.0,
        gt=0,
        description="Plain PostgreSQL: how often ingest creates partitions ahead and applies "
        "retention.",
    )
    db_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Timeout of one database connection attempt."
    )
    shutdown_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, how long to keep trying to commit what is held before "
        "disconnecting without acknowledging it (the broker then keeps it).",
    )


class StorageSettings(BaseModel):
    """Database layout: partitioning, retention and rollups. Applied by `pantau db migrate`."""

    mode: Literal["auto", "timescaledb", "postgres"] = Field(
        default="auto",
        description="`auto` uses TimescaleDB where the extension can be created, else plain "
        "PostgreSQL partitions.",
    )
    chunk_interval: timedelta = Field(
        default=timedelta(days=1), description="Time span of one chunk or partition."
    )
    premake_partitions: int = Field(
        default=3, ge=1, description="Plain PostgreSQL: partitions created ahead of now."
    )
    raw_retention: timedelta = Field(
        default=timedelta(days=90), description="Raw readings older than this are dropped."
    )
    compress_after: timedelta = Field(
        default=timedelta(days=7), description="TimescaleDB: compress chunks older than this."
    )
    retention_1m: timedelta = Field(
        default=timedelta(days=180), description="Retention of the 1-minute rollup."
    )
    retention_1h: timedelta = Field(
        default=timedelta(days=730), description="Retention of the 1-hour rollup."
    )
    retention_1d: timedelta = Field(
        default=timedelta(days=3650), description="Retention of the 1-day rollup."
    )
    refresh_schedule: timedelta = Field(
        default=timedelta(minutes=1),
        gt=timedelta(0),
        description="How often rollups are materialised: TimescaleDB's refresh policy of the "
        "1-minute aggregate (longer ones scale); in plain PostgreSQL, ingest's refresh of all "
        "three.",
    )

    @field_validator("raw_retention")
    @classmethod
    def _raw_retention_floor(cls, value: timedelta) -> timedelta:
        # The daily rollup refreshes a window of several days that must still hold raw rows.
        if value < timedelta(days=7):
            raise ValueError("must be at least 7 days")
        return value

    @field_validator("chunk_interval")
    @classmethod
    def _chunk_floor(cls, value: timedelta) -> timedelta:
        if value < timedelta(minutes=1):
            raise ValueError("must be at least one minute")
        return value

    @property
    def rollup_retention(self) -> dict[str, timedelta]:
        """Retention of each rollup, by the name readers query it by."""
        return {
            "readings_1m": self.retention_1m,
            "readings_1h": self.retention_1h,
            "readings_1d": self.retention_1d,
        }

    @model_validator(mode="after")
    def _rollups_outlive_raw(self) -> Self:
        for name in ("retention_1m", "retention_1h", "retention_1d"):
            if getattr(self, name) <= self.raw_retention:
                raise ValueError(
                    f"PANTAU_STORAGE__{name.upper()} must be longer than "
                    "PANTAU_STORAGE__RAW_RETENTION"
                )
        return self


class ApiSettings(BaseModel):
    """The open-data and operator API."""

    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="API port.")
    pool_max_size: PositiveInt = Field(default=8, description="Database connections at most.")


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
                default = str(info.default_factory())  # type: ignore[call-arg]
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
