from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pantau.city import City
from pantau.payload import Reading, decode
from pantau.settings import MqttSettings
from simulators.clock import SimClock
from simulators.config import SHAPES, RunConfig, Shape
from simulators.faults import FaultConfig
from simulators.manifest import load_manifest
from simulators.publisher import PublishError
from simulators.runner import Simulation
from simulators.verify import verify
from tests.fixtures.simulator import Collector, store_messages


def _decode_all(
    messages: list[tuple[str, bytes]], city: City, root: str
) -> tuple[list[Reading], int]:
    families = {s.id: s.family for s in city.sensors}
    readings, rejected = [], 0
    for topic, payload in messages:
        out = decode(
            payload,
            topic=topic,
            topic_root=root,
            sensors=families,
            received_at=datetime.now(UTC),
            gateways=city.gateway_sensors(),
        )
        readings += out.readings
        rejected += bool(out.rejections)
    return readings, rejected


@pytest.mark.parametrize("shape", SHAPES)
def test_backfill_publishes_what_the_manifest_says(
    tmp_path: Path, mqtt_settings: MqttSettings, mini_city: City, collector: Collector, shape: Shape
) -> None:
    config = RunConfig(
        backfill=timedelta(hours=2), shape=shape, seed=5, manifest=tmp_path / "m.jsonl"
    )
    stats = Simulation(city=mini_city, mqtt=mqtt_settings, config=config).run()
    assert stats.errors == 0 and stats.messages > 0
    received = collector.wait_for(stats.messages)
    assert len(received) == stats.messages
    readings, rejected = _decode_all(received, mini_city, mqtt_settings.topic_root)
    assert rejected == 0
    manifest = load_manifest(tmp_path / "m.jsonl")
    assert {(r.sensor_id, r.metric, r.time) for r in readings} == set(manifest.valid)
    assert len(readings) == stats.readings == len(manifest.valid)
    first, last = manifest.time_range()  # type: ignore[misc]
    assert timedelta(hours=1, minutes=50) < last - first <= timedelta(hours=2)
    assert last <= datetime.now(UTC)
    if shape == "senml":
        assert {t.rsplit("/", 1)[1] for t, _ in received} <= {
            "gw-purwosari",
            "gw-pohjentrek",
            "gw-bangil",
        }


def test_faults_are_injected_recorded_and_verifiable(
    tmp_path: Path, mqtt_settings: MqttSettings, mini_city: City, collector: Collector, city_db: str
) -> None:
    faults = FaultConfig(
        malformed=0.05,
        duplicates=0.05,
        out_of_order=0.05,
        late=0.05,
        clock_skew_s=30,
        silent=0.3,
        burst_after_reconnect=True,
        out_of_range=0.05,
    )
    config = RunConfig(backfill=timedelta(hours=3), seed=21, faults=faults, manifest=tmp_path / "f")
    stats = Simulation(city=mini_city, mqtt=mqtt_settings, config=config).run()
    for kind in ("malformed", "duplicate", "out_of_order", "late", "clock_skew", "silent",
                 "burst", "out_of_range"):  # fmt: skip
        assert stats.faults[kind] > 0, kind
    received = collector.wait_for(stats.messages)
    manifest = load_manifest(tmp_path / "f")
    assert sum(f.expect_rejected for f in manifest.faults) == (
        stats.faults["malformed"] + stats.faults["out_of_range"]
    )
    # Out-of-order: some sensor's times go backwards in publishing order.
    readings, _ = _decode_all(received, mini_city, mqtt_settings.topic_root)
    backwards = 0
    last: dict[tuple[str, str], datetime] = {}
    for r in readings:
        key = (r.sensor_id, r.metric)
        if key in last and r.time < last[key]:
            backwards += 1
        last[key] = r.time
    assert backwards > 0
    store_messages(city_db, received, topic_root=mqtt_settings.topic_root)
    report = verify(city_db, manifest)
    assert report.ok, report
    assert report.expected == len({(r.sensor_id, r.metric, r.time) for r in readings})


def test_flood_gauges_spike_and_drop_out_as_recorded(
    tmp_path: Path, mqtt_settings: MqttSettings, mini_city: City, collector: Collector, city_db: str
) -> None:
    faults = FaultConfig(spikes=0.05, dropouts=0.05)
    config = RunConfig(backfill=timedelta(hours=4), seed=8, faults=faults, manifest=tmp_path / "g")
    stats = Simulation(city=mini_city, mqtt=mqtt_settings, config=config).run()
    clean = Simulation(
        city=mini_city, mqtt=mqtt_settings, config=RunConfig(backfill=timedelta(hours=4), seed=8)
    ).run()
    assert stats.faults["spike"] > 5 and stats.faults["dropout"] > 5
    assert stats.observations == clean.observations and stats.readings < clean.readings
    received = collector.wait_for(stats.messages + clean.messages)[: stats.messages]
    readings, rejected = _decode_all(received, mini_city, mqtt_settings.topic_root)
    assert rejected == 0  # a spike is a valid reading of a wrong value
    gauges = {s.id: s.thresholds for s in mini_city.sensors if s.thresholds}
    wild = [
        r
        for r in readings
        if r.metric == "water_level" and (r.value >= gauges[r.sensor_id].awas or r.value < 0)
    ]
    assert {r.sensor_id for r in wild} == set(gauges)
    # Only flood gauges glitch; the manifest knows every spike, and verify finds it all stored.
    manifest = load_manifest(tmp_path / "g")
    assert {f.topic.rsplit("/", 1)[1] for f in manifest.faults} <= set(gauges)
    store_messages(city_db, received, topic_root=mqtt_settings.topic_root)
    report = verify(city_db, manifest)
    assert report.ok, report


