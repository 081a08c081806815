"""`PANTAU_INGEST__*`: the ingest service's batching, back-pressure and outage spool."""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    BaseModel,
    Field,
    PositiveInt,
)


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
