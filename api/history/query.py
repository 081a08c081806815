"""The parameters of a readings history: resolutions, their ranges and rollups, times, and
the query they resolve to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from api.errors import Problem, bad_request
from api.registry import Registry, SensorInfo
from pantau.catalogue import Family, find_metric, metrics_of
from pantau.settings import Settings

WIB = ZoneInfo("Asia/Jakarta")


ZONES = {"UTC": UTC, "Asia/Jakarta": WIB}


Resolution = Literal["raw", "1m", "5m", "15m", "1h", "1d"]


Agg = Literal["avg", "min", "max", "last", "count"]


STEP = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}


# Longest range one query may span, per resolution (JSON pages and CSV exports alike).
MAX_RANGE = {
    "raw": timedelta(days=32),
    "1m": timedelta(days=367),
    "5m": timedelta(days=367),
    "15m": timedelta(days=367),
    "1h": timedelta(days=3700),
    "1d": timedelta(days=3700),
}


MAX_SENSORS = 2000


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


LATEST = datetime(2200, 1, 1, tzinfo=UTC)


AGG_COLUMN = {
    "avg": "value_avg",
    "min": "value_min",
    "max": "value_max",
    "last": "value_last",
    "count": "value_count",
}


COARSE = frozenset({"1h", "1d"})


ROLLUP_COLUMNS = ("value_avg", "value_min", "value_max", "value_count", "value_last")


def cache_period_s(settings: Settings, resolution: str) -> float:
    """How long a page of ``resolution`` is kept: hourly and daily buckets longer, as their
    newest bucket moves by minutes while a page of them costs the most to make."""
    period = settings.api.cache_ttl_s
    if period > 0 and resolution in COARSE:
        return max(period, settings.api.cache_ttl_coarse_s)
    return period


def parse_time(text: str, name: str) -> datetime:
    """An RFC 3339 / ISO 8601 time or date; without an offset it is WIB (UTC+7)."""
    value = text.strip()
    try:
        if len(value) == 10:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(
            f"{name} is not a time: expected e.g. 2026-01-31T07:00:00+07:00 (without an offset, "
            "WIB is assumed) or a date 2026-01-31",
            kind="bad-time",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=WIB)
    try:
        moment = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise bad_request(f"{name} is out of range (1970 to 2200)", kind="bad-time") from None
    if not EARLIEST <= moment <= LATEST:
        raise bad_request(f"{name} must lie between 1970 and 2200", kind="bad-time")
    return moment


def floor_bucket(moment: datetime, resolution: str) -> datetime:
    """The start of the bucket holding ``moment`` (days are WIB days)."""
    if resolution == "raw":
        return moment
    if resolution == "1d":
        local = moment.astimezone(WIB)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    step = STEP[resolution]
    return EARLIEST + ((moment - EARLIEST) // step) * step


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """One history query, validated."""

    sensors: tuple[SensorInfo, ...]
    metrics: tuple[str, ...]
    start: datetime
    end: datetime
    resolution: str
    order: str

    @property
    def raw(self) -> bool:
        """Readings as stored, not buckets of the rollups."""
        return self.resolution == "raw"

    @property
    def series(self) -> list[tuple[SensorInfo, str, str]]:
        """(sensor, metric, unit) of every series the query covers."""
        found = []
        for sensor in self.sensors:
            for metric in self.metrics:
                known = find_metric(sensor.family, metric)
                if known is not None:
                    found.append((sensor, metric, known.unit))
        return found


def resolve(
    registry: Registry,
    *,
    sensor: list[str] | None,
    family: Family | None,
    metric: list[str] | None,
    start: str | None,
    end: str | None,
    resolution: str,
    order: str,
    now: datetime | None = None,
) -> HistoryQuery:
    """Validate a history query, with 400/404 problems that say what is wrong."""
    if sensor:
        chosen = {registry.sensor(s).id: registry.sensor(s) for s in sensor}
        if family is not None:
            other = sorted(s.id for s in chosen.values() if s.family is not family)
            if other:
                raise bad_request(f"not {family.value} sensors: {', '.join(other)[:200]}")
        sensors = tuple(chosen[k] for k in sorted(chosen))
    elif family is not None:
        sensors = tuple(s for s in registry.sensors.values() if s.family is family)
    else:
        raise bad_request("name at least one `sensor` or a `family`", kind="no-sensor")
    if not sensors:
        raise Problem(404, "no sensors match", kind="no-sensor")
    if len(sensors) > MAX_SENSORS:
        raise bad_request(f"at most {MAX_SENSORS} sensors per query", kind="too-many-sensors")
    offered = {m for s in sensors for m in metrics_of(s.family)}
    if metric:
        unknown = sorted(set(metric) - offered)
        if unknown:
            raise bad_request(
                f"no such metric for these sensors: {', '.join(unknown)[:200]}; "
                f"they report: {', '.join(sorted(offered))}",
                kind="unknown-metric",
            )
        metrics = tuple(sorted(set(metric)))
    else:
        metrics = tuple(sorted(offered))
    now = now or datetime.now(UTC)
    end_at = parse_time(end, "end") if end else now
    start_at = parse_time(start, "start") if start else end_at - timedelta(days=1)
    start_at = floor_bucket(start_at, resolution)
    if start_at >= end_at:
        raise bad_request("start must be before end", kind="bad-range")
    if end_at - start_at > MAX_RANGE[resolution]:
        raise bad_request(
            f"range too long for resolution {resolution}: at most "
            f"{MAX_RANGE[resolution].days} days; ask for a coarser resolution or split it",
            kind="range-too-long",
        )
    return HistoryQuery(sensors, metrics, start_at, end_at, resolution, order)
