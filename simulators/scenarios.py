"""Scenarios: what the simulated city goes through during a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from simulators.fleet import Fleet
from simulators.signals import (
    DAY_S,
    WIB_OFFSET_S,
    FloodModel,
    RainEvent,
    TrafficModel,
    is_weekend,
    local_day,
)

FLOOD_RIVER = "Welang"


@dataclass(kw_only=True)
class Scenario:
    """Normal operation; the other scenarios change parts of it."""

    name: str = "normal"
    description: str = "An ordinary day: every sensor at its interval."
    default_duration: timedelta | None = None

    def apply(self, fleet: Fleet, start: float) -> None:
        """Adjust the fleet's models for a run starting at ``start`` (epoch seconds)."""

    def duration(self, fleet: Fleet) -> timedelta | None:
        """How long the scenario runs unless told otherwise (None: until stopped)."""
        return self.default_duration

    def preferred_start(self, latest: float, length_s: float) -> float:
        """The start of a run in the past that must end by ``latest`` (backfill, accelerated)."""
        return latest - length_s

    def silent(self, sensor_id: str, t: float) -> bool:
        """Whether the sensor cannot reach the broker at ``t`` (it keeps measuring)."""
        return False


@dataclass(kw_only=True)
class FloodScenario(Scenario):
    """Heavy rain on the upper Welang: the flood wave passes every gauge, upstream first."""

    name: str = "flood"
    description: str = (
        "Heavy rain upstream drives the Welang gauges through Waspada, Siaga and Awas and back, "
        "upstream gauges first."
    )
    river: str = FLOOD_RIVER
    rain_after: timedelta = timedelta(minutes=30)
    rain_duration: timedelta = timedelta(hours=3)
    intensity_mm_h: float = 45.0
    # Peak height at each gauge relative to its Awas margin (1.0 would just touch Awas).
    overshoot: float = 1.25
    event: RainEvent | None = field(default=None, init=False)

    def apply(self, fleet: Fleet, start: float) -> None:
        river = fleet.rivers.get(self.river)
        if river is None:
            raise ScenarioError(f"the city has no flood gauges on the {self.river} river")
        self.event = RainEvent(
            start=start + self.rain_after.total_seconds(),
            duration=self.rain_duration.total_seconds(),
            intensity=self.intensity_mm_h,
            target=self.overshoot,
        )
        # Only this storm on the Welang, so the wave is clean; other rivers keep their weather.
        river.natural = False
        river.forced = [self.event]

    def duration(self, fleet: Fleet) -> timedelta:
        river = fleet.rivers.get(self.river)
        far = max(
            (m.km for m in fleet.models.values() if isinstance(m, FloodModel) and m.river is river),
            default=0.0,
        )
        event = RainEvent(0.0, self.rain_duration.total_seconds(), self.intensity_mm_h, 1.0)
        # The furthest gauge back below Waspada: the hydrograph is down to 1/3 by x = 2.6.
        after = far * 900.0 + event.time_to_peak_s * 3.6
        return self.rain_after + timedelta(seconds=after)

    def gauges(self, fleet: Fleet) -> list[FloodModel]:
        """The driven gauges, upstream first."""
        gauges = [
            m
            for m in fleet.models.values()
            if isinstance(m, FloodModel) and m.sensor.river == self.river
        ]
        return sorted(gauges, key=lambda m: m.km)


@dataclass(kw_only=True)
class RushHourScenario(Scenario):
    """A weekday morning with heavier traffic than usual: queues build and speeds drop."""

    name: str = "rush-hour"
    description: str = "A weekday rush hour with 60 % more traffic: occupancy up, speeds down."
    default_duration: timedelta | None = timedelta(hours=4)
    demand: float = 1.6

    def apply(self, fleet: Fleet, start: float) -> None:
        for model in fleet.models.values():
            if isinstance(model, TrafficModel):
                model.demand_factor = self.demand

    def preferred_start(self, latest: float, length_s: float) -> float:
        # The latest weekday 05:30 WIB from which the whole run fits before ``latest``.
        day = local_day(latest - length_s)
        while True:
            start = day * DAY_S - WIB_OFFSET_S + 5.5 * 3_600.0
            if start + length_s <= latest and not is_weekend(start):
                return start
            day -= 1


@dataclass(kw_only=True)
class OutageScenario(Scenario):
    """The sensors of one kecamatan lose their uplink, then return and flush their backlog."""

    name: str = "outage"
    description: str = (
        "A group of sensors (one kecamatan) falls silent, then returns and flushes its backlog."
    )
    default_duration: timedelta | None = timedelta(hours=1)
    after: timedelta = timedelta(minutes=10)
    length: timedelta = timedelta(minutes=30)
    kecamatan: str | None = None
    group: frozenset[str] = field(default=frozenset(), init=False)
    window: tuple[float, float] = field(default=(0.0, 0.0), init=False)

    def apply(self, fleet: Fleet, start: float) -> None:
        by_kecamatan: dict[str, list[str]] = {}
        for sensor in fleet.city.sensors:
            by_kecamatan.setdefault(sensor.kecamatan, []).append(sensor.id)
        if self.kecamatan is None:
            # The kecamatan with the most sensors (a cell tower serving a busy town).
            name = max(sorted(by_kecamatan), key=lambda k: len(by_kecamatan[k]))
        elif self.kecamatan in by_kecamatan:
            name = self.kecamatan
        else:
            raise ScenarioError(f"no sensors in kecamatan {self.kecamatan!r}")
        self.kecamatan = name
        self.group = frozenset(by_kecamatan[name])
        begin = start + self.after.total_seconds()
        self.window = (begin, begin + self.length.total_seconds())

    def silent(self, sensor_id: str, t: float) -> bool:
        return sensor_id in self.group and self.window[0] <= t < self.window[1]


@dataclass(kw_only=True)
class StressScenario(Scenario):
    """Every sensor at its fastest rate."""

    name: str = "stress"
    description: str = "Every sensor reports at its fastest rate (default once a second)."
    default_duration: timedelta | None = timedelta(minutes=5)
    fastest_interval_s: float = 1.0

    def apply(self, fleet: Fleet, start: float) -> None:
        fleet.interval_override_s = self.fastest_interval_s


SCENARIOS: dict[str, type[Scenario]] = {
    "normal": Scenario,
    "flood": FloodScenario,
    "rush-hour": RushHourScenario,
    "outage": OutageScenario,
    "stress": StressScenario,
}


class ScenarioError(ValueError):
    """A scenario cannot run on this city, or does not exist."""


def get_scenario(name: str) -> Scenario:
    """A fresh scenario by name."""
    try:
        return SCENARIOS[name]()
    except KeyError:
        raise ScenarioError(
            f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}"
        ) from None
