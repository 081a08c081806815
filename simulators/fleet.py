"""The fleet: one signal model per sensor of a city file, and the schedule they report on."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

from pantau.catalogue import Family
from pantau.city import City, Sensor
from simulators.signals import FloodModel, River, StreetModel, TrafficModel, sensor_rng

Model = FloodModel | TrafficModel | StreetModel
# Devices report on their interval give or take this fraction (clock drift, radio retries).
JITTER = 0.05


@dataclass(frozen=True, slots=True)
class Observation:
    """What one sensor measured at one moment (epoch seconds, millisecond resolution)."""

    sensor_id: str
    t: float
    values: dict[str, float]


class Fleet:
    """Every sensor of a city with its model; deterministic for a given seed."""

    def __init__(self, city: City, *, seed: int = 0) -> None:
        self.city = city
        self.seed = seed
        uplands = {k.name for k in city.kecamatan if k.landslide_prone}
        lengths: dict[str, float] = {}
        for sensor in city.of_family(Family.FLOOD_GAUGE):
            assert sensor.river is not None
            lengths[sensor.river] = max(lengths.get(sensor.river, 0.0), sensor.river_km or 0.0)
        self.rivers = {name: River(name, seed, km) for name, km in lengths.items()}
        self.models: dict[str, Model] = {}
        for sensor in city.sensors:
            if sensor.family is Family.FLOOD_GAUGE:
                assert sensor.river is not None
                self.models[sensor.id] = FloodModel(sensor, seed, self.rivers[sensor.river])
            elif sensor.family is Family.TRAFFIC_COUNTER:
                self.models[sensor.id] = TrafficModel(sensor, seed)
            else:
                self.models[sensor.id] = StreetModel(
                    sensor, seed, upland=sensor.kecamatan in uplands
                )
        self.sensors: dict[str, Sensor] = {s.id: s for s in city.sensors}
        self.interval_override_s: float | None = None

    def interval_s(self, sensor_id: str) -> float:
        return self.interval_override_s or self.sensors[sensor_id].interval_s

    def observe(self, sensor_id: str, t: float) -> Observation:
        """The sensor's reading at ``t``; call in time order per sensor."""
        return Observation(sensor_id, t, self.models[sensor_id].observe(t))

    def schedule(self, start: float, end: float | None = None) -> Iterator[tuple[float, str]]:
        """(time, sensor) of every report from ``start`` (to ``end``), in time order.

        Each sensor starts at its own phase within its interval and reports every interval,
        give or take the jitter, so the fleet does not publish in lock step.
        """
        heap: list[tuple[float, str]] = []
        jitter = {}
        for sensor_id in sorted(self.sensors):
            rng = sensor_rng(self.seed, sensor_id, 99)
            jitter[sensor_id] = rng
            first = start + float(rng.uniform(0, self.interval_s(sensor_id)))
            heap.append((round(first, 3), sensor_id))
        heapq.heapify(heap)
        while heap:
            t, sensor_id = heapq.heappop(heap)
            if end is not None and t > end:
                return
            yield t, sensor_id
            interval = self.interval_s(sensor_id)
            step = interval * (1.0 + float(jitter[sensor_id].uniform(-JITTER, JITTER)))
            heapq.heappush(heap, (round(t + max(step, 0.001), 3), sensor_id))

    def observations(self, start: float, end: float) -> Iterator[Observation]:
        """Every observation of the fleet between ``start`` and ``end`` (pure generation)."""
        for t, sensor_id in self.schedule(start, end):
            yield self.observe(sensor_id, t)
