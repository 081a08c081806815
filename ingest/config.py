"""Ingest configuration: the shared settings, and what the stages derive from them."""

from __future__ import annotations

from pantau.settings import Settings, get_settings

__all__ = ["Settings", "batch_max_messages", "get_settings"]


def batch_max_messages(settings: Settings) -> int:
    """Messages per batch at most: the in-flight window shared by the batches in the works.

    One batch per writer connection being written and one being filled then fit in the window,
    and a batch never waits for messages the broker will not send before something is
    acknowledged.
    """
    ingest = settings.ingest
    return max(1, ingest.max_undelivered_messages // (ingest.writer_connections + 1))
