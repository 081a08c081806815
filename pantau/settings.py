"""One typed settings object per process.

Every option is read from the environment (prefix ``PANTAU_``; nested groups use ``__``, as in
``PANTAU_MQTT__URL``) or from a ``.env`` file, once, at start-up. Services receive the object as
an argument, so tests build their own with ``Settings(...)`` instead of patching the
environment. An invalid value stops the process with a message that names the option.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from pantau import topics

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
        return topics.uplink_filter(self.topic_root)

    def uplink_topic(self, device_id: str) -> str:
        """The topic a device publishes its readings to."""
        return topics.uplink_topic(self.topic_root, device_id)


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
    feedback_per_minute: int = Field(
        default=6,
        ge=0,
        description="Rejection notices published to a device's `ROOT/down/DEVICE_ID/rejected`: "
        "this many at once at most, then this many a minute (0: none); the rest are only "
        "stored and counted.",
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


class AlertSettings(BaseModel):
    """The early-warning service (`pantau alerts`): its MQTT session and every rule's knobs."""

    client_id: str = Field(
        default="pantau-alerts-1",
        min_length=1,
        max_length=64,
        description="Fixed client id of the alert service's own persistent MQTT session.",
    )
    max_inflight_messages: int = Field(
        default=5_000,
        ge=2,
        le=65_535,
        description="Unacknowledged uplink messages held at most; the Receive Maximum asked of "
        "the broker.",
    )
    batch_max_messages: PositiveInt = Field(
        default=2_000, description="Evaluate and commit at most this many messages at once."
    )
    batch_max_age_ms: int = Field(
        default=20, ge=0, description="Commit a batch once its oldest message is this old."
    )
    lock_retry_s: float = Field(
        default=2.0,
        ge=0,
        description="A standby instance tries to take over the evaluation this often.",
    )
    lock_timeout_s: float = Field(
        default=20.0,
        ge=1,
        le=300,
        description="Bound on losing the evaluation lock unnoticed: the database ends the "
        "lock's session once idle this long (the active instance confirms the lock four times "
        "as often), and the active instance stops publishing and exits (status 1) once it "
        "could not confirm the lock for three quarters of it. A standby takes over within "
        "about this time plus `LOCK_RETRY_S` when the active instance is cut off.",
    )
    tick_s: float = Field(
        default=5.0,
        gt=0,
        description="How often time-driven rules (offline) are checked when no message comes.",
    )
    live_window_s: float = Field(
        default=120.0,
        ge=0,
        description="Readings this close to the wall clock mean the stream is live: the "
        "service's clock then follows the wall clock through quiet spells.",
    )
    metrics_port: int = Field(
        default=9110, ge=0, le=65535, description="Prometheus metrics and health port (0: off)."
    )
    metrics_host: str = Field(
        default="0.0.0.0",  # exporters listen on every interface, for Prometheus
        description="Address the alert service's metrics endpoint listens on.",
    )
    db_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Timeout of one database connection attempt."
    )
    registry_refresh_s: float = Field(
        default=60.0,
        gt=0,
        description="How often the sensor registry and flood thresholds are read again.",
    )
    flood_step_down_margin_m: float = Field(
        default=0.05,
        ge=0,
        description="Hysteresis: a gauge steps down a level only once the water is this far "
        "below that level's threshold.",
    )
    flood_min_dwell_s: float = Field(
        default=600.0,
        ge=0,
        description="A gauge steps down only after its readings stayed lower for this long.",
    )
    flood_confirm_readings: int = Field(
        default=2,
        ge=1,
        le=10,
        description="A gauge rises to a level (and `rising_fast` to a forecast) only once this "
        "many consecutive accepted readings reach it; it costs that many reporting intervals "
        "less one of lead time.",
    )
    qc_max_rate_m_per_h: float = Field(
        default=3.0,
        gt=0,
        description="Quality control: a water level moving faster than this from the last "
        "accepted reading is suspect (a gauge's `quality.max_rate_m_per_h` overrides it) ...",
    )
    qc_tolerance_m: float = Field(
        default=0.1,
        ge=0,
        description="... give or take this much (noise, waves) on top of the rate.",
    )
    qc_step_readings: int = Field(
        default=3,
        ge=2,
        le=60,
        description="Suspect readings staying this many in a row on the same side of the last "
        "accepted one are believed (a real step); a series that comes back sooner is a spike.",
    )
    rise_window_s: float = Field(
        default=1_800.0, gt=0, description="Span of readings the rise-rate fit uses."
    )
    rise_min_points: int = Field(
        default=6, ge=3, description="Readings the rise-rate fit needs at least."
    )
    rising_fast_rate_m_per_h: float = Field(
        default=0.5, gt=0, description="A rise at least this fast may raise `rising_fast` ..."
    )
    rising_fast_horizon_s: float = Field(
        default=3_600.0,
        gt=0,
        description="... when the next level is predicted within this time.",
    )
    rising_fast_clear_rate_m_per_h: float = Field(
        default=0.1, ge=0, description="`rising_fast` resolves once the rise is below this ..."
    )
    rising_fast_clear_s: float = Field(
        default=900.0, ge=0, description="... for this long (or the gauge is at Awas)."
    )
    upstream_min_level: int = Field(
        default=2,
        ge=1,
        le=3,
        description="An upstream gauge at this flood level (2: Siaga) or rising fast raises an "
        "advisory on its downstream gauges.",
    )
    wave_speed_km_per_h: float = Field(
        default=4.0,
        gt=0,
        description="Flood-wave speed giving the travel time between gauges where the city "
        "file gives none.",
    )
    congestion_occupancy_min: float = Field(
        default=0.7, gt=0, le=1, description="Congestion: occupancy at least this ..."
    )
    congestion_speed_max_kmh: float = Field(
        default=20.0, gt=0, description="... and average speed at most this ..."
    )
    congestion_min_duration_s: float = Field(
        default=600.0, ge=0, description="... for this long (and clear for this long)."
    )
    lamp_night_start_h: float = Field(
        default=18.5, ge=0, lt=24, description="Night for the lamp rule starts (WIB hour) ..."
    )
    lamp_night_end_h: float = Field(default=5.0, ge=0, lt=24, description="... and ends.")
    lamp_power_min_w: float = Field(
        default=20.0, ge=0, description="At night, a lamp drawing less than this is off."
    )
    lamp_power_max_w: float = Field(
        default=250.0, gt=0, description="A lamp drawing more than this is abnormal."
    )
    lamp_min_duration_s: float = Field(
        default=900.0, ge=0, description="A lamp condition must last this long to alert."
    )
    air_average_s: float = Field(
        default=3_600.0,
        gt=0,
        description="PM2.5/PM10 are averaged (exponentially) over about this long before "
        "their ISPU category is taken.",
    )
    air_clear_s: float = Field(
        default=1_800.0, ge=0, description="Air quality must be better for this long to resolve."
    )
    offline_intervals_k: float = Field(
        default=3.0,
        gt=1,
        description="A sensor is offline after this many of its reporting intervals without a "
        "reading.",
    )
    stuck_metrics: list[str] = Field(
        default=["water_level", "temperature", "humidity", "noise", "pm25"],
        description="Metrics checked for a value stuck at the same number.",
    )
    stuck_min_duration_s: float = Field(
        default=7_200.0, gt=0, description="A value unchanged this long is stuck."
    )
    rejected_count_min: PositiveInt = Field(
        default=10, description="A device with this many rejected payloads ..."
    )
    rejected_window_s: float = Field(
        default=600.0, gt=0, description="... within this long raises `rejected`."
    )


