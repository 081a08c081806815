"""Payload decoding: every shape, every time form, every reason code, and fuzzing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pantau.catalogue import Family, metrics_of
from pantau.payload import (
    MAX_DETAILS,
    Decoded,
    DecodeLimits,
    GatewayMap,
    NameCache,
    Reading,
    Reason,
    decode,
    from_micros,
    iter_reasons,
    to_micros,
)

ROOT = "test/pantau"
NOW = datetime(2025, 11, 28, 3, 0, 0, tzinfo=UTC)  # 10:00 WIB
SENSORS: dict[str, Family] = {
    "fg-welang-1": Family.FLOOD_GAUGE,
    "fg-welang-2": Family.FLOOD_GAUGE,
    "tc-bangil-1": Family.TRAFFIC_COUNTER,
    "sn-bangil-1": Family.STREET_NODE,
}
# A gateway that may report for every sensor above, and one for a single sensor.
GATEWAYS: dict[str, frozenset[str]] = {
    "gateway-1": frozenset(SENSORS),
    "gw-welang": frozenset({"fg-welang-1"}),
}
FUZZ = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def run(
    payload: bytes | str | Any,
    device: str = "fg-welang-1",
    *,
    topic: str | None = None,
    limits: DecodeLimits = DecodeLimits(),
    sensors: Mapping[str, Family] | Any = SENSORS,
    gateways: GatewayMap = GATEWAYS,
) -> Decoded:
    if isinstance(payload, str):
        payload = payload.encode()
    elif not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    return decode(
        payload,
        topic=topic if topic is not None else f"{ROOT}/up/{device}",
        topic_root=ROOT,
        sensors=sensors,
        received_at=NOW,
        limits=limits,
        gateways=gateways,
    )


def reasons(decoded: Decoded) -> set[Reason]:
    return {r.reason for r in decoded.rejections}


# ---------------------------------------------------------------------------- shapes and times


def test_single_observation_with_offset_time() -> None:
    decoded = run({"ts": "2025-11-28T09:59:00+07:00", "seq": 17, "values": {"water_level": 1.42}})
    assert decoded.rejections == []
    assert decoded.readings == [
        Reading.at(datetime(2025, 11, 28, 2, 59, tzinfo=UTC), "fg-welang-1", "water_level", 1.42)
    ]
    assert decoded.readings[0].time.utcoffset() == timedelta(0)
    assert decoded.sequences == [("fg-welang-1", 17)]


def test_utc_designator_and_epoch_seconds() -> None:
    zulu = run({"ts": "2025-11-28T02:58:30.250Z", "values": {"rainfall": 0.4}})
    assert zulu.readings[0].time == datetime(2025, 11, 28, 2, 58, 30, 250000, tzinfo=UTC)
    epoch = run({"ts": int(NOW.timestamp()) - 60, "values": {"battery": 12.6}})
    assert epoch.readings == [
        Reading.at(NOW - timedelta(minutes=1), "fg-welang-1", "battery", 12.6, False)
    ]
    fractional = run({"ts": NOW.timestamp() - 0.5, "values": {"battery": 12.6}})
    assert fractional.readings[0].time == NOW - timedelta(seconds=0.5)


def test_missing_time_is_arrival_time_and_marked_estimated() -> None:
    decoded = run({"values": {"water_level": 1.0, "rainfall": 2.0}})
    assert [(r.time, r.time_estimated) for r in decoded.readings] == [(NOW, True), (NOW, True)]
    assert decoded.sequences == []


def test_list_of_observations() -> None:
    decoded = run(
        [
            {"ts": "2025-11-28T09:58:00+07:00", "seq": 1, "values": {"water_level": 1.1}},
            {"ts": "2025-11-28T09:59:00+07:00", "seq": 2, "values": {"water_level": 1.2}},
        ]
    )
    assert [(r.time.minute, r.value) for r in decoded.readings] == [(58, 1.1), (59, 1.2)]
    assert decoded.sequences == [("fg-welang-1", 1), ("fg-welang-1", 2)]
    assert decoded.rejections == []


def test_senml_pack_with_base_fields_and_absolute_times() -> None:
    bt = int(NOW.timestamp()) - 120
    decoded = run(
        [
            {"bn": "fg-welang-1/", "bt": bt, "n": "water_level", "u": "m", "v": 1.2},
            {"n": "rainfall", "u": "mm", "v": 0.4, "t": 0},
            {"n": "water_level", "v": 1.3, "t": 60},
            {"bn": "fg-welang-2/", "bu": "m", "n": "water_level", "v": 0.9, "t": 60},
        ],
        device="gateway-1",
    )
    assert decoded.rejections == []
    start = NOW - timedelta(minutes=2)
    assert decoded.readings == [
        Reading.at(start, "fg-welang-1", "water_level", 1.2),
        Reading.at(start, "fg-welang-1", "rainfall", 0.4),
        Reading.at(start + timedelta(minutes=1), "fg-welang-1", "water_level", 1.3),
        Reading.at(start + timedelta(minutes=1), "fg-welang-2", "water_level", 0.9),
    ]


def test_senml_relative_times_and_boolean_value() -> None:
    decoded = run(
        [
            {"bn": "sn-bangil-1/", "n": "lamp_state", "vb": True, "t": -30},
            {"n": "lamp_state", "vb": False, "t": -10},
            {"n": "lamp_power", "u": "W", "v": 35.5},
            {"bn": "fg-welang-1/", "bt": -120, "n": "water_level", "v": 1.0, "t": 60},
        ],
        device="gateway-1",
    )
    assert decoded.rejections == []
    assert decoded.readings == [
        Reading.at(NOW - timedelta(seconds=30), "sn-bangil-1", "lamp_state", 1.0),
        Reading.at(NOW - timedelta(seconds=10), "sn-bangil-1", "lamp_state", 0.0),
        Reading.at(NOW, "sn-bangil-1", "lamp_power", 35.5, True),
        Reading.at(NOW - timedelta(seconds=60), "fg-welang-1", "water_level", 1.0),
    ]


def test_senml_full_names_without_base_name() -> None:
    decoded = run([{"n": "tc-bangil-1/count_motorcycle", "v": 412, "u": "count"}], "tc-bangil-1")
    assert decoded.readings == [Reading.at(NOW, "tc-bangil-1", "count_motorcycle", 412.0, True)]


def test_senml_base_value_is_added() -> None:
    decoded = run([{"bn": "fg-welang-1/", "bv": 1.0, "n": "water_level", "v": 0.25, "t": 0}])
    assert [r.value for r in decoded.readings] == [1.25]


def test_callable_lookup() -> None:
    decoded = run({"values": {"water_level": 1.0}}, sensors=SENSORS.get)
    assert len(decoded.readings) == 1


# ---------------------------------------------------------------------------- every reason code

TS = "2025-11-28T09:59:00+07:00"

REASON_CASES: list[tuple[Reason, dict[str, Any]]] = [
    (Reason.OVERSIZED, {"payload": b'{"values": {"water_level": 1.0}}' + b" " * 100,
                        "limits": DecodeLimits(max_payload_bytes=64)}),
    (Reason.BAD_TOPIC, {"payload": {"values": {"water_level": 1}}, "topic": "elsewhere/up/x"}),
    (Reason.BAD_TOPIC, {"payload": {"values": {"water_level": 1}}, "topic": f"{ROOT}/up/a/b"}),
    (Reason.MALFORMED_JSON, {"payload": b'{"values": '}),
    (Reason.MALFORMED_JSON, {"payload": b"\xff\xfe\x00garbage"}),
    (Reason.BAD_SHAPE, {"payload": "42"}),
    (Reason.BAD_SHAPE, {"payload": "[]"}),
    (Reason.BAD_SHAPE, {"payload": {"ts": TS}}),
    (Reason.BAD_SHAPE, {"payload": {"values": {}}}),
    (Reason.BAD_SHAPE, {"payload": {"values": {"water_level": 1}, "seq": -1}}),
    (Reason.BAD_SHAPE, {"payload": [{"n": "water_level", "v": 1}]}),
    (Reason.BAD_SHAPE, {"payload": [{"bn": "fg-welang-1/"}]}),
    (Reason.BAD_SHAPE, {"payload": {"sensor": 7, "values": {"water_level": 1}}}),
    (Reason.BAD_SHAPE, {"payload": {"sensor": "", "values": {"water_level": 1}}}),
    (Reason.UNKNOWN_SENSOR, {"payload": {"values": {"water_level": 1}}, "device": "fg-nowhere-9"}),
    (Reason.UNKNOWN_SENSOR, {"payload": [{"n": "fg-nowhere-9/water_level", "v": 1}],
                             "device": "fg-nowhere-9"}),
    (Reason.UNKNOWN_SENSOR, {"payload": {"sensor": "fg-nowhere-9", "values": {"water_level": 1}},
                             "device": "fg-nowhere-9"}),
    (Reason.UNKNOWN_METRIC, {"payload": {"values": {"pm25": 12}}}),
    (Reason.UNKNOWN_METRIC, {"payload": [{"n": "fg-welang-1/speed", "v": 1}]}),
    (Reason.UNIT_MISMATCH, {"payload": [{"n": "fg-welang-1/water_level", "u": "cm", "v": 120}]}),
    (Reason.UNIT_MISMATCH, {"payload": [{"bn": "fg-welang-1/", "bu": "cm", "n": "water_level",
                                         "v": 120}]}),
    (Reason.BAD_VALUE, {"payload": {"values": {"water_level": "high"}}}),
    (Reason.BAD_VALUE, {"payload": {"values": {"water_level": True}}}),
    (Reason.BAD_VALUE, {"payload": {"values": {"count_car": 3.5}}, "device": "tc-bangil-1"}),
    (Reason.BAD_VALUE, {"payload": [{"n": "sn-bangil-1/lamp_state", "vs": "on"}],
                        "device": "sn-bangil-1"}),
    (Reason.BAD_VALUE, {"payload": [{"n": "sn-bangil-1/lamp_state", "vb": "yes"}],
                        "device": "gateway-1"}),
    (Reason.BAD_VALUE, {"payload": [{"n": "fg-welang-1/water_level", "v": None}]}),
    (Reason.BAD_SHAPE, {"payload": [{"bn": "fg-welang-1/", "n": None, "v": 1}]}),
    (Reason.BAD_SHAPE, {"payload": [{"n": "fg-welang-1/water_level", "u": None, "v": 1}]}),
    (Reason.BAD_SHAPE, {"payload": [{"n": "fg-welang-1/water_level", "v": 1, "t": None}]}),
    (Reason.BAD_SHAPE, {"payload": [{"n": "fg-welang-1/water_level", "v": 1, "t": "now"}]}),
    (Reason.NON_FINITE, {"payload": b'{"values": {"water_level": NaN}}'}),
    (Reason.NON_FINITE, {"payload": b'{"values": {"water_level": 1e999}}'}),
    (Reason.NON_FINITE, {"payload": b'{"values": {"water_level": ' + b"9" * 400 + b"}}"}),
    (Reason.OUT_OF_RANGE, {"payload": {"values": {"water_level": 99.0}}}),
    (Reason.OUT_OF_RANGE, {"payload": {"values": {"occupancy": -0.1}}, "device": "tc-bangil-1"}),
    (Reason.BAD_TIME, {"payload": {"ts": "yesterday", "values": {"water_level": 1}}}),
    (Reason.BAD_TIME, {"payload": {"ts": "2025-11-28T09:59:00", "values": {"water_level": 1}}}),
    (Reason.BAD_TIME, {"payload": {"ts": -5, "values": {"water_level": 1}}}),
    (Reason.BAD_TIME, {"payload": {"ts": None, "values": {"water_level": 1}}}),
    (Reason.BAD_TIME, {"payload": [{"n": "fg-welang-1/water_level", "v": 1, "t": 4e10}]}),
    (Reason.BAD_TIME, {"payload": {"ts": "0001-01-01T00:00:00+01:00",
                                   "values": {"water_level": 1}}}),
    (Reason.FUTURE_TIME, {"payload": {"ts": "2025-11-28T10:10:00+07:00",
                                      "values": {"water_level": 1}}}),
    (Reason.FUTURE_TIME, {"payload": [{"n": "fg-welang-1/water_level", "v": 1, "t": 3600}]}),
    (Reason.TOO_OLD, {"payload": {"ts": "2024-01-01T00:00:00+07:00",
                                  "values": {"water_level": 1}}}),
    (Reason.TOO_OLD, {"payload": {"ts": TS, "values": {"water_level": 1}},
                      "limits": DecodeLimits(max_age=timedelta(seconds=10))}),
    # A street node's stolen secret must not raise Awas on a river: in every shape.
    (Reason.FOREIGN_SENSOR, {"payload": [{"bn": "fg-welang-1/", "n": "water_level", "v": 4.321}],
                             "device": "sn-bangil-1"}),
    (Reason.FOREIGN_SENSOR, {"payload": {"sensor": "fg-welang-1", "values": {"water_level": 4.3}},
                             "device": "sn-bangil-1"}),
    (Reason.FOREIGN_SENSOR, {"payload": [{"sensor": "fg-welang-1", "values": {"water_level": 4}}],
                             "device": "sn-bangil-1"}),
    # A gateway reports only for its own sensors; an unlinked (even unknown) one is foreign.
    (Reason.FOREIGN_SENSOR, {"payload": [{"n": "fg-welang-2/water_level", "v": 1}],
                             "device": "gw-welang"}),
    (Reason.FOREIGN_SENSOR, {"payload": [{"n": "fg-nowhere-9/water_level", "v": 1}],
                             "device": "gw-welang"}),
    # The gateway's own id is not a sensor: without `sensor`, it reports for nobody.
    (Reason.UNKNOWN_SENSOR, {"payload": {"values": {"water_level": 1}}, "device": "gw-welang"}),
]  # fmt: skip

DECODER_REASONS = set(Reason) - {Reason.DB_REFUSED, Reason.SPOOL_CORRUPT}


def test_reason_cases_cover_every_reason() -> None:
    # The write path's own reasons are reached in tests/ingest (writer and spool).
    assert {reason for reason, _ in REASON_CASES} == DECODER_REASONS
    assert set(iter_reasons()) == {r.value for r in Reason}


@pytest.mark.parametrize(
    ("reason", "case"),
    REASON_CASES,
    ids=[f"{r.value}-{i}" for i, (r, _) in enumerate(REASON_CASES)],
)
def test_reason_is_reached(reason: Reason, case: dict[str, Any]) -> None:
    decoded = run(
        case["payload"],
        case.get("device", "fg-welang-1"),
        topic=case.get("topic"),
        limits=case.get("limits", DecodeLimits()),
    )
    assert decoded.readings == []
    assert reasons(decoded) == {reason}
    assert all(r.detail for r in decoded.rejections)


# ---------------------------------------------------------------------------- partial payloads


def test_partial_observation_keeps_good_values() -> None:
    decoded = run(
        {"ts": TS, "values": {"water_level": 1.5, "rainfall": -3, "battery": "low", "pm25": 1}}
    )
    assert [(r.metric, r.value) for r in decoded.readings] == [("water_level", 1.5)]
    assert reasons(decoded) == {Reason.OUT_OF_RANGE, Reason.BAD_VALUE, Reason.UNKNOWN_METRIC}
    detail = next(r.detail for r in decoded.rejections if r.reason is Reason.OUT_OF_RANGE)
    assert "rainfall" in detail


def test_partial_list_keeps_good_observations() -> None:
    decoded = run(
        [
            {"ts": TS, "values": {"water_level": 1.1}},
            "not an object",
            {"ts": "0001-01-01T00:00:00+01:00", "values": {"water_level": 1.2}},
            {"ts": "2030-01-01T00:00:00Z", "values": {"water_level": 1.3}},
            {"values": {"water_level": 1.4}},
        ]
    )
    assert [r.value for r in decoded.readings] == [1.1, 1.4]
    assert reasons(decoded) == {Reason.BAD_SHAPE, Reason.BAD_TIME, Reason.FUTURE_TIME}
    shape = next(r.detail for r in decoded.rejections if r.reason is Reason.BAD_SHAPE)
    assert shape.startswith("[1]")


def test_partial_senml_keeps_good_records() -> None:
    decoded = run(
        [
            {"bn": "fg-welang-1/", "n": "water_level", "v": 1.2},
            {"n": "rainfall", "u": "in", "v": 0.1},
            {"n": "nope-1/water_level", "bn": "", "v": 1},
            {"bn": "fg-welang-2/", "n": "water_level", "v": 0.8},
        ],
        "gateway-1",
        gateways={"gateway-1": frozenset({*SENSORS, "nope-1"})},
    )
    assert [(r.sensor_id, r.value) for r in decoded.readings] == [
        ("fg-welang-1", 1.2),
        ("fg-welang-2", 0.8),
    ]
    assert reasons(decoded) == {Reason.UNIT_MISMATCH, Reason.UNKNOWN_SENSOR}


def test_foreign_records_are_refused_and_the_rest_kept() -> None:
    """A gateway's pack keeps its own sensors' records; a node's own uplink only its own."""
    pack = [
        {"bn": "fg-welang-1/", "n": "water_level", "v": 1.2},
        {"bn": "fg-welang-2/", "n": "water_level", "v": 4.321},
        {"n": "water_level", "v": 4.4, "t": -1},
        {"bn": "fg-welang-1/", "n": "rainfall", "v": 0.5},
    ]
    decoded = run(pack, "gw-welang")
    assert [(r.sensor_id, r.metric) for r in decoded.readings] == [
        ("fg-welang-1", "water_level"),
        ("fg-welang-1", "rainfall"),
    ]
    assert [r.reason for r in decoded.rejections] == [Reason.FOREIGN_SENSOR]
    detail = decoded.rejections[0].detail
    assert detail.startswith("[1]: gw-welang may not report for 'fg-welang-2'"), detail
    assert "[2]" in detail
    observations = [
        {"values": {"lamp_power": 40.0}},
        {"sensor": "sn-bangil-1", "values": {"lamp_power": 41.0}},
        {"sensor": "fg-welang-1", "values": {"water_level": 4.321}},
    ]
    mixed = run(observations, "sn-bangil-1")
    assert [(r.sensor_id, r.value) for r in mixed.readings] == [
        ("sn-bangil-1", 40.0),
        ("sn-bangil-1", 41.0),
    ]
    assert reasons(mixed) == {Reason.FOREIGN_SENSOR}


