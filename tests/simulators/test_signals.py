from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from pantau.catalogue import Family, metrics_of
from pantau.city import City, FloodLevel
from simulators.fleet import Fleet
from simulators.scenarios import FloodScenario, RushHourScenario, get_scenario
from simulators.signals import StreetModel, is_weekend, local_hour

# Monday 12 January 2026, 00:00 WIB (rainy season).
MONDAY = datetime(2026, 1, 11, 17, 0, tzinfo=UTC).timestamp()


def _readings(
    city: City, seed: int, hours: float, start: float = MONDAY
) -> list[tuple[str, float, tuple[tuple[str, float], ...]]]:
    fleet = Fleet(city, seed=seed)
    return [
        (o.sensor_id, o.t, tuple(sorted(o.values.items())))
        for o in fleet.observations(start, start + hours * 3600)
    ]


def test_same_seed_same_readings_other_seed_differs(mini_city: City) -> None:
    first = _readings(mini_city, 42, 6)
    assert first == _readings(mini_city, 42, 6)
    other = _readings(mini_city, 43, 6)
    assert len(first) > 500 and other != first


def test_adding_a_sensor_leaves_the_others_unchanged(mini_city: City) -> None:
    smaller = City.model_validate(
        {
            **mini_city.model_dump(),
            "sensors": [s.model_dump() for s in mini_city.sensors[1:]],
            "gateways": [],
        }
    )
    full = [r for r in _readings(mini_city, 5, 3) if r[0] != mini_city.sensors[0].id]
    assert full == _readings(smaller, 5, 3)


def test_every_value_is_in_its_catalogue_range(mini_city: City) -> None:
    fleet = Fleet(mini_city, seed=9)
    families = {s.id: s.family for s in mini_city.sensors}
    seen = set()
    for obs in fleet.observations(MONDAY, MONDAY + 3 * 86400):
        metrics = metrics_of(families[obs.sensor_id])
        assert set(obs.values) == set(metrics)
        for name, value in obs.values.items():
            assert metrics[name].in_range(value), (obs.sensor_id, name, value)
            if metrics[name].integer:
                assert float(value).is_integer()
        seen.add(obs.sensor_id)
    assert seen == set(families)


def test_sensors_report_at_their_interval_with_jitter(mini_city: City) -> None:
    fleet = Fleet(mini_city, seed=1)
    times: dict[str, list[float]] = defaultdict(list)
    for t, sensor_id in fleet.schedule(MONDAY, MONDAY + 6 * 3600):
        times[sensor_id].append(t)
    for sensor in mini_city.sensors:
        gaps = [b - a for a, b in zip(times[sensor.id], times[sensor.id][1:], strict=False)]
        assert all(0.94 * sensor.interval_s <= g <= 1.06 * sensor.interval_s for g in gaps)
        assert len(set(gaps)) > 1  # jitter, not lock step
    assert times["fg-welang-1"][0] != times["fg-welang-2"][0]


def test_flood_crosses_each_threshold_in_order_upstream_first(mini_city: City) -> None:
    scenario = get_scenario("flood")
    assert isinstance(scenario, FloodScenario)
    fleet = Fleet(mini_city, seed=3)
    scenario.apply(fleet, MONDAY)
    end = MONDAY + scenario.duration(fleet).total_seconds()
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    rain: dict[str, float] = defaultdict(float)
    for obs in fleet.observations(MONDAY, end):
        if obs.sensor_id.startswith("fg-welang"):
            series[obs.sensor_id].append((obs.t, obs.values["water_level"]))
            rain[obs.sensor_id] += obs.values["rainfall"]
    gauges = scenario.gauges(fleet)
    assert [g.sensor.id for g in gauges] == ["fg-welang-1", "fg-welang-2", "fg-welang-3"]
    first_crossing: dict[str, dict[FloodLevel, float]] = {}
    for gauge in gauges:
        levels = [(t, gauge.thresholds.level(v)) for t, v in series[gauge.sensor.id]]
        assert levels[0][1] is FloodLevel.NORMAL
        crossings: dict[FloodLevel, float] = {}
        for t, level in levels:
            for step in FloodLevel:
                if FloodLevel.NORMAL < step <= level:
                    crossings.setdefault(step, t)
        assert list(crossings) == [FloodLevel.WASPADA, FloodLevel.SIAGA, FloodLevel.AWAS]
        times = [crossings[s] for s in (FloodLevel.WASPADA, FloodLevel.SIAGA, FloodLevel.AWAS)]
        assert times == sorted(times) and len(set(times)) == 3
        # ... and back to Normal by the end of the scenario.
        peak_time = max(series[gauge.sensor.id], key=lambda p: p[1])[0]
        after = [level for t, level in levels if t > peak_time]
        assert after[-1] is FloodLevel.NORMAL
        first_crossing[gauge.sensor.id] = crossings
    for level in (FloodLevel.WASPADA, FloodLevel.SIAGA, FloodLevel.AWAS):
        order = [first_crossing[g.sensor.id][level] for g in gauges]
        assert order == sorted(order), f"{level.label} not upstream first"
    # Three hours of heavy rain, heaviest upstream.
    assert rain["fg-welang-1"] > 100
    assert rain["fg-welang-1"] > rain["fg-welang-2"] > rain["fg-welang-3"]


