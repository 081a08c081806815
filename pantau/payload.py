"""Decoding of sensor payloads: the wire protocol of docs/protocol.md.

A device publishes JSON to ``ROOT/up/DEVICE_ID`` in one of three shapes:

* one observation: ``{"ts": ..., "seq": 17, "values": {"water_level": 1.42}}``
* a list of such observations;
* a SenML pack (RFC 8428), for gateways that speak for many sensors: records named
  ``SENSOR_ID/METRIC`` (usually ``bn`` carries ``SENSOR_ID/``).

A device speaks only for itself: a reading for sensor S on ``ROOT/up/D`` is kept only if S is D
or D is a gateway registered for S (an observation names S in its optional ``sensor`` field;
without it, S is D). Anything else is rejected as ``foreign_sensor``, in every shape.

Decoding never raises: every problem becomes a :class:`Rejection` with a reason code, and the
good readings of a partly bad payload are kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from pantau.catalogue import Family, Metric, find_metric
from pantau.settings import Settings
from pantau.topics import uplink_device

# SenML: times below 2**28 are relative to "now" (RFC 8428, section 4.5.3).
SENML_RELATIVE_LIMIT = 2**28
_YEAR_3000_S = 32_503_680_000
_SENML_KEYS = frozenset(
    {"bn", "bt", "bu", "bv", "bver", "n", "u", "v", "vb", "vs", "vd", "s", "t", "ut"}
)
# How many record-level problems one rejection row spells out before summarising.
MAX_DETAILS = 5


class Reason(StrEnum):
    """Why a payload (or part of it) was not stored."""

    OVERSIZED = "oversized"
    BAD_TOPIC = "bad_topic"
    MALFORMED_JSON = "malformed_json"
    BAD_SHAPE = "bad_shape"
    UNKNOWN_SENSOR = "unknown_sensor"
    UNKNOWN_METRIC = "unknown_metric"
    UNIT_MISMATCH = "unit_mismatch"
    BAD_VALUE = "bad_value"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIME = "bad_time"
    FUTURE_TIME = "future_time"
    TOO_OLD = "too_old"
    FOREIGN_SENSOR = "foreign_sensor"
    # Not the decoder's: ingest's write path records these.
    DB_REFUSED = "db_refused"
    SPOOL_CORRUPT = "spool_corrupt"


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_micros(when: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    return (when - _UNIX_EPOCH) // _ONE_US


def from_micros(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the Unix epoch."""
    return _UNIX_EPOCH + timedelta(microseconds=micros)


class Reading(NamedTuple):
    """One stored value: the natural key is (sensor_id, metric, time).

    A named tuple because it is built once per reading on the hot path and is exactly the row
    written by COPY. The time is kept as integer microseconds since the Unix epoch: that is what
    the database stores, and a gateway's epoch times become it without a datetime in between.
    """

    time_us: int
    sensor_id: str
    metric: str
    value: float
    time_estimated: bool = False

    @classmethod
    def at(
        cls,
        time: datetime,
        sensor_id: str,
        metric: str,
        value: float,
        time_estimated: bool = False,
    ) -> Reading:
        """A reading observed at ``time`` (an aware datetime)."""
        return cls(to_micros(time), sensor_id, metric, value, time_estimated)

    @property
    def time(self) -> datetime:
        """The observation time, in UTC."""
        return from_micros(self.time_us)


@dataclass(slots=True, frozen=True)
class Rejection:
    """One reason a payload was (partly) refused, with a human-readable detail."""

    reason: Reason
    detail: str


@dataclass(slots=True)
class Decoded:
    """The outcome of decoding one MQTT message."""

    readings: list[Reading] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    # (sensor_id, seq) pairs the device numbered, for gap detection upstream of Pantau.
    sequences: list[tuple[str, int]] = field(default_factory=list)