def test_a_gateway_uses_the_simple_shapes_with_sensor() -> None:
    decoded = run(
        [
            {"sensor": "fg-welang-1", "ts": TS, "seq": 4, "values": {"water_level": 1.1}},
            {"sensor": "tc-bangil-1", "ts": TS, "values": {"count_car": 12}},
        ],
        "gateway-1",
    )
    assert decoded.rejections == []
    assert [(r.sensor_id, r.metric) for r in decoded.readings] == [
        ("fg-welang-1", "water_level"),
        ("tc-bangil-1", "count_car"),
    ]
    assert decoded.sequences == [("fg-welang-1", 4)]


def test_without_a_gateway_map_every_device_reports_only_for_itself() -> None:
    pack = json.dumps([{"n": "fg-welang-2/water_level", "v": 1.0}]).encode()
    alone = decode(
        pack, topic=f"{ROOT}/up/gateway-1", topic_root=ROOT, sensors=SENSORS, received_at=NOW
    )
    assert reasons(alone) == {Reason.FOREIGN_SENSOR}


def test_resolved_names_do_not_authorise_another_device() -> None:
    """The name cache is shared by every device; authority is checked per message."""
    names: NameCache = {}
    pack = json.dumps([{"bn": "fg-welang-1/", "n": "water_level", "v": 3.9}]).encode()

    def on(device: str) -> Decoded:
        return decode(
            pack,
            topic=f"{ROOT}/up/{device}",
            topic_root=ROOT,
            sensors=SENSORS,
            received_at=NOW,
            names=names,
            gateways=GATEWAYS,
        )

    assert [r.sensor_id for r in on("gw-welang").readings] == ["fg-welang-1"]
    assert "fg-welang-1/water_level" in names  # resolved, and kept
    stolen = on("sn-bangil-1")
    assert stolen.readings == []
    assert reasons(stolen) == {Reason.FOREIGN_SENSOR}
    assert [r.sensor_id for r in on("fg-welang-1").readings] == ["fg-welang-1"]