def test_traffic_peaks_fall_in_the_peak_hours(mini_city: City) -> None:
    fleet = Fleet(mini_city, seed=11)
    hourly: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for obs in fleet.observations(MONDAY, MONDAY + 14 * 86400):
        if obs.sensor_id.startswith("tc-") and not is_weekend(obs.t):
            total = sum(v for k, v in obs.values.items() if k.startswith("count_"))
            hourly[obs.sensor_id][int(local_hour(obs.t))].append(total)
    for sensor, by_hour in hourly.items():
        means = {h: sum(v) / len(v) for h, v in by_hour.items()}
        morning = max(range(0, 12), key=means.__getitem__)
        evening = max(range(12, 24), key=means.__getitem__)
        assert 6 <= morning < 8, (sensor, morning)
        assert 16 <= evening < 18, (sensor, evening)
        assert means[morning] > 3 * means[3]
    national = sum(sum(v) for v in hourly["tc-bangil-1"].values())
    town = sum(sum(v) for v in hourly["tc-bangil-2"].values())
    assert national > 2 * town


def test_traffic_is_motorcycle_heavy_and_slows_when_busy(mini_city: City) -> None:
    fleet = Fleet(mini_city, seed=2)
    counts: dict[str, float] = defaultdict(float)
    pairs = []
    for obs in fleet.observations(MONDAY, MONDAY + 3 * 86400):
        if obs.sensor_id == "tc-bangil-1":
            for key, value in obs.values.items():
                if key.startswith("count_"):
                    counts[key] += value
            pairs.append((obs.values["occupancy"], obs.values["avg_speed"]))
    share = counts["count_motorcycle"] / sum(counts.values())
    assert 0.65 <= share <= 0.85
    busy = [s for o, s in pairs if o > 0.3]
    quiet = [s for o, s in pairs if o < 0.1 and s > 0]
    assert busy and quiet and sum(busy) / len(busy) < sum(quiet) / len(quiet) - 10


def test_rush_hour_adds_congestion(mini_city: City) -> None:
    def mean_occupancy(fleet: Fleet) -> float:
        values = [o.values["occupancy"] for o in fleet.observations(MONDAY + 6 * 3600, MONDAY + 9 * 3600)
                  if o.sensor_id == "tc-bangil-1"]  # fmt: skip
        return sum(values) / len(values)

    normal = Fleet(mini_city, seed=4)
    rush = Fleet(mini_city, seed=4)
    RushHourScenario().apply(rush, MONDAY)
    assert mean_occupancy(rush) > mean_occupancy(normal) + 0.05
    start = RushHourScenario().preferred_start(MONDAY + 2 * 86400, 4 * 3600)
    assert local_hour(start) == 5.5 and not is_weekend(start)


def test_lamps_on_at_night_and_off_by_day(mini_city: City) -> None:
    fleet = Fleet(mini_city, seed=6)
    night, day = [], []
    for obs in fleet.observations(MONDAY, MONDAY + 7 * 86400):
        if fleet.sensors[obs.sensor_id].family is not Family.STREET_NODE:
            continue
        hour = local_hour(obs.t)
        if hour >= 18.5 or hour < 5.0:
            night.append(obs.values)
        elif 6.0 <= hour < 17.5:
            day.append(obs.values)
    assert night and day
    assert all(v["lamp_state"] == 1 for v in night)
    assert all(v["lamp_state"] == 0 and v["lamp_power"] == 0 for v in day)
    lit = [v["lamp_power"] for v in night]
    assert sum(1 for p in lit if p > 50) > 0.9 * len(lit)


def test_lamp_failures_happen_occasionally(mini_city: City) -> None:
    fleet = Fleet(mini_city, seed=8)
    lamp = fleet.models["sn-bangil-1"]
    assert isinstance(lamp, StreetModel)
    nights = [MONDAY + d * 86400 + 22 * 3600 for d in range(400)]
    failed = sum(1 for t in nights if lamp.lamp_failed(t))
    assert 0 < failed < 0.15 * len(nights)


def test_street_climate_follows_the_day(mini_city: City) -> None:
    fleet = Fleet(mini_city, seed=7)
    afternoon, before_dawn = [], []
    for obs in fleet.observations(MONDAY, MONDAY + 3 * 86400):
        if obs.sensor_id != "sn-bangil-1":
            continue
        hour = local_hour(obs.t)
        if 13 <= hour < 15:
            afternoon.append(obs.values)
        elif 2 <= hour < 4:
            before_dawn.append(obs.values)

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    assert mean(afternoon, "temperature") > mean(before_dawn, "temperature") + 5
    assert mean(afternoon, "humidity") < mean(before_dawn, "humidity") - 15
    assert mean(afternoon, "noise") > mean(before_dawn, "noise") + 5


def test_rainy_season_brings_more_rain(mini_city: City) -> None:
    def rain_days(start: datetime) -> int:
        fleet = Fleet(mini_city, seed=12)
        river = fleet.rivers["Welang"]
        day0 = int((start.timestamp() + 7 * 3600) // 86400)
        return sum(1 for d in range(day0, day0 + 120) if river._events_of_day(d))

    assert rain_days(datetime(2026, 1, 1, tzinfo=UTC)) > 2 * rain_days(
        datetime(2026, 6, 1, tzinfo=UTC)
    )
