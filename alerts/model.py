"""What the stages pass each other: sensors as the rules see them, targets and transitions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pantau.catalogue import Family
from pantau.city import GaugeQuality, Thresholds


class Rule(StrEnum):
    """Every rule; the value is what the `rule` columns hold."""

    FLOOD_LEVEL = "flood_level"
    RISING_FAST = "rising_fast"
    UPSTREAM = "upstream"
    CONGESTION = "congestion"
    LAMP = "lamp"
    AIR_QUALITY = "air_quality"
    OFFLINE = "offline"
    STUCK = "stuck"
    REJECTED = "rejected"


class Change(StrEnum):
    OPENED = "opened"
    ESCALATED = "escalated"
    DE_ESCALATED = "de-escalated"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorInfo:
    """A registered sensor with what the rules need of it."""

    id: str
    family: Family
    name: str
    interval_s: float
    river: str | None = None
    river_km: float | None = None
    downstream: tuple[str, ...] = ()
    travel_time_min: float | None = None
    # Threshold versions, oldest first: (valid from, epoch µs; thresholds).
    thresholds: tuple[tuple[int, Thresholds], ...] = ()
    # Flood gauges: the sensor's range and the river's fastest change (city file).
    quality: GaugeQuality | None = None

    def thresholds_at(self, time_us: int) -> Thresholds | None:
        """The thresholds valid at ``time_us`` (before the first version: the first one)."""
        if not self.thresholds:
            return None
        chosen = self.thresholds[0][1]
        for valid_from, version in self.thresholds:
            if valid_from > time_us:
                break
            chosen = version
        return chosen


@dataclass(slots=True, kw_only=True)
class Target:
    """What a rule wants for one sensor now: a level (0: no alert) and how to say it."""

    level: int
    value: float | None = None
    message: str = ""
    message_en: str = ""
    predicted_level: int | None = None
    predicted_at_us: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class OpenAlert:
    """An open alert as the evaluator tracks it."""

    level: int
    opened_us: int
    updated_us: int
    message: str
    message_en: str
    alert_id: int | None = None


@dataclass(slots=True, kw_only=True)
class Transition:
    """One change of one alert, caused by the reading observed at ``observed_us``."""

    sensor_id: str
    rule: Rule
    change: Change
    level: int
    previous_level: int | None
    observed_us: int
    target: Target
    alert_id: int | None = None
    event_id: int | None = None
    recorded_at: datetime | None = None


@dataclass(slots=True, kw_only=True)
class GaugeStatus:
    """A flood gauge's current level and rise, as `gauge_status` holds it."""

    sensor_id: str
    level: int
    since_us: int
    observed_us: int
    value: float
    rate_m_per_h: float | None = None
    next_level: int | None = None
    next_level_at_us: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Flag:
    """A suspect reading and why (a row of `reading_flags`)."""

    sensor_id: str
    metric: str
    time_us: int
    value: float
    reason: str
    reference_us: int | None = None
    reference_value: float | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.sensor_id, self.metric, self.time_us)