def test_many_problems_are_summarised_per_reason() -> None:
    values = {"count_car": -1, "count_bus": -2, "count_truck": -3, "count_motorcycle": -4,
              "avg_speed": -5, "occupancy": -6}  # fmt: skip
    decoded = run({"ts": TS, "values": values}, device="tc-bangil-1")
    assert len(decoded.rejections) == 1
    detail = decoded.rejections[0].detail
    assert detail.count(";") == MAX_DETAILS
    assert detail.endswith(f"and {len(values) - MAX_DETAILS} more")


def test_a_failing_lookup_refuses_the_message_without_raising() -> None:
    def broken(sensor_id: str) -> Family | None:
        raise RuntimeError("registry unavailable")

    decoded = run({"values": {"water_level": 1}}, sensors=broken)
    assert decoded.readings == []
    assert reasons(decoded) == {Reason.BAD_SHAPE}


# ---------------------------------------------------------------------------- fuzzing


def _check_outcome(decoded: Decoded) -> None:
    assert isinstance(decoded, Decoded)
    assert decoded.readings or decoded.rejections
    for rejection in decoded.rejections:
        assert isinstance(rejection.reason, Reason)
        assert isinstance(rejection.detail, str)
    for reading in decoded.readings:
        family = SENSORS[reading.sensor_id]
        metric = metrics_of(family)[reading.metric]
        assert metric.in_range(reading.value)
        assert reading.time.tzinfo is not None
        assert NOW - timedelta(days=90) <= reading.time <= NOW + timedelta(minutes=5)


