"""Ingest configuration: the shared settings, and what the stages derive from them."""

from __future__ import annotations

from datetime import timedelta

from pantau.payload import DecodeLimits
from pantau.settings import Settings, get_settings

__all__ = ["Settings", "batch_max_messages", "decode_limits", "get_settings"]


def decode_limits(settings: Settings) -> DecodeLimits:
    """Payload limits: size and clock skew from ingest settings, age from raw retention."""
    return DecodeLimits(
        max_payload_bytes=settings.ingest.max_payload_bytes,
        max_future=timedelta(seconds=settings.ingest.max_future_s),
        max_age=settings.storage.raw_retention,
    )


def batch_max_messages(settings: Settings) -> int:
    """Messages per batch at most: half the in-flight window.

    Two batches (one being written, one being filled) then fit in the window, and a batch
    never waits for messages the broker will not send before something is acknowledged.
    """
    return max(1, settings.ingest.max_undelivered_messages // 2)
