"""`pantau bench decode`: what ingest's decoding thread costs per reading, on its own.

Ingest decodes every payload and encodes its readings as COPY rows on one thread; in a drain of
gateway packs that thread is the pipeline's critical path. This measures the same two stages,
in this process, with no broker or database: payloads shaped like the load simulator's (one
observation per message, and SenML packs of 50 records across the city's sensors from a gateway
registered for all of them), decoded against the city's registry, then encoded for COPY.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from pantau.catalogue import Family, metrics_of
from pantau.city import load_city
from pantau.db.store import StagedReadings
from pantau.payload import DecodeLimits, NameCache, decode
from pantau.topics import uplink_topic

PACK_SIZE = 50
_ROOT = "bench"
_GATEWAY = "gw-bench"


@dataclass(frozen=True, kw_only=True)
class DecodeRow:
    """One payload shape's result: the best of the repeats."""

    shape: str
    messages: int
    readings: int
    readings_per_s: float

    @property
    def us_per_reading(self) -> float:
        return 1e6 / self.readings_per_s


def _payloads(
    city_file: Path, *, shape: str, messages: int, now: datetime
) -> tuple[list[tuple[str, bytes]], dict[str, Family]]:
    sensors = [(s.id, s.family) for s in load_city(city_file).sensors]
    registry = dict(sensors)
    names = {family: list(metrics_of(family).items()) for family in Family}
    start_us = int((now - timedelta(minutes=10)).timestamp() * 1_000_000)
    out: list[tuple[str, bytes]] = []
    cursor = 0
    for number in range(messages):
        if shape == "senml":
            records: list[dict[str, object]] = []
            previous = None
            for _ in range(PACK_SIZE):
                sensor, family = sensors[cursor % len(sensors)]
                name, metric = names[family][(cursor // len(sensors)) % len(names[family])]
                cursor += 1
                record: dict[str, object] = {
                    "n": name,
                    "u": metric.unit,
                    "v": float(metric.minimum) + 0.5 * (not metric.integer),
                    "t": (start_us + cursor) / 1_000_000,
                }
                if sensor != previous:
                    record = {"bn": f"{sensor}/", **record}
                    previous = sensor
                records.append(record)
            out.append((uplink_topic(_ROOT, _GATEWAY), orjson.dumps(records)))
        else:
            sensor, family = sensors[cursor % len(sensors)]
            cursor += 1
            name, metric = names[family][0]
            ts = datetime.fromtimestamp((start_us + number) / 1_000_000, tz=UTC).isoformat()
            body = {"ts": ts, "seq": number, "values": {name: float(metric.minimum)}}
            out.append((uplink_topic(_ROOT, sensor), orjson.dumps(body)))
    return out, registry


def measure(
    city_file: Path,
    *,
    shape: str,
    messages: int,
    repeats: int = 5,
    progress: Callable[[], None] | None = None,
) -> DecodeRow:
    """Decode and COPY-encode ``messages`` payloads of ``shape`` (single or senml), ``repeats``
    times; the fastest repeat counts (the others only met a busier machine)."""
    now = datetime.now(UTC)
    payloads, registry = _payloads(city_file, shape=shape, messages=messages, now=now)
    gateways = {_GATEWAY: frozenset(registry)}
    limits = DecodeLimits()
    best, readings = float("inf"), 0
    for _ in range(repeats):
        names: NameCache = {}  # as ingest's decoder keeps it: filled by the first messages
        staged = StagedReadings()
        started = time.perf_counter()
        for topic, payload in payloads:
            decoded = decode(
                payload,
                topic=topic,
                topic_root=_ROOT,
                sensors=registry,
                received_at=now,
                limits=limits,
                names=names,
                gateways=gateways,
            )
            if decoded.rejections:
                raise RuntimeError(f"bench payload refused: {decoded.rejections[0]}")
            staged.add(decoded.readings)
        best = min(best, time.perf_counter() - started)
        readings = staged.count
        if progress is not None:
            progress()
    return DecodeRow(
        shape=shape, messages=messages, readings=readings, readings_per_s=readings / best
    )