@FUZZ
@given(payload=st.binary(max_size=512), device=st.sampled_from([*SENSORS, "x", ""]))
def test_fuzz_arbitrary_bytes(payload: bytes, device: str) -> None:
    _check_outcome(run(payload, device))


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)

# Near-valid documents reach deeper into the decoder than random ones.
KEYS = ["ts", "seq", "values", "bn", "bt", "bu", "bv", "n", "u", "v", "vb", "vs", "t"]
NAMES = [*SENSORS, *(f"{s}/" for s in SENSORS), "water_level", "lamp_state", "count_car",
         "fg-welang-1/water_level", "sn-bangil-1/lamp_state", "nope/x", "", "/"]  # fmt: skip
NEAR_SCALARS = (
    JSON_SCALARS
    | st.sampled_from(NAMES)
    | st.sampled_from(["m", "mm", "W", "count", "1", "cm"])
    | st.integers(min_value=-(2**29), max_value=2**29)
    | st.integers(min_value=int(NOW.timestamp()) - 10**7, max_value=int(NOW.timestamp()) + 600)
    | st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat())
)
NEAR_VALUES = st.dictionaries(
    st.sampled_from(["water_level", "rainfall", "battery", "count_car", "occupancy",
                     "lamp_state", "pm25", "x"]),
    NEAR_SCALARS,
    max_size=4,
)  # fmt: skip
NEAR_RECORD = st.dictionaries(st.sampled_from(KEYS), NEAR_SCALARS | NEAR_VALUES, max_size=6)
NEAR_JSON = NEAR_RECORD | st.lists(NEAR_RECORD | JSON_SCALARS, max_size=6)


