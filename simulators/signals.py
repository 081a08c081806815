"""Signal models: what each kind of sensor in Pasuruan would report at a given moment.

Pure generation, no I/O. Every model draws its noise from a numpy ``Generator`` seeded from
``(seed, sensor id)``, so adding a sensor never changes the readings of the others, and the same
seed and times give the same readings. Times are epoch seconds (UTC); the city lives in WIB
(UTC+7, no daylight saving). Slow structure (rain events, lamp failures, day-to-day traffic
variation) is drawn from per-day generators, so it does not depend on how often a sensor asks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np

from pantau.city import Sensor

WIB_OFFSET_S = 7 * 3600
DAY_S = 86_400
# Lamps switch on at dusk and off at dawn, local time (each lamp's photocell differs a little).
DUSK_H = 17.75
DAWN_H = 5.5
RAINY_MONTHS = frozenset({11, 12, 1, 2, 3, 4})


def stable_key(text: str) -> int:
    """A 63-bit integer for a name, the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def sensor_rng(seed: int, name: str, *extra: int) -> np.random.Generator:
    """The generator of one sensor (or river, or day of one of them)."""
    return np.random.default_rng([seed, stable_key(name), *extra])


def local_hour(t: float) -> float:
    """Hour of the day in WIB, 0 <= h < 24."""
    return ((t + WIB_OFFSET_S) % DAY_S) / 3600.0


