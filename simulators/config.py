"""What one simulator run is asked to do, and parsing of the human-friendly options."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from simulators.faults import FaultConfig
from simulators.publisher import Credentials
from simulators.signals import WIB_OFFSET_S

WIB = timezone(timedelta(seconds=WIB_OFFSET_S), "WIB")

Shape = Literal["single", "list", "senml"]
SHAPES: tuple[Shape, ...] = ("single", "list", "senml")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``6h``, ``30d``, ``2w`` (a bare number is seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 6h, 30d)")
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _UNITS[unit or "s"])


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is read as WIB (the city's time)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=WIB)
    return moment.astimezone(UTC)


@dataclass(kw_only=True)
class RunConfig:
    """Options of one `pantau simulate` run."""

    scenario: str = "normal"
    seed: int = 0
    speed: float = 1.0
    backfill: timedelta | None = None
    start: datetime | None = None
    duration: timedelta | None = None
    shape: Shape = "single"
    list_size: int = 5
    pack_size: int = 50
    gateway_period_s: float = 60.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    credentials: Credentials | None = None
    manifest: Path | None = None
    fastest_interval_s: float = 1.0
    max_messages: int | None = None

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("--speed must be positive")
        if self.shape not in SHAPES:
            raise ValueError(f"--shape must be one of {', '.join(SHAPES)}")
        if self.list_size < 1 or self.pack_size < 1:
            raise ValueError("--list-size and --pack-size must be at least 1")
        if self.fastest_interval_s <= 0:
            raise ValueError("--interval-s must be positive")
        if self.backfill is not None and self.backfill <= timedelta(0):
            raise ValueError("--backfill must be a positive duration")
        if self.duration is not None and self.duration <= timedelta(0):
            raise ValueError("--duration must be a positive duration")
