"""`PANTAU_STORAGE__*`: the storage mode, retention, rollups and compression."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, Self

from pydantic import (
    BaseModel,
    Field,
    field_validator,
    model_validator,
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
