"""When a sensor's data stops being current: one definition for the alert service's `offline`
rule and for everything that shows a level (the API, the pages, the retained MQTT status).

A sensor is current while its newest reading is at most ``intervals_k`` of its reporting
intervals old (`PANTAU_ALERTS__OFFLINE_INTERVALS_K`); past that deadline it is offline, and a
level it last reported is shown as "no data", never as the level now.
"""

from __future__ import annotations

from datetime import datetime, timedelta

US = 1_000_000


def deadline_us(interval_s: float, intervals_k: float) -> int:
    """How long after its newest reading a sensor stops being current (µs)."""
    return int(intervals_k * interval_s * US)


def is_current(
    last: datetime | None, now: datetime, *, interval_s: float, intervals_k: float
) -> bool:
    """Whether a reading observed at ``last`` is still current at ``now``."""
    if last is None:
        return False
    return now - last <= timedelta(microseconds=deadline_us(interval_s, intervals_k))
