"""Alert-service configuration: the shared settings, and what the stages derive from them."""

from __future__ import annotations

from datetime import timedelta

from pantau.payload import DecodeLimits
from pantau.settings import AlertSettings, Settings, get_settings

__all__ = ["AlertSettings", "Settings", "decode_limits", "get_settings"]


def decode_limits(settings: Settings) -> DecodeLimits:
    """The same limits ingest decodes with, so both services reach the same verdicts."""
    return DecodeLimits(
        max_payload_bytes=settings.ingest.max_payload_bytes,
        max_future=timedelta(seconds=settings.ingest.max_future_s),
        max_age=settings.storage.raw_retention,
    )
