"""The decoding stage: registry lookups with a rate-limited reload, sequence gaps, storable
rejection records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.decoder import Decoder, SensorRegistry, SequenceTracker
from pantau.catalogue import Family
from pantau.db.registry import Snapshot
from pantau.payload import DecodeLimits, Reason
from tests.ingest.helpers import inbound


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """A registry source whose content the test changes, counting the loads."""

    def __init__(
        self, families: dict[str, Family], gateways: dict[str, set[str]] | None = None
    ) -> None:
        self.families = dict(families)
        self.gateways = dict(gateways or {})
        self.calls = 0
        self.fail = False

    def __call__(self) -> Snapshot:
        self.calls += 1
        if self.fail:
            raise ConnectionError("database away")
        return Snapshot(
            families=dict(self.families),
            gateways={gateway: frozenset(s) for gateway, s in self.gateways.items()},
        )


def test_unknown_sensor_reloads_registry_at_most_once_per_interval() -> None:
    loader, clock = Loader({"fg-a": Family.FLOOD_GAUGE}), Clock()
    registry = SensorRegistry(load=loader, refresh_s=10, clock=clock)
    assert registry.start() is True
    assert loader.calls == 1
    assert registry.lookup("fg-a") is Family.FLOOD_GAUGE
    assert loader.calls == 1  # a known sensor never reloads

    assert registry.lookup("fg-new") is None
    assert registry.lookup("fg-new") is None
    assert loader.calls == 1  # within the interval of the start-up load: no reload

    loader.families["fg-new"] = Family.FLOOD_GAUGE
    clock.now += 10
    assert registry.lookup("fg-new") is Family.FLOOD_GAUGE
    assert loader.calls == 2
    for _ in range(100):
        assert registry.lookup("nobody") is None
    assert loader.calls == 2  # a flood of unknown ids costs one reload per interval


def test_failed_reload_is_not_fatal_and_start_falls_back_to_cache(tmp_path: Path) -> None:
    loader, clock = Loader({"fg-a": Family.FLOOD_GAUGE}, {"gw": {"fg-a"}}), Clock()
    cache = tmp_path / "registry.json"
    registry = SensorRegistry(load=loader, refresh_s=0, cache_path=cache, clock=clock)
    registry.start()
    assert json.loads(cache.read_text()) == {
        "sensors": {"fg-a": "flood_gauge"},
        "gateways": {"gw": ["fg-a"]},
    }
    loader.fail = True
    assert registry.lookup("other") is None
    assert registry.lookup("fg-a") is Family.FLOOD_GAUGE

    restarted = SensorRegistry(load=loader, refresh_s=0, cache_path=cache, clock=clock)
    assert restarted.start() is False
    assert restarted.lookup("fg-a") is Family.FLOOD_GAUGE
    assert restarted.gateways == {"gw": frozenset({"fg-a"})}

    # A copy written before gateways existed still starts ingest: sensors only.
    cache.write_text(json.dumps({"fg-a": "flood_gauge"}))
    older = SensorRegistry(load=loader, refresh_s=0, cache_path=cache, clock=clock)
    assert older.start() is False
    assert older.lookup("fg-a") is Family.FLOOD_GAUGE
    assert older.gateways == {}

    without_cache = SensorRegistry(load=loader, refresh_s=0, clock=clock)
    with pytest.raises(ConnectionError):
        without_cache.start()


def test_sequence_gaps_count_missing_numbers_not_reordering() -> None:
    gaps: list[tuple[str, int]] = []
    tracker = SequenceTracker(on_gap=lambda sensor, missing: gaps.append((sensor, missing)))
    for seq in (1, 2, 3, 7, 5, 7, 8, 10):
        tracker.observe("fg-a", seq)
    tracker.observe("fg-b", 100)  # first number seen: no gap
    assert gaps == [("fg-a", 3), ("fg-a", 1)]
    assert tracker.total_missing == 4


def _decoder(registry_families: dict[str, Family], tracker: SequenceTracker) -> Decoder:
    registry = SensorRegistry(load=Loader(registry_families), refresh_s=0)
    registry.start()
    return Decoder(
        topic_root="t",
        registry=registry,
        limits=DecodeLimits(max_payload_bytes=10_000, max_age=timedelta(days=7)),
        sequences=tracker,
    )


def test_decoder_keeps_good_readings_and_records_rejections_with_raw_bytes() -> None:
    tracker = SequenceTracker()
    decoder = _decoder({"fg-a": Family.FLOOD_GAUGE}, tracker)
    now = datetime.now(UTC)
    message = inbound(
        "t/up/fg-a",
        {
            "ts": now.isoformat(),
            "seq": 4,
            "values": {"water_level": 1.5, "bogus": 1, "rainfall": -3},
        },
    )
    out = decoder.decode(message)
    assert [(r.sensor_id, r.metric, r.value) for r in out.readings] == [
        ("fg-a", "water_level", 1.5)
    ]
    reasons = sorted(r.rejection.reason for r in out.rejected)
    assert reasons == sorted([Reason.UNKNOWN_METRIC, Reason.OUT_OF_RANGE])
    assert all(r.payload == message.payload and r.topic == "t/up/fg-a" for r in out.rejected)
    decoder.decode(
        inbound("t/up/fg-a", {"ts": now.isoformat(), "seq": 9, "values": {"battery": 12}})
    )
    assert tracker.total_missing == 4


def test_decoder_forgets_resolved_names_when_the_registry_changes() -> None:
    loader, clock = Loader({"fg-a": Family.FLOOD_GAUGE}, {"gw": {"fg-a"}}), Clock()
    registry = SensorRegistry(load=loader, refresh_s=10, clock=clock)
    registry.start()
    decoder = Decoder(topic_root="t", registry=registry, limits=DecodeLimits())
    pack = [{"bn": "fg-a/", "n": "water_level", "v": 1.5}]
    assert [r.metric for r in decoder.decode(inbound("t/up/gw", pack)).readings] == ["water_level"]

    # The gauge is re-registered as a street node: once the registry reloads, its old
    # resolution must not be used any more.
    loader.families["fg-a"] = Family.STREET_NODE
    clock.now += 10
    assert registry.refresh()
    out = decoder.decode(inbound("t/up/gw", pack))
    assert out.readings == []
    assert [r.rejection.reason for r in out.rejected] == [Reason.UNKNOWN_METRIC]


def test_decoder_reading_without_time_gets_arrival_time_and_is_marked() -> None:
    decoder = _decoder({"fg-a": Family.FLOOD_GAUGE}, SequenceTracker())
    message = inbound("t/up/fg-a", {"values": {"water_level": 2.0}})
    (reading,) = decoder.decode(message).readings
    assert reading.time_estimated
    assert reading.time == datetime.fromtimestamp(message.received_at, tz=UTC)


@pytest.mark.parametrize(
    "payload",
    [
        b'[{"bn": "\\u0000evil/", "n": "water_level", "v": 1}]',
        b'[{"bn": "\\ud800/", "n": "water_level", "v": 1}]',
    ],
)
def test_rejection_details_are_storable_text(payload: bytes) -> None:
    decoder = _decoder({"fg-a": Family.FLOOD_GAUGE}, SequenceTracker())
    out = decoder.decode(inbound("t/up/fg-a", payload))
    assert out.rejected, "hostile SenML name must be rejected"
    for record in out.rejected:
        assert "\x00" not in record.rejection.detail
        record.rejection.detail.encode("utf-8")  # no lone surrogates
        assert record.payload == payload


def test_oversized_payload_is_rejected_with_its_bytes() -> None:
    decoder = _decoder({"fg-a": Family.FLOOD_GAUGE}, SequenceTracker())
    payload = b"x" * 10_001
    out = decoder.decode(inbound("t/up/fg-a", payload))
    assert [r.rejection.reason for r in out.rejected] == [Reason.OVERSIZED]
    assert out.rejected[0].payload == payload


def test_a_new_gateway_link_is_picked_up_without_a_restart() -> None:
    loader = Loader({"fg-a": Family.FLOOD_GAUGE, "fg-b": Family.FLOOD_GAUGE}, {"gw": {"fg-a"}})
    clock = Clock()
    registry = SensorRegistry(load=loader, refresh_s=10, clock=clock)
    registry.start()
    decoder = Decoder(topic_root="t", registry=registry, limits=DecodeLimits())
    pack = [{"bn": "fg-b/", "n": "water_level", "v": 1.5}]
    refused = decoder.decode(inbound("t/up/gw", pack))
    assert [r.rejection.reason for r in refused.rejected] == [Reason.FOREIGN_SENSOR]
    assert loader.calls == 1  # within the interval of the start-up load: no reload

    loader.gateways["gw"] = {"fg-a", "fg-b"}  # `pantau devices link gw fg-b`
    clock.now += 10
    stored = decoder.decode(inbound("t/up/gw", pack))
    assert [(r.sensor_id, r.value) for r in stored.readings] == [("fg-b", 1.5)]
    assert stored.rejected == []
    assert loader.calls == 2
    # A device flooding foreign readings costs one reload per interval, no more.
    for _ in range(50):
        assert decoder.decode(inbound("t/up/fg-a", pack)).readings == []
    assert loader.calls == 2


def test_a_revoked_link_refuses_what_was_resolved_before() -> None:
    loader, clock = Loader({"fg-a": Family.FLOOD_GAUGE}, {"gw": {"fg-a"}}), Clock()
    registry = SensorRegistry(load=loader, refresh_s=10, clock=clock)
    registry.start()
    decoder = Decoder(topic_root="t", registry=registry, limits=DecodeLimits())
    pack = [{"bn": "fg-a/", "n": "water_level", "v": 1.5}]
    assert decoder.decode(inbound("t/up/gw", pack)).readings
    loader.gateways = {}  # `pantau devices unlink gw fg-a`
    clock.now += 10
    assert registry.refresh()
    out = decoder.decode(inbound("t/up/gw", pack))
    assert out.readings == []
    assert [r.rejection.reason for r in out.rejected] == [Reason.FOREIGN_SENSOR]