def _dumps(document: Any) -> bytes:
    return json.dumps(document, allow_nan=True).encode()


@FUZZ
@given(document=ANY_JSON, device=st.sampled_from([*SENSORS, "nope-1"]))
def test_fuzz_arbitrary_json(document: Any, device: str) -> None:
    _check_outcome(run(_dumps(document), device))


@FUZZ
@given(document=NEAR_JSON, device=st.sampled_from([*SENSORS, "nope-1"]))
def test_fuzz_near_valid_json(document: Any, device: str) -> None:
    _check_outcome(run(_dumps(document), device))


@pytest.mark.slow
@settings(deadline=None, max_examples=5000, suppress_health_check=[HealthCheck.too_slow])
@given(document=NEAR_JSON | ANY_JSON, device=st.sampled_from([*SENSORS, "nope-1"]))
def test_fuzz_json_long(document: Any, device: str) -> None:
    _check_outcome(run(_dumps(document), device))


# ---------------------------------------------------------------------------- round trip


def _value_for(family: Family, name: str) -> st.SearchStrategy[float]:
    metric = metrics_of(family)[name]
    if metric.integer:
        return st.integers(int(metric.minimum), int(metric.maximum)).map(float)
    return st.floats(metric.minimum, metric.maximum, allow_nan=False, allow_infinity=False)


