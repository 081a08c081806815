"""Fault injection: what goes wrong with real devices and networks, each at a chosen rate.

Every injected fault is written to the manifest. Malformed and out-of-range payloads are
expected to be rejected; duplicated, out-of-order and late readings are valid readings and are
recorded under their true key; clock skew shifts a device's timestamps (the skewed time is what
the device reports, so it is the key); silent devices drop readings, or buffer them and flush a
burst when they come back with ``burst_after_reconnect``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from pantau.catalogue import Family, metrics_of
from simulators.fleet import Observation
from simulators.signals import sensor_rng

# Ahead-of-time skew stays within half of ingest's default future allowance (300 s), so skewed
# readings remain valid; larger settings skew clocks behind.
MAX_AHEAD_SKEW_S = 150.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultConfig:
    """Rates are probabilities per message (or per sensor and hour for ``silent``)."""

    malformed: float = 0.0
    duplicates: float = 0.0
    out_of_order: float = 0.0
    late: float = 0.0
    clock_skew_s: float = 0.0
    silent: float = 0.0
    burst_after_reconnect: bool = False
    out_of_range: float = 0.0

    def __post_init__(self) -> None:
        for name in ("malformed", "duplicates", "out_of_order", "late", "silent", "out_of_range"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be a rate between 0 and 1")
        if self.clock_skew_s < 0:
            raise ValueError("--clock-skew-s must be 0 or more")

    @property
    def any(self) -> bool:
        return bool(
            self.malformed
            or self.duplicates
            or self.out_of_order
            or self.late
            or self.clock_skew_s
            or self.silent
            or self.out_of_range
        )


MALFORMED_SAMPLES = (
    b'{"ts": 1764300000, "values": {"water_level": 1.2',
    b"\x00\x01\x02 garbage from a flaky serial line",
    b'{"values": "not an object"}',
    b"[]",
    b'{"ts": "yesterday", "values": {"noise": 40}}',
)


class FaultInjector:
    """Decides, per sensor and observation, which faults happen; deterministic per seed."""

    def __init__(self, config: FaultConfig, *, seed: int) -> None:
        self.config = config
        self.seed = seed
        self._rngs: dict[str, np.random.Generator] = {}
        self._skews: dict[str, float] = {}
        self._silent_until: dict[str, float] = {}
        self._silent_checked: dict[str, float] = {}

    def rng(self, sensor_id: str) -> np.random.Generator:
        rng = self._rngs.get(sensor_id)
        if rng is None:
            rng = self._rngs[sensor_id] = sensor_rng(self.seed, sensor_id, 5)
        return rng

    def happens(self, sensor_id: str, rate: float) -> bool:
        return rate > 0 and float(self.rng(sensor_id).random()) < rate

    def skew_s(self, sensor_id: str) -> float:
        """This device's clock error (constant for the run)."""
        limit = self.config.clock_skew_s
        if not limit:
            return 0.0
        if sensor_id not in self._skews:
            skew = float(self.rng(sensor_id).uniform(-limit, limit))
            self._skews[sensor_id] = -abs(skew) if skew > MAX_AHEAD_SKEW_S else skew
        return self._skews[sensor_id]

    def silent(self, sensor_id: str, t: float) -> bool:
        """Whether the device is out of reach at ``t`` (random outages of 10 to 60 minutes)."""
        rate = self.config.silent
        if not rate:
            return False
        if t < self._silent_until.get(sensor_id, 0.0):
            return True
        last = self._silent_checked.get(sensor_id)
        self._silent_checked[sensor_id] = t
        if last is None:
            return False
        # ``rate`` per hour, whatever the reporting interval.
        chance = 1.0 - (1.0 - rate) ** ((t - last) / 3_600.0)
        if float(self.rng(sensor_id).random()) < chance:
            self._silent_until[sensor_id] = t + float(self.rng(sensor_id).uniform(600, 3_600))
            return True
        return False

    def late_by(self, sensor_id: str) -> int:
        """How many later observations a late one is held behind."""
        return int(self.rng(sensor_id).integers(3, 11))

    def malformed_payload(self, sensor_id: str) -> bytes:
        index = int(self.rng(sensor_id).integers(len(MALFORMED_SAMPLES)))
        return MALFORMED_SAMPLES[index]

    def out_of_range_payload(self, observation: Observation, family: Family, ts: str) -> bytes:
        """One observation with one value outside its metric's range (rejected as a whole)."""
        metrics = list(metrics_of(family).values())
        metric = metrics[int(self.rng(observation.sensor_id).integers(len(metrics)))]
        value = metric.maximum + max(1.0, abs(metric.maximum)) * 2
        return json.dumps({"ts": ts, "values": {metric.name: value}}).encode()