def test_silent_sensors_without_burst_drop_readings(
    mqtt_settings: MqttSettings, mini_city: City, collector: Collector
) -> None:
    quiet = RunConfig(backfill=timedelta(hours=3), seed=2, faults=FaultConfig(silent=0.5))
    loud = RunConfig(backfill=timedelta(hours=3), seed=2)
    dropped = Simulation(city=mini_city, mqtt=mqtt_settings, config=quiet).run()
    full = Simulation(city=mini_city, mqtt=mqtt_settings, config=loud).run()
    assert dropped.faults["silent"] > 0
    assert dropped.observations == full.observations
    assert dropped.readings < full.readings


def test_outage_group_falls_silent_then_flushes_its_backlog(
    tmp_path: Path, mqtt_settings: MqttSettings, mini_city: City, collector: Collector
) -> None:
    config = RunConfig(scenario="outage", backfill=timedelta(hours=1), manifest=tmp_path / "o")
    simulation = Simulation(city=mini_city, mqtt=mqtt_settings, config=config)
    stats = simulation.run()
    group = simulation.scenario.group  # type: ignore[attr-defined]
    assert group == {"fg-welang-3", "tc-bangil-1", "tc-bangil-2", "sn-bangil-1", "sn-bangil-2"}
    received = collector.wait_for(stats.messages)
    begin, end = simulation.scenario.window  # type: ignore[attr-defined]
    bursts = [json.loads(p) for t, p in received if p.startswith(b"[")]
    assert bursts, "the backlog is flushed as lists of observations"
    assert {t.rsplit("/", 1)[1] for t, p in received if p.startswith(b"[")} <= group
    # During the outage the group published nothing on its own: its readings came in bursts.
    for topic, payload in received:
        sensor = topic.rsplit("/", 1)[1]
        if sensor in group and not payload.startswith(b"["):
            ts = datetime.fromisoformat(json.loads(payload)["ts"]).timestamp()
            assert not begin <= ts < end
    manifest = load_manifest(tmp_path / "o")
    inside = [k for k in manifest.valid if k[0] in group and begin <= k[2].timestamp() < end]
    assert len(inside) > 50  # ... but every reading of the outage arrives in the end
    assert stats.faults["burst"] == len(group)


def test_accelerated_clock_maps_and_never_overtakes_the_wall_clock() -> None:
    wall = [1_000_000.0]
    clock = SimClock(start=1_000_000.0 - 3_600, speed=60, wall=lambda: wall[0])
    assert clock.now() == 1_000_000.0 - 3_600
    assert clock.delay_s(1_000_000.0 - 3_000) == pytest.approx(10.0)
    wall[0] += 10
    assert clock.now() == pytest.approx(1_000_000.0 - 3_000)
    wall[0] += 3_600
    assert clock.now() == wall[0]  # caught up: real time from here
    assert clock.delay_s(wall[0] + 5) == pytest.approx(5.0)
    backfill = SimClock(start=0.0, backfill=True, wall=lambda: wall[0])
    assert backfill.delay_s(wall[0] + 100) == 0.0


def test_accelerated_run_uses_simulated_timestamps(
    mqtt_settings: MqttSettings, mini_city: City, collector: Collector
) -> None:
    config = RunConfig(speed=600, duration=timedelta(minutes=10), seed=1)
    simulation = Simulation(city=mini_city, mqtt=mqtt_settings, config=config)
    stats = simulation.run()
    # Ten simulated minutes at 600x take about a second, and end around now.
    assert stats.wall_elapsed_s < 5
    received = collector.wait_for(stats.messages)
    readings, _ = _decode_all(received, mini_city, mqtt_settings.topic_root)
    times = [r.time for r in readings]
    assert max(times) - min(times) > timedelta(minutes=8)
    assert abs(max(times) - datetime.now(UTC)) < timedelta(minutes=1)


def test_unreachable_broker_is_a_clear_error(mini_city: City) -> None:
    nowhere = MqttSettings(url="mqtt://127.0.0.1:1", connect_timeout_s=2)
    config = RunConfig(backfill=timedelta(minutes=5))
    with pytest.raises(PublishError, match="cannot reach the broker"):
        Simulation(city=mini_city, mqtt=nowhere, config=config).run()