@st.composite
def observations(draw: st.DrawFn, sensor_id: str) -> tuple[dict[str, float], datetime]:
    family = SENSORS[sensor_id]
    names = draw(st.lists(st.sampled_from(sorted(metrics_of(family))), min_size=1, unique=True))
    values = {name: draw(_value_for(family, name)) for name in names}
    when = draw(
        st.datetimes(
            min_value=(NOW - timedelta(days=89)).replace(tzinfo=None),
            max_value=(NOW + timedelta(minutes=4)).replace(tzinfo=None),
        )
    )
    return values, when.replace(tzinfo=UTC)


OFFSETS = st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@settings(deadline=None, max_examples=200)
@given(
    sensor_id=st.sampled_from(sorted(SENSORS)),
    data=st.data(),
    as_list=st.booleans(),
)
def test_observations_round_trip(sensor_id: str, data: st.DataObject, as_list: bool) -> None:
    drawn = data.draw(st.lists(observations(sensor_id), min_size=1, max_size=4))
    documents: list[dict[str, Any]] = []
    expected: list[Reading] = []
    for index, (values, when) in enumerate(drawn):
        form = data.draw(st.sampled_from(["rfc3339", "epoch", "none"]))
        document: dict[str, Any] = {"seq": index, "values": values}
        stamp, estimated = when, False
        if form == "rfc3339":
            document["ts"] = when.astimezone(data.draw(OFFSETS)).isoformat()
        elif form == "epoch":
            stamp = when.replace(microsecond=0)
            document["ts"] = int(stamp.timestamp())
        else:
            stamp, estimated = NOW, True
        documents.append(document)
        expected += [Reading.at(stamp, sensor_id, n, v, estimated) for n, v in values.items()]
    if not as_list:
        documents = documents[:1]
        expected = expected[: len(drawn[0][0])]
    decoded = run(documents if as_list else documents[0], sensor_id)
    assert decoded.rejections == []
    assert decoded.readings == expected
    assert decoded.sequences == [(sensor_id, i) for i in range(len(documents))]


