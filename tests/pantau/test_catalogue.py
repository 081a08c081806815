"""The sensor catalogue: required metrics, units, ranges and Smart Data Model mappings."""

from __future__ import annotations

import math

import pytest

from pantau.catalogue import CATALOGUE, Family, Metric, find_metric, metrics_of

# The FIWARE Smart Data Models Pantau publishes in (Device carries the battery voltage).
SDM_ENTITIES = {
    "TrafficFlowObserved",
    "FloodMonitoring",
    "WaterObserved",
    "WeatherObserved",
    "Streetlight",
    "AirQualityObserved",
    "NoiseLevelObserved",
    "Device",
}

REQUIRED = {
    Family.FLOOD_GAUGE: {"water_level", "rainfall", "battery"},
    Family.TRAFFIC_COUNTER: {
        "count_motorcycle",
        "count_car",
        "count_bus",
        "count_truck",
        "avg_speed",
        "occupancy",
    },
    Family.STREET_NODE: {
        "lamp_state",
        "lamp_power",
        "pm25",
        "pm10",
        "noise",
        "temperature",
        "humidity",
    },
}

ALL_METRICS = [(family, metric) for family in Family for metric in metrics_of(family).values()]


@pytest.mark.parametrize("family", list(Family))
def test_family_has_its_required_metrics(family: Family) -> None:
    assert set(metrics_of(family)) == REQUIRED[family]
    assert set(metrics_of(family.value)) == REQUIRED[family]


def test_every_family_is_catalogued() -> None:
    assert set(CATALOGUE) == set(Family)


def test_motorcycles_are_counted_separately() -> None:
    motorcycles = find_metric(Family.TRAFFIC_COUNTER, "count_motorcycle")
    assert motorcycles is not None
    assert "vehicleType=motorcycle" in motorcycles.sdm_attribute
    attributes = [m.sdm_attribute for m in metrics_of(Family.TRAFFIC_COUNTER).values() if m.integer]
    assert len(attributes) == len(set(attributes)) == 4


@pytest.mark.parametrize(
    ("family", "metric"), ALL_METRICS, ids=[f"{f.value}.{m.name}" for f, m in ALL_METRICS]
)
def test_metric_is_fully_described(family: Family, metric: Metric) -> None:
    assert metric.unit.strip()
    assert metric.description.strip()
    assert math.isfinite(metric.minimum)
    assert math.isfinite(metric.maximum)
    assert metric.minimum < metric.maximum
    assert metric.sdm_entity in SDM_ENTITIES
    assert metric.sdm_attribute.strip()
    assert find_metric(family, metric.name) is metric
    if metric.integer:
        assert float(metric.minimum).is_integer()
        assert float(metric.maximum).is_integer()


@pytest.mark.parametrize(
    ("family", "name", "inside", "outside"),
    [
        (Family.FLOOD_GAUGE, "water_level", 2.5, 40.0),
        (Family.FLOOD_GAUGE, "rainfall", 12.0, -1.0),
        (Family.TRAFFIC_COUNTER, "occupancy", 0.4, 1.5),
        (Family.TRAFFIC_COUNTER, "avg_speed", 45.0, 500.0),
        (Family.STREET_NODE, "humidity", 80.0, 101.0),
        (Family.STREET_NODE, "temperature", 31.0, 90.0),
        (Family.STREET_NODE, "lamp_state", 1.0, 2.0),
    ],
)
def test_ranges_are_sane(family: Family, name: str, inside: float, outside: float) -> None:
    metric = find_metric(family, name)
    assert metric is not None
    assert metric.in_range(inside)
    assert not metric.in_range(outside)
    assert metric.in_range(metric.minimum)
    assert metric.in_range(metric.maximum)


def test_units_match_their_quantity() -> None:
    units = {(f, m.name): m.unit for f, m in ALL_METRICS}
    assert units[(Family.FLOOD_GAUGE, "water_level")] == "m"
    assert units[(Family.FLOOD_GAUGE, "rainfall")] == "mm"
    assert units[(Family.FLOOD_GAUGE, "battery")] == "V"
    assert units[(Family.TRAFFIC_COUNTER, "avg_speed")] == "km/h"
    assert units[(Family.STREET_NODE, "lamp_power")] == "W"
    assert units[(Family.STREET_NODE, "noise")] == "dB"
    assert units[(Family.STREET_NODE, "pm25")] == units[(Family.STREET_NODE, "pm10")]


def test_unknown_metric_and_family() -> None:
    assert find_metric(Family.FLOOD_GAUGE, "pm25") is None
    assert find_metric("street_node", "water_level") is None
    with pytest.raises(ValueError):
        metrics_of("weather_station")