@dataclass(slots=True, frozen=True, kw_only=True)
class DecodeLimits:
    """What a payload may carry (:meth:`from_settings`: what every decoder of Pantau uses)."""

    max_payload_bytes: int = 256 * 1024
    max_future: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=90)
    # The same two in microseconds, worked out once rather than for every message.
    max_future_us: int = field(init=False, repr=False, compare=False)
    max_age_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_future_us", self.max_future // _ONE_US)
        object.__setattr__(self, "max_age_us", self.max_age // _ONE_US)

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodeLimits:
        """Size and clock skew from the ingest settings, age from raw retention: ingest, the
        alert service and the API's replay decode alike, so they reach the same verdicts."""
        return cls(
            max_payload_bytes=settings.ingest.max_payload_bytes,
            max_future=timedelta(seconds=settings.ingest.max_future_s),
            max_age=settings.storage.raw_retention,
        )


class _ProblemError(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


SensorLookup = Callable[[str], Family | None]
# SenML names ("SENSOR_ID/METRIC") already resolved to their sensor and metric. Resolving says
# nothing about who may report for the sensor: that is checked on every record, so one device's
# resolved names never authorise another device.
NameCache = dict[str, tuple[str, Metric]]
# Gateway id to the sensors it may report for (besides itself).
GatewayMap = Mapping[str, Collection[str]]
_NOBODY: frozenset[str] = frozenset()
_NO_GATEWAYS: GatewayMap = MappingProxyType({})


def decode(
    payload: bytes,
    *,
    topic: str,
    topic_root: str,
    sensors: SensorLookup | Mapping[str, Family],
    received_at: datetime,
    limits: DecodeLimits = DecodeLimits(),
    names: NameCache | None = None,
    gateways: GatewayMap | None = None,
) -> Decoded:
    """Decode one message into readings and rejections; never raises on bad input.

    ``gateways`` says which sensors each gateway may report for; the topic's device may report
    for itself and, if it is a gateway there, for those. ``names`` keeps the SenML names that
    resolved from one call to the next; whoever passes it clears it when what ``sensors``
    knows changes.
    """
    lookup: SensorLookup = sensors.get if isinstance(sensors, Mapping) else sensors
    out = Decoded()
    try:
        _decode_into(
            out,
            payload,
            topic,
            topic_root,
            lookup,
            received_at,
            limits,
            {} if names is None else names,
            _NO_GATEWAYS if gateways is None else gateways,
        )
    except _ProblemError as problem:
        out.rejections.append(Rejection(problem.reason, problem.detail))
    except Exception as error:  # a decoder bug must not stall the stream: refuse the message
        out.readings.clear()
        out.rejections.append(Rejection(Reason.BAD_SHAPE, f"undecodable: {error!r}"[:500]))
    out.rejections = _summarise(out.rejections)
    return out


def _decode_into(
    out: Decoded,
    payload: bytes,
    topic: str,
    topic_root: str,
    lookup: SensorLookup,
    received_at: datetime,
    limits: DecodeLimits,
    names: NameCache,
    gateways: GatewayMap,
) -> None:
    if len(payload) > limits.max_payload_bytes:
        raise _ProblemError(
            Reason.OVERSIZED, f"{len(payload)} bytes > limit of {limits.max_payload_bytes}"
        )
    device = uplink_device(topic, topic_root)
    if device is None:
        raise _ProblemError(Reason.BAD_TOPIC, f"expected {topic_root}/up/DEVICE_ID, got {topic!r}")
    document = _parse_json(payload)
    clock = _Clock(received_at=received_at, limits=limits)
    speaker = _Speaker(device, gateways.get(device, _NOBODY))
    if isinstance(document, dict):
        _observation(out, document, speaker, lookup, clock)
    elif isinstance(document, list) and document:
        if all(isinstance(r, dict) for r in document) and _looks_like_senml(document):
            _senml(out, document, speaker, lookup, clock, names)
        else:
            for index, item in enumerate(document):
                if not isinstance(item, dict):
                    out.rejections.append(
                        Rejection(Reason.BAD_SHAPE, f"[{index}]: expected an object")
                    )
                    continue
                _observation(out, item, speaker, lookup, clock, where=f"[{index}]")
    else:
        raise _ProblemError(
            Reason.BAD_SHAPE, "expected an observation object, a list of them, or a SenML pack"
        )


def _parse_json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)  # the fast path, for the valid JSON nearly all devices send
    except orjson.JSONDecodeError:
        pass
    # The standard parser decides what orjson refuses, so that a bare NaN is still `non_finite`
    # and a lone surrogate still decodes, and its error messages are the ones documented.
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as error:
        raise _ProblemError(Reason.MALFORMED_JSON, str(error)[:300]) from None


class _Speaker:
    """The device of the topic, and whom it may report for."""

    __slots__ = ("device", "others")

    def __init__(self, device: str, others: Collection[str]) -> None:
        self.device = device
        self.others = others

    def check(self, sensor_id: str) -> None:
        """Raise ``foreign_sensor`` unless the device may report for ``sensor_id``."""
        if sensor_id != self.device and sensor_id not in self.others:
            raise _ProblemError(
                Reason.FOREIGN_SENSOR,
                f"{self.device[:80]} may not report for {sensor_id[:80]!r} "
                "(not itself, and not a sensor of its gateway)",
            )


def _looks_like_senml(records: list[dict[str, Any]]) -> bool:
    return any(not _SENML_KEYS.isdisjoint(r) for r in records) and not any(
        "values" in r for r in records
    )


class _Clock:
    """Checks observation times against the message's arrival; all in Unix microseconds."""

    __slots__ = ("earliest_us", "latest_us", "received_us")

    def __init__(self, *, received_at: datetime, limits: DecodeLimits) -> None:
        self.received_us = received = to_micros(received_at)
        self.earliest_us = received - limits.max_age_us
        self.latest_us = received + limits.max_future_us

    def parse(self, raw: Any) -> int:
        if isinstance(raw, bool) or raw is None:
            raise _ProblemError(Reason.BAD_TIME, f"time must be RFC 3339 or epoch seconds: {raw!r}")
        if isinstance(raw, int | float):
            return self.epoch(raw)
        if isinstance(raw, str):
            try:
                parsed = datetime.fromisoformat(raw)
            except ValueError:
                raise _ProblemError(
                    Reason.BAD_TIME, f"not an RFC 3339 time: {raw[:64]!r}"
                ) from None
            if parsed.tzinfo is None:
                raise _ProblemError(Reason.BAD_TIME, f"time without a UTC offset: {raw[:64]!r}")
            try:
                in_utc = parsed.astimezone(UTC)
            except OverflowError:  # e.g. year 1 with a positive offset
                raise _ProblemError(Reason.BAD_TIME, f"time out of range: {raw[:64]!r}") from None
            return self.check(to_micros(in_utc))
        raise _ProblemError(
            Reason.BAD_TIME, f"time must be RFC 3339 or epoch seconds: {raw!r}"[:200]
        )

    def epoch(self, seconds: float) -> int:
        """Epoch seconds, checked, as microseconds."""
        if not math.isfinite(seconds) or not 0 <= seconds < _YEAR_3000_S:
            raise _ProblemError(Reason.BAD_TIME, f"epoch seconds out of range: {seconds!r}")
        return self.check(round(seconds * 1_000_000))

    def check(self, micros: int) -> int:
        if micros > self.latest_us:
            raise _ProblemError(
                Reason.FUTURE_TIME, f"{from_micros(micros).isoformat()} is ahead of the clock"
            )
        if micros < self.earliest_us:
            raise _ProblemError(
                Reason.TOO_OLD, f"{from_micros(micros).isoformat()} is older than retention"
            )
        return micros


def _value(metric: Metric, raw: Any) -> float:
    if type(raw) is float:  # most values: no bool, int or overflow to consider
        if metric.in_range(raw) and not metric.integer:
            return raw
    elif isinstance(raw, bool):
        if not metric.integer:
            raise _ProblemError(Reason.BAD_VALUE, f"{metric.name}: expected a number, got {raw!r}")
        return 1.0 if raw else 0.0
    if not isinstance(raw, int | float):
        raise _ProblemError(
            Reason.BAD_VALUE, f"{metric.name}: expected a number, got {raw!r}"[:200]
        )
    try:
        value = float(raw)
    except OverflowError:
        raise _ProblemError(Reason.NON_FINITE, f"{metric.name}: value overflows") from None
    if not math.isfinite(value):
        raise _ProblemError(Reason.NON_FINITE, f"{metric.name}: {value}")
    if not metric.in_range(value):
        raise _ProblemError(
            Reason.OUT_OF_RANGE,
            f"{metric.name}={value:g} outside {metric.minimum:g}..{metric.maximum:g} {metric.unit}",
        )
    if metric.integer and not value.is_integer():
        raise _ProblemError(
            Reason.BAD_VALUE, f"{metric.name}: expected a whole number, got {value:g}"
        )
    return value


def _observation(
    out: Decoded,
    obj: dict[str, Any],
    speaker: _Speaker,
    lookup: SensorLookup,
    clock: _Clock,
    where: str = "",
) -> None:
    prefix = f"{where}: " if where else ""
    device = obj.get("sensor")
    if device is None:  # nearly every device: it reports for itself
        device = speaker.device
    else:
        try:
            if not isinstance(device, str) or not device:
                raise _ProblemError(Reason.BAD_SHAPE, "`sensor` must be a sensor id")
            speaker.check(device)
        except _ProblemError as problem:
            out.rejections.append(Rejection(problem.reason, prefix + problem.detail))
            return
    family = lookup(device)
    if family is None:
        out.rejections.append(Rejection(Reason.UNKNOWN_SENSOR, f"{prefix}{device[:80]}"))
        return
    values = obj.get("values")
    if not isinstance(values, dict) or not values:
        out.rejections.append(
            Rejection(Reason.BAD_SHAPE, f"{prefix}`values` must be a non-empty object")
        )
        return
    try:
        if "ts" in obj:
            when, estimated = clock.parse(obj["ts"]), False
        else:
            when, estimated = clock.received_us, True
        seq = obj.get("seq")
        if seq is not None and (
            isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63
        ):
            raise _ProblemError(Reason.BAD_SHAPE, f"`seq` must be a whole number >= 0: {seq!r}")
    except _ProblemError as problem:
        out.rejections.append(Rejection(problem.reason, prefix + problem.detail))
        return
    if seq is not None:
        out.sequences.append((device, seq))
    for name, raw in values.items():
        metric = find_metric(family, name)
        if metric is None:
            out.rejections.append(
                Rejection(Reason.UNKNOWN_METRIC, f"{prefix}{family.value} has no {name[:64]!r}")
            )
            continue
        try:
            value = _value(metric, raw)
        except _ProblemError as problem:
            out.rejections.append(Rejection(problem.reason, f"{prefix}{device}: {problem.detail}"))
            continue
        out.readings.append(Reading(when, device, name, value, estimated))


def _senml(
    out: Decoded,
    records: list[dict[str, Any]],
    speaker: _Speaker,
    lookup: SensorLookup,
    clock: _Clock,
    known: NameCache,
) -> None:
    base_name, base_time, base_unit, base_value = "", 0.0, None, None
    # Names that did not resolve, once per pack (those that did are in `known`).
    refused: dict[str, _ProblemError] = {}
    outcomes = len(out.readings) + len(out.rejections)
    for index, record in enumerate(records):
        try:
            if "bn" in record:
                base_name = _text(record["bn"], "bn")
            if "bt" in record:
                base_time = _number(record["bt"], "bt")
            if "bu" in record:
                base_unit = _text(record["bu"], "bu")
            if "bv" in record:
                base_value = _number(record["bv"], "bv")
            reading = _senml_record(
                record,
                base_name,
                base_time,
                base_unit,
                base_value,
                speaker,
                lookup,
                clock,
                known,
                refused,
            )
        except _ProblemError as problem:
            out.rejections.append(Rejection(problem.reason, f"[{index}]: {problem.detail}"))
            continue
        if reading is not None:
            out.readings.append(reading)
    if len(out.readings) + len(out.rejections) == outcomes:
        # Only base fields, no record with a value: refuse the pack rather than drop it silently.
        out.rejections.append(Rejection(Reason.BAD_SHAPE, "SenML pack has no record with a value"))


def _resolve(name: str, speaker: _Speaker, lookup: SensorLookup) -> tuple[str, Metric]:
    sensor_id, _, metric_name = name.rpartition("/")
    if not sensor_id or not metric_name:
        raise _ProblemError(Reason.BAD_SHAPE, f"name must be SENSOR_ID/METRIC, got {name[:80]!r}")
    # Who may report comes before whether the sensor exists: a foreign name is refused as
    # such, and does not make the registry reload.
    speaker.check(sensor_id)
    family = lookup(sensor_id)
    if family is None:
        raise _ProblemError(Reason.UNKNOWN_SENSOR, sensor_id[:80])
    metric = find_metric(family, metric_name)
    if metric is None:
        raise _ProblemError(Reason.UNKNOWN_METRIC, f"{family.value} has no {metric_name[:64]!r}")
    return sensor_id, metric


_ABSENT: Any = object()


def _senml_record(
    record: dict[str, Any],
    base_name: str,
    base_time: float,
    base_unit: str | None,
    base_value: float | None,
    speaker: _Speaker,
    lookup: SensorLookup,
    clock: _Clock,
    known: NameCache,
    refused: dict[str, _ProblemError],
) -> Reading | None:
    # Gateways send thousands of records a second: each key is looked up once.
    get = record.get
    raw, boolean, suffix, when = (
        get("v", _ABSENT),
        get("vb", _ABSENT),
        get("n", ""),
        get("t", _ABSENT),
    )
    if raw is _ABSENT and boolean is _ABSENT:
        if "vs" in record or "vd" in record:
            raise _ProblemError(Reason.BAD_VALUE, "string and data values are not supported")
        if base_value is None:
            if "n" in record or "t" in record:
                raise _ProblemError(Reason.BAD_SHAPE, "record has no value")
            return None  # a record that only sets base fields
        raw = 0.0
    name = base_name + _text(suffix, "n")
    resolved = known.get(name)
    if resolved is None:
        if name in refused:
            raise refused[name]
        try:
            resolved = known[name] = _resolve(name, speaker, lookup)
        except _ProblemError as problem:
            refused[name] = problem
            raise
    sensor_id, metric = resolved
    if sensor_id != speaker.device and sensor_id not in speaker.others:
        # Resolved for another device earlier (the cache is shared): refuse it for this one.
        speaker.check(sensor_id)
    unit = base_unit if (unit := get("u", _ABSENT)) is _ABSENT else _text(unit, "u")
    if unit is not None and unit != metric.unit:
        raise _ProblemError(
            Reason.UNIT_MISMATCH, f"{metric.name}: unit {unit[:20]!r}, expected {metric.unit!r}"
        )
    if boolean is not _ABSENT:
        if not isinstance(boolean, bool):
            raise _ProblemError(Reason.BAD_VALUE, f"{metric.name}: vb must be true or false")
        raw = boolean
    elif base_value is not None:
        raw = base_value + _number(raw, "v")
    value = _value(metric, raw)
    if when is not _ABSENT or base_time:
        when = base_time + (0.0 if when is _ABSENT else _number(when, "t"))
        if abs(when) < SENML_RELATIVE_LIMIT:
            stamp = clock.check(clock.received_us + round(when * 1_000_000))
        else:
            stamp = clock.epoch(when)
        return Reading(stamp, sensor_id, metric.name, value, False)
    return Reading(clock.received_us, sensor_id, metric.name, value, True)


def _text(raw: Any, key: str) -> str:
    if not isinstance(raw, str):
        raise _ProblemError(Reason.BAD_SHAPE, f"{key} must be a string")
    return raw


def _number(raw: Any, key: str) -> float:
    if type(raw) is float:
        if math.isfinite(raw):
            return raw
    elif isinstance(raw, bool) or not isinstance(raw, int):
        raise _ProblemError(Reason.BAD_SHAPE, f"{key} must be a number")
    try:
        value = float(raw)
    except OverflowError:
        raise _ProblemError(Reason.NON_FINITE, f"{key} overflows") from None
    if not math.isfinite(value):
        raise _ProblemError(Reason.NON_FINITE, f"{key} is not finite")
    return value


def _summarise(rejections: list[Rejection]) -> list[Rejection]:
    """One rejection per reason, its detail listing the first few problems."""
    by_reason: dict[Reason, list[str]] = {}
    for rejection in rejections:
        by_reason.setdefault(rejection.reason, []).append(rejection.detail)
    summary = []
    for reason, details in by_reason.items():
        text = "; ".join(details[:MAX_DETAILS])
        if len(details) > MAX_DETAILS:
            text += f"; and {len(details) - MAX_DETAILS} more"
        summary.append(Rejection(reason, text[:2000]))
    return summary


def iter_reasons() -> Iterator[str]:
    """Every reason code, for metrics and docs."""
    return (reason.value for reason in Reason)