@settings(deadline=None, max_examples=200)
@given(data=st.data())
def test_senml_round_trip(data: st.DataObject) -> None:
    pack: list[dict[str, Any]] = []
    expected: list[Reading] = []
    for sensor_id in data.draw(st.lists(st.sampled_from(sorted(SENSORS)), min_size=1, max_size=3)):
        family = SENSORS[sensor_id]
        values, when = data.draw(observations(sensor_id))
        when = when.replace(microsecond=0)
        absolute = data.draw(st.booleans())
        base = int(when.timestamp()) if absolute else int((when - NOW).total_seconds())
        first = True
        for name, value in values.items():
            metric = metrics_of(family)[name]
            record: dict[str, Any] = {"n": name}
            if first:
                record |= {"bn": f"{sensor_id}/", "bt": base}
                first = False
            if data.draw(st.booleans()):
                record["u"] = metric.unit
            if name == "lamp_state" and data.draw(st.booleans()):
                record["vb"] = value == 1.0
            else:
                record["v"] = int(value) if metric.integer else value
            record["t"] = 0
            pack.append(record)
            expected.append(Reading.at(when, sensor_id, name, value, False))
    decoded = run(pack, "gateway-1")
    assert decoded.rejections == []
    assert decoded.readings == expected


# ---------------------------------------------------------------------------- times as integers