class ApiSettings(BaseModel):
    """The open-data and operator API."""

    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="API port.")
    pool_max_size: PositiveInt = Field(
        default=8,
        description="Database connections at most in each of the API's two pools (history "
        "pages on the event loop; the other routes in worker threads).",
    )
    pool_timeout_s: PositiveFloat = Field(
        default=10.0,
        description="How long a request waits for a free database connection before a 503.",
    )
    statement_timeout_ms: int = Field(
        default=15_000,
        ge=0,
        description="Longest a query of a JSON request may run (0: no limit); streamed CSV "
        "exports are not cut.",
    )
    cache_ttl_s: float = Field(
        default=2.0,
        ge=0,
        description="How long answers (the sensor registry, latest values, city status, "
        "history pages, SensorThings) are served from memory before being read again "
        "(0: always read).",
    )
    cache_ttl_coarse_s: float = Field(
        default=30.0,
        ge=0,
        description="How long history pages of hourly and daily buckets are served from "
        "memory (and may be kept by shared caches): their newest bucket moves by minutes. "
        "Never shorter than `CACHE_TTL_S`; no caching when that is 0.",
    )
    rate_limit_per_s: float = Field(
        default=20.0,
        ge=0,
        description="Requests per second each client address may make on average to each API "
        "process (0: no limit); beyond it the API answers 429 with `Retry-After`.",
    )
    rate_limit_burst: PositiveInt = Field(
        default=200, description="Requests a client may make at once before the rate applies."
    )
    rate_limit_clients_max: PositiveInt = Field(
        default=50_000,
        description="Client addresses the rate limit tracks at once in each API process (about "
        "400 bytes each); beyond them the one seen least recently is forgotten.",
    )
    trusted_proxies: list[str] = Field(
        default=["127.0.0.1", "::1"],
        description="Addresses or networks (CIDR) of the reverse proxies in front of the API. "
        "Only a request whose peer is one of them has its `X-Forwarded-For` and "
        "`X-Forwarded-Proto` believed: the client is the right-most forwarded address that is "
        "not a trusted proxy, and the rate limit counts it. `[]`: believe no proxy.",
    )
    page_rows_max: PositiveInt = Field(
        default=10_000, description="Largest `limit` of one page of readings."
    )
    cors_origins: list[str] = Field(
        default=["*"], description="Origins allowed to read the API from a browser (CORS)."
    )
    access_log: bool = Field(default=True, description="Log one line per request.")
    export_connections: PositiveInt = Field(
        default=2,
        description="CSV exports served at once by each API process, each on a database "
        "connection of their own pool (never one of the other routes'); one more is answered "
        "503 with `Retry-After`.",
    )
    export_send_timeout_s: PositiveFloat = Field(
        default=30.0,
        description="A CSV export whose client does not take the next part within this long is "
        "cut off, and its database connection freed.",
    )
    workers: PositiveInt = Field(
        default=1,
        description="API processes; more use more cores, each with its own database pools "
        "(up to `POOL_MAX_SIZE` connections each) and cache.",
    )
    stream_poll_ms: int = Field(
        default=500,
        ge=1,
        description="How often the live stream (`/stream`) looks for new readings and alert "
        "changes; one poller per API process serves every client.",
    )
    stream_overlap_ms: int = Field(
        default=5_000,
        ge=0,
        description="How far back each poll of the latest values looks again, so that a batch "
        "committed after a later one is still seen (duplicates are dropped).",
    )
    stream_keepalive_s: PositiveFloat = Field(
        default=15.0, description="Keep-alive comment sent on an idle live stream."
    )
    stream_client_queue_max: PositiveInt = Field(
        default=1_000,
        description="Events held for one live-stream client at most; a client that falls "
        "further behind is disconnected (it resumes with `Last-Event-ID`).",
    )
    stream_send_timeout_s: PositiveFloat = Field(
        default=30.0,
        description="A live-stream client that takes longer than this to accept one event is "
        "disconnected.",
    )
    stream_clients_max: PositiveInt = Field(
        default=500,
        description="Live-stream clients at once in each API process; one more is answered 503 "
        "with `Retry-After`.",
    )
    cap_sender: str = Field(
        default="pantau",
        pattern=r"^[^\s,<&]+$",
        description="CAP `sender` of the flood warnings: a globally unique name of the "
        "publishing agency, such as a domain or an address it controls.",
    )
    cap_area_radius_km: PositiveFloat = Field(
        default=2.0, description="Radius of the circle around a gauge that its CAP warnings cover."
    )
    cap_sender_name: str = Field(
        default="Pantau",
        min_length=1,
        max_length=200,
        description="CAP `senderName`: the agency people know, e.g. `BPBD Kabupaten Pasuruan`.",
    )
    cap_contact: str | None = Field(
        default=None,
        max_length=200,
        description="CAP `contact`: whom people reach about a warning (a phone number or "
        "address); unset: none given.",
    )
    cap_expires_h: PositiveFloat = Field(
        default=12.0,
        description="A CAP warning expires this long after its last change unless an Update "
        "or its Cancel comes first (they do, unless Pantau has stopped).",
    )
    sta_page_size: PositiveInt = Field(
        default=100,
        description="SensorThings API: entities in one page when the request gives no `$top`.",
    )
    sta_max_top: PositiveInt = Field(
        default=10_000,
        description="SensorThings API: most entities in one answer, expanded ones included; a "
        "larger `$top` is cut to it and the answer carries an `@iot.nextLink`.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item)
            except ValueError:
                raise ValueError(
                    f"{item!r} is neither an IP address nor a network such as 172.30.80.0/24"
                ) from None
        return value


# Rules whose alerts are flood warnings: what a receiver is sent unless it asks for others.
FLOOD_RULES = ("flood_level", "rising_fast", "upstream")
ALERT_RULES = (
    *FLOOD_RULES,
    "congestion",
    "lamp",
    "air_quality",
    "offline",
    "stuck",
    "rejected",
)
_RECEIVER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_PLACE = r"^[A-Za-z][A-Za-z .'-]{0,63}$"  # a kecamatan name, safe inside a matcher's regex


class Receiver(BaseModel):
    """A group of people notified alike: where their messages go and what they are sent."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_RECEIVER, description="Receiver name in Alertmanager.")
    emails: list[str] = Field(default=[], description="E-mail addresses.")
    telegram_chat_ids: list[int] = Field(default=[], description="Telegram chats (group ids).")
    webhook_urls: list[str] = Field(
        default=[], description="Webhooks (an SMS or WhatsApp gateway) sent Alertmanager's JSON."
    )
    min_level: int = Field(
        default=1,
        ge=1,
        le=3,
        description="Lowest level sent: 1 Waspada, 2 Siaga, 3 Awas (for forecasts, the level "
        "expected).",
    )
    kecamatan: list[str] = Field(default=[], description="Only alerts there (empty: anywhere).")
    rules: list[str] = Field(default=list(FLOOD_RULES), description="Only these rules' alerts.")

    @field_validator("kecamatan")
    @classmethod
    def _places(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(_PLACE, name):
                raise ValueError(f"{name!r} is not a kecamatan name")
        return value

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ALERT_RULES))
        if unknown or not value:
            raise ValueError(f"rules must be some of {', '.join(ALERT_RULES)}")
        return value

    @field_validator("emails")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        for address in value:
            if not re.fullmatch(r"[^@\s,<>\"]+@[^@\s,<>\"]+", address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            _http_url(url)
        return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{value!r}: expected http(s)://HOST[:PORT][/PATH]")
    return value.rstrip("/")


def _default_receivers() -> list[Receiver]:
    return [
        Receiver(name="duty-officer", min_level=1),
        Receiver(name="everyone", min_level=3),
    ]


class NotifySettings(BaseModel):
    """Notifications through Prometheus Alertmanager: what the alert service sends it, and the
    configuration `pantau alertmanager config` writes for it (docs/alerts.md)."""

    alertmanager_url: str | None = Field(
        default=None,
        description="Alertmanager the alert service sends every open alert to, e.g. "
        "`http://127.0.0.1:9093`; unset: no notifications. `pantau up` starts one where it is "
        "installed.",
    )
    alertmanager_external_url: str | None = Field(
        default=None,
        description="Alertmanager's address as operators reach it (its UI, silences): the "
        "control page links to it; unset hides the link.",
    )
    public_url: str | None = Field(
        default=None,
        description="Public address of the city page: notifications link to the sensor there; "
        "unset: no link.",
    )
    resend_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="Every open alert (and each recent end) is sent again this often, so that "
        "a restart of either side loses nothing; well within `RESOLVE_TIMEOUT_S`.",
    )
    request_timeout_s: float = Field(
        default=5.0, gt=0, description="Longest wait for Alertmanager to answer one request."
    )
    retry_initial_s: float = Field(
        default=0.5, gt=0, description="First wait before sending again after a failure ..."
    )
    retry_max_s: float = Field(
        default=30.0,
        gt=0,
        description="... doubling up to this (and never longer than `RESEND_INTERVAL_S`).",
    )
    resolved_resend_s: float = Field(
        default=300.0,
        ge=0,
        description="An alert's end is sent again for this long after Alertmanager took it: "
        "Alertmanager keeps alerts in memory only, and one restarted meanwhile still learns of "
        "it. At least twice `GROUP_INTERVAL_S`.",
    )
    resolve_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="Alertmanager (`resolve_timeout`): an alert not sent again for this long "
        "counts as ended.",
    )
    group_wait_s: float = Field(
        default=10.0,
        ge=0,
        description="Alertmanager (`group_wait`): how long a new warning waits before it is "
        "sent (a higher level arriving meanwhile silences the lower one).",
    )
    group_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="Alertmanager (`group_interval`): how often a warning's changes, its end "
        "included, are sent at most.",
    )
    repeat_interval_s: float = Field(
        default=7_200.0,
        gt=0,
        description="Alertmanager (`repeat_interval`): a warning still in force is sent again "
        "this often.",
    )
    smtp_smarthost: str | None = Field(
        default=None, description="SMTP server for e-mail, `host:port`."
    )
    smtp_from: str = Field(default="pantau@localhost", description="Sender of the e-mails.")
    smtp_username: str | None = Field(default=None, description="SMTP login, if it asks.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_require_tls: bool = Field(
        default=True, description="Refuse an SMTP server that does not offer STARTTLS."
    )
    telegram_bot_token: SecretStr | None = Field(
        default=None, description="Telegram bot token (from @BotFather) for the Telegram chats."
    )
    telegram_api_url: str = Field(
        default="https://api.telegram.org", description="Telegram Bot API address."
    )
    receivers: list[Receiver] = Field(
        default_factory=_default_receivers,
        description='Who is told what, as JSON: `[{"name": "everyone", "emails": [...], '
        '"telegram_chat_ids": [...], "webhook_urls": [...], "min_level": 3, '
        '"kecamatan": [...], "rules": [...]}]`; the defaults have no addresses yet.',
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: object) -> object:
        # A deployment passes every variable, empty where it has no value (compose does).
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and v == "")}
        return data

    @field_validator(
        "alertmanager_url", "alertmanager_external_url", "public_url", "telegram_api_url"
    )
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("smtp_smarthost")
    @classmethod
    def _smarthost(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^\s:]+:\d{1,5}", value):
            raise ValueError("expected host:port")
        return value

    @field_validator("receivers")
    @classmethod
    def _unique(cls, value: list[Receiver]) -> list[Receiver]:
        names = [r.name for r in value]
        if len(names) != len(set(names)):
            raise ValueError("receiver names must differ")
        return value

    @model_validator(mode="after")
    def _timing(self) -> Self:
        if self.resend_interval_s * 3 > self.resolve_timeout_s:
            raise ValueError(
                "PANTAU_NOTIFY__RESOLVE_TIMEOUT_S must be at least three times "
                "PANTAU_NOTIFY__RESEND_INTERVAL_S"
            )
        if self.resolved_resend_s < 2 * self.group_interval_s:
            raise ValueError(
                "PANTAU_NOTIFY__RESOLVED_RESEND_S must be at least twice "
                "PANTAU_NOTIFY__GROUP_INTERVAL_S"
            )
        if self.repeat_interval_s < self.group_interval_s:
            raise ValueError(
                "PANTAU_NOTIFY__REPEAT_INTERVAL_S must not be shorter than "
                "PANTAU_NOTIFY__GROUP_INTERVAL_S"
            )
        return self


_ACCOUNT = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # no `/`, `+`, `#`: names go into ACL topics


class BrokerSettings(BaseModel):
    """The production broker: its accounts, ACL and limits (`pantau broker`, `pantau devices`)."""

    password_file: Path | None = Field(
        default=None,
        description="Mosquitto password file kept by `pantau devices` and `pantau broker "
        "accounts` (hashed as `mosquitto_passwd` writes it).",
    )
    reload_command: str | None = Field(
        default=None,
        description="Command that makes the broker re-read its password and ACL files after "
        "a change, e.g. `docker compose kill -s HUP mosquitto`.",
    )
    pid_file: Path | None = Field(
        default=None,
        description="Without a reload command: the broker's pid file, to send it SIGHUP.",
    )
    ingest_user: str = Field(
        default="pantau-ingest",
        pattern=_ACCOUNT,
        description="Account of the ingest processes: reads every uplink, writes device feedback.",
    )
    ingest_password: SecretStr | None = Field(
        default=None, description="Its password (`pantau broker accounts` sets it)."
    )
    alerts_user: str = Field(
        default="pantau-alerts",
        pattern=_ACCOUNT,
        description="Account of the alert service: reads every uplink, writes status, alerts "
        "and warning-post commands.",
    )
    alerts_password: SecretStr | None = Field(default=None, description="Its password.")
    public_user: str = Field(
        default="pantau-public",
        pattern=_ACCOUNT,
        description="Public read-only account: reads sensor status and alert events only.",
    )
    public_password: SecretStr | None = Field(default=None, description="Its password.")
    warning_users: list[str] = Field(
        default=["pantau-warning"],
        description="Accounts of village early-warning posts: read the warning commands only.",
    )
    tls_port: int = Field(
        default=8883, ge=1, le=65535, description="TLS listener for devices in the field."
    )
    autosave_interval_s: PositiveInt = Field(
        default=5,
        description="How often the broker saves its sessions and queued messages to disk.",
    )
    session_expiration_h: PositiveInt = Field(
        default=168,
        description="Sessions of clients that stay away longer are dropped with their queues "
        "(`persistent_client_expiration`); never shorter than PANTAU_MQTT__SESSION_EXPIRY_S.",
    )
    max_queued_messages: PositiveInt = Field(
        default=1_000_000,
        description="Messages queued per session (offline ingest included) before the broker "
        "drops new ones; at least ten times PANTAU_INGEST__MAX_UNDELIVERED_MESSAGES.",
    )
    max_queued_bytes: PositiveInt = Field(
        default=1024**3, description="Bytes queued per session before the broker drops new ones."
    )
    max_packet_size_bytes: PositiveInt = Field(
        default=1024**2,
        description="Larger packets are refused by the broker; above "
        "PANTAU_INGEST__MAX_PAYLOAD_BYTES so that ingest records oversized payloads itself.",
    )

    @field_validator("warning_users")
    @classmethod
    def _account_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(_ACCOUNT, name):
                raise ValueError(f"{name!r} is not a valid account name")
        return value


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