def local_day(t: float) -> int:
    """Days since 1970-01-01 in WIB."""
    return int((t + WIB_OFFSET_S) // DAY_S)


def is_weekend(t: float) -> bool:
    # 1970-01-01 was a Thursday; Monday is 0.
    return (local_day(t) + 3) % 7 >= 5


@lru_cache(maxsize=4096)
def _month_of_day(day: int) -> int:
    return datetime.fromtimestamp(day * DAY_S, tz=UTC).month


def is_rainy_season(t: float) -> bool:
    """November to April."""
    return _month_of_day(local_day(t)) in RAINY_MONTHS


def _bump(h: float, centre: float, width: float) -> float:
    return math.exp(-0.5 * ((h - centre) / width) ** 2)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def traffic_demand(t: float) -> float:
    """Traffic relative to a weekday's peak (about 1.0 at the peaks).

    Weekdays: commuter peaks around 07:00 and 17:00 WIB over a daytime plateau. Weekends:
    flatter and later (late morning and evening outings).
    """
    h = local_hour(t)
    if is_weekend(t):
        active = _sigmoid((h - 7.0) / 0.7) * _sigmoid((22.5 - h) / 0.8)
        return 0.07 + 0.45 * active + 0.2 * _bump(h, 10.5, 1.6) + 0.25 * _bump(h, 19.0, 1.4)
    active = _sigmoid((h - 5.5) / 0.45) * _sigmoid((21.0 - h) / 0.8)
    return 0.06 + 0.42 * active + 0.52 * _bump(h, 7.0, 0.7) + 0.5 * _bump(h, 17.0, 0.8)


def daylight(t: float) -> float:
    """Sunlight, 0 at night to 1 at noon (Pasuruan is near the equator: a steady 12 h day)."""
    h = local_hour(t)
    return max(0.0, math.sin(math.pi * (h - 5.75) / 12.25)) if 5.75 <= h <= 18.0 else 0.0


# ------------------------------------------------------------------------------- traffic

ROAD_SCALE = {"national": 1.0, "provincial": 0.55, "town": 0.3}
FREE_SPEED_KMH = {"national": 62.0, "provincial": 50.0, "town": 34.0}
# Vehicles per hour at a weekday peak, per class share (motorcycle-heavy, as on Java's roads).
PEAK_FLOW_PER_H = 3_600.0
CLASS_SHARE = {
    "national": {"motorcycle": 0.72, "car": 0.17, "bus": 0.03, "truck": 0.08},
    "provincial": {"motorcycle": 0.76, "car": 0.16, "bus": 0.02, "truck": 0.06},
    "town": {"motorcycle": 0.8, "car": 0.16, "bus": 0.01, "truck": 0.03},
}


class TrafficModel:
    """A counter on one road: class counts, occupancy and speed for each interval."""

    def __init__(self, sensor: Sensor, seed: int) -> None:
        self.sensor = sensor
        self.seed = seed
        self.road = sensor.road_class or "town"
        self.rng = sensor_rng(seed, sensor.id)
        # Sites on the same class of road still differ.
        self.site = float(self.rng.uniform(0.8, 1.15))
        self.capacity = PEAK_FLOW_PER_H * ROAD_SCALE[self.road] * 1.35
        self.demand_factor = 1.0
        self.last_t: float | None = None

    def _day_factor(self, t: float) -> float:
        return float(sensor_rng(self.seed, self.sensor.id, local_day(t), 1).uniform(0.9, 1.1))

    def observe(self, t: float) -> dict[str, float]:
        interval = self.sensor.interval_s if self.last_t is None else max(1.0, t - self.last_t)
        interval = min(interval, 3_600.0)
        self.last_t = t
        flow = (
            PEAK_FLOW_PER_H
            * ROAD_SCALE[self.road]
            * self.site
            * traffic_demand(t)
            * self.demand_factor
            * self._day_factor(t)
        )
        expected = flow * interval / 3_600.0
        values: dict[str, float] = {}
        total = 0
        for vehicle, share in CLASS_SHARE[self.road].items():
            count = int(self.rng.poisson(expected * share))
            values[f"count_{vehicle}"] = float(count)
            total += count
        observed_flow = total * 3_600.0 / interval
        ratio = observed_flow / self.capacity
        occupancy = 0.02 + 0.9 * min(ratio, 1.2) ** 1.6 + self.rng.normal(0, 0.01)
        occupancy = min(max(occupancy, 0.0), 0.98)
        speed = FREE_SPEED_KMH[self.road] * (1.0 - 0.85 * occupancy) + self.rng.normal(0, 1.5)
        values["avg_speed"] = round(min(max(speed, 3.0), 120.0), 1) if total else 0.0
        values["occupancy"] = round(occupancy, 3)
        return values


# --------------------------------------------------------------------------------- flood


@dataclass(frozen=True, slots=True)
class RainEvent:
    """Rain over one river's catchment: start (epoch s), duration (s), intensity (mm/h)."""

    start: float
    duration: float
    intensity: float
    # Rise of the water (m) at a gauge, as a fraction of the gauge's Waspada margin; None lets
    # the rain depth decide (ordinary storms).
    target: float | None = None

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def depth_mm(self) -> float:
        return self.intensity * self.duration / 3_600.0

    @property
    def time_to_peak_s(self) -> float:
        return self.duration / 2.0 + 5_400.0


def hydrograph(x: float) -> float:
    """Unit response of a gauge to rain: 0 before, 1 at the peak (x = 1), slow recession."""
    if x <= 0:
        return 0.0
    return x * x * math.exp(2.0 * (1.0 - x))


# Time for a flood wave to travel one kilometre downstream.
TRAVEL_S_PER_KM = 900.0


class River:
    """Rain events over one river's catchment, shared by every gauge on it."""

    def __init__(self, name: str, seed: int, length_km: float) -> None:
        self.name = name
        self.seed = seed
        self.length_km = max(length_km, 1.0)
        self.forced: list[RainEvent] = []
        self.natural = True
        self._days: dict[int, list[RainEvent]] = {}

    def _events_of_day(self, day: int) -> list[RainEvent]:
        if day not in self._days:
            rng = sensor_rng(self.seed, f"river:{self.name}", day)
            rainy = _month_of_day(day) in RAINY_MONTHS
            events = []
            if rng.random() < (0.55 if rainy else 0.07):
                # Mostly afternoon convective storms.
                hour = float(rng.uniform(12.5, 19.5))
                duration = float(rng.uniform(0.5, 3.0)) * 3_600.0
                intensity = float(rng.gamma(2.0, 6.0 if rainy else 3.0))
                start = day * DAY_S - WIB_OFFSET_S + hour * 3_600.0
                events.append(RainEvent(start, duration, intensity))
            self._days[day] = events
        return self._days[day]

    def events_near(self, t: float) -> list[RainEvent]:
        """Events that can still affect levels at ``t`` (the last few days)."""
        events = list(self.forced)
        if self.natural:
            today = local_day(t)
            for day in range(today - 3, today + 1):
                events.extend(self._events_of_day(day))
        return events

    def delay_s(self, river_km: float) -> float:
        return river_km * TRAVEL_S_PER_KM

    def rain_factor(self, river_km: float) -> float:
        """Upstream (the mountain slopes) gets more rain than the plain near the coast."""
        return 1.0 - 0.5 * min(river_km / self.length_km, 1.0)


class FloodModel:
    """A river gauge: water level, rainfall since the last report, battery voltage."""

    def __init__(self, sensor: Sensor, seed: int, river: River) -> None:
        assert sensor.thresholds is not None
        self.sensor = sensor
        self.river = river
        self.km = sensor.river_km or 0.0
        self.thresholds = sensor.thresholds
        self.rng = sensor_rng(seed, sensor.id)
        self.phase = float(self.rng.uniform(0, 2 * math.pi))
        self.last_t: float | None = None

    def baseline(self, t: float) -> float:
        """The level without recent rain: seasonal, with a slow drift."""
        waspada = self.thresholds.waspada
        seasonal = 0.12 * waspada if is_rainy_season(t) else 0.0
        drift = 0.04 * waspada * math.sin(2 * math.pi * t / (5.3 * DAY_S) + self.phase)
        return 0.32 * waspada + seasonal + drift

    def amplitude(self, event: RainEvent, t: float) -> float:
        margin = self.thresholds.waspada - self.baseline(t)
        if event.target is not None:
            # A forced flood: peak past Awas by a clear margin at every gauge.
            return (self.thresholds.awas - self.baseline(t)) * event.target
        return min(margin * event.depth_mm / 45.0, (self.thresholds.siaga - self.baseline(t)))

    def level(self, t: float) -> float:
        """Water level at ``t`` without noise (the scenario checks use this)."""
        level = self.baseline(t)
        delay = self.river.delay_s(self.km)
        for event in self.river.events_near(t):
            x = (t - event.start - delay) / event.time_to_peak_s
            level += self.amplitude(event, t) * hydrograph(x)
        return level

    def rainfall(self, since: float, until: float) -> float:
        factor = self.river.rain_factor(self.km)
        total = 0.0
        for event in self.river.events_near(until):
            overlap = min(until, event.end) - max(since, event.start)
            if overlap > 0:
                total += event.intensity * factor * overlap / 3_600.0
        return total

    def observe(self, t: float) -> dict[str, float]:
        since = t - self.sensor.interval_s if self.last_t is None else self.last_t
        self.last_t = t
        level = self.level(t) + self.rng.normal(0, 0.004)
        rain = self.rainfall(since, t)
        if rain > 0:
            rain *= float(self.rng.uniform(0.85, 1.15))
        battery = 12.3 + 1.3 * daylight(t) + self.rng.normal(0, 0.03)
        return {
            "water_level": round(min(max(level, -2.0), 15.0), 3),
            "rainfall": round(min(rain, 300.0), 1),
            "battery": round(min(max(battery, 0.0), 30.0), 2),
        }


# -------------------------------------------------------------------------------- street

LAMP_WATTS = (90.0, 120.0, 150.0)


class StreetModel:
    """A street node: lamp, air quality, noise, temperature and humidity."""

    def __init__(self, sensor: Sensor, seed: int, *, upland: bool = False) -> None:
        self.sensor = sensor
        self.seed = seed
        self.upland = upland
        self.rng = sensor_rng(seed, sensor.id)
        self.watts = float(self.rng.choice(LAMP_WATTS))
        self.dusk_h = DUSK_H + float(self.rng.uniform(-0.1, 0.1))
        self.dawn_h = DAWN_H + float(self.rng.uniform(-0.1, 0.1))
        self.failure_rate_per_day = 0.01

    def lamp_scheduled_on(self, t: float) -> bool:
        """On between dusk and dawn, WIB."""
        h = local_hour(t)
        return h >= self.dusk_h or h < self.dawn_h

    def lamp_failed(self, t: float) -> bool:
        """Occasional failures, each lasting until a repair crew comes one to three days later."""
        today = local_day(t)
        for day in range(today - 3, today + 1):
            rng = sensor_rng(self.seed, self.sensor.id, day, 7)
            if rng.random() < self.failure_rate_per_day:
                start = day * DAY_S - WIB_OFFSET_S + float(rng.uniform(0, DAY_S))
                if start <= t < start + float(rng.uniform(1, 3)) * DAY_S:
                    return True
        return False

    def observe(self, t: float) -> dict[str, float]:
        h = local_hour(t)
        on = self.lamp_scheduled_on(t)
        power = 0.0
        if on and not self.lamp_failed(t):
            power = self.watts * (1.0 + self.rng.normal(0, 0.01))
        traffic = traffic_demand(t)
        rainy = is_rainy_season(t)
        # Night-time inversion traps particles; rain washes them out.
        pm25 = (12.0 + 30.0 * traffic + 12.0 * _bump(h, 4.0, 2.5)) * (0.8 if rainy else 1.0)
        pm25 *= float(self.rng.lognormal(0.0, 0.12))
        if self.upland:
            pm25 *= 0.5
        pm10 = pm25 * float(self.rng.uniform(1.6, 1.9))
        noise = 43.0 + 10.0 * math.log10(1.0 + 40.0 * traffic) + self.rng.normal(0, 1.2)
        cycle = math.cos(2 * math.pi * (h - 14.0) / 24.0)
        temperature = (26.0 if not self.upland else 19.0) + 5.0 * cycle - (1.0 if rainy else 0.0)
        temperature += self.rng.normal(0, 0.3)
        humidity = 74.0 - 17.0 * cycle + (8.0 if rainy else 0.0) + self.rng.normal(0, 1.5)
        return {
            "lamp_state": 1.0 if on else 0.0,
            "lamp_power": round(power, 1),
            "pm25": round(min(max(pm25, 1.0), 1_000.0), 1),
            "pm10": round(min(max(pm10, 1.0), 2_000.0), 1),
            "noise": round(min(max(noise, 20.0), 140.0), 1),
            "temperature": round(temperature, 1),
            "humidity": round(min(max(humidity, 5.0), 100.0), 1),
        }