@given(st.datetimes(timezones=st.just(UTC)))
def test_micros_round_trip(when: datetime) -> None:
    micros = to_micros(when)
    assert from_micros(micros) == when
    assert Reading.at(when, "fg-welang-1", "water_level", 1.0).time == when
    assert Reading.at(when, "fg-welang-1", "water_level", 1.0).time_us == micros


@given(st.integers(to_micros(NOW - timedelta(days=89)), to_micros(NOW + timedelta(minutes=4))))
def test_senml_epoch_seconds_keep_every_microsecond(micros: int) -> None:
    # Gateways (and the load simulator) send times as float epoch seconds with six decimals.
    decoded = run([{"n": "fg-welang-1/water_level", "v": 1.0, "t": micros / 1_000_000}])
    assert decoded.rejections == []
    assert [r.time_us for r in decoded.readings] == [micros]
    assert decoded.readings[0].time == datetime.fromtimestamp(micros / 1_000_000, tz=UTC)


# ---------------------------------------------------------------------------- resolved names


def test_resolved_names_are_kept_between_calls_and_refusals_are_not() -> None:
    known: dict[str, Family] = {"fg-welang-1": Family.FLOOD_GAUGE}
    asked: list[str] = []

    def lookup(sensor_id: str) -> Family | None:
        asked.append(sensor_id)
        return known.get(sensor_id)

    names: NameCache = {}
    pack = [
        {"bn": "fg-welang-1/", "n": "water_level", "v": 1.0},
        {"n": "rainfall", "v": 0.5},
        {"bn": "fg-welang-2/", "n": "water_level", "v": 2.0},
        {"n": "water_level", "v": 2.1},
    ]
    body = json.dumps(pack).encode()
    kwargs: dict[str, Any] = {
        "topic": f"{ROOT}/up/gw-1",
        "topic_root": ROOT,
        "received_at": NOW,
        "gateways": {"gw-1": frozenset({"fg-welang-1", "fg-welang-2"})},
    }
    first = decode(body, sensors=lookup, names=names, **kwargs)
    assert [r.value for r in first.readings] == [1.0, 0.5]
    assert reasons(first) == {Reason.UNKNOWN_SENSOR}
    # Within a pack a refused name is asked once; a resolved one is kept for the next calls.
    assert asked == ["fg-welang-1", "fg-welang-1", "fg-welang-2"]
    assert set(names) == {"fg-welang-1/water_level", "fg-welang-1/rainfall"}

    known["fg-welang-2"] = Family.FLOOD_GAUGE  # registered since: accepted at once
    asked.clear()
    second = decode(body, sensors=lookup, names=names, **kwargs)
    assert [r.value for r in second.readings] == [1.0, 0.5, 2.0, 2.1]
    assert asked == ["fg-welang-2"]
