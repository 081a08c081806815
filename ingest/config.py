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
    """Messages per batch at most: the in-flight window shared by the batches in the works.

    One batch per writer connection being written and one being filled then fit in the window,
    and a batch never waits for messages the broker will not send before something is
    acknowledged.
    """
    ingest = settings.ingest
    return max(1, ingest.max_undelivered_messages // (ingest.writer_connections + 1))
