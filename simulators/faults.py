"""Fault injection: what goes wrong with real devices and networks, each at a chosen rate.

Every injected fault is written to the manifest. Malformed and out-of-range payloads are
expected to be rejected; duplicated, out-of-order and late readings are valid readings and are
recorded under their true key; clock skew shifts a device's timestamps (the skewed time is what
the device reports, so it is the key); silent devices drop readings, or buffer them and flush a
burst when they come back with ``burst_after_reconnect``. Flood gauges also glitch as real river
gauges do: a spike (one or two wild water levels, then back: debris, splash, a loose cable) is
a valid reading of a wrong value, and a dropout loses one to five readings in a row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from pantau.catalogue import Family, metrics_of
from pantau.city import Thresholds
from simulators.fleet import Observation
from simulators.signals import sensor_rng

# Ahead-of-time skew stays within half of ingest's default future allowance (300 s), so skewed
# readings remain valid; larger settings skew clocks behind.
MAX_AHEAD_SKEW_S = 150.0
# Spikes: most read high (the issue seen in the field: Awas plus up to a metre for a minute),
# the rest below the gauge zero (a pressure sensor whose cable came loose).
SPIKE_UP_SHARE = 0.8
SPIKE_ABOVE_AWAS_M = (0.3, 1.0)
SPIKE_BELOW_ZERO_M = (0.1, 0.5)
DROPOUT_READINGS = (1, 5)


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
    spikes: float = 0.0
    dropouts: float = 0.0

    def __post_init__(self) -> None:
        rates = ("malformed", "duplicates", "out_of_order", "late", "silent", "out_of_range")
        for name in (*rates, "spikes", "dropouts"):
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
            or self.spikes
            or self.dropouts
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
        # Flood-gauge glitches in progress: readings still to lose, spikes still to send.
        self._dropping: dict[str, int] = {}
        self._spiking: dict[str, tuple[int, float]] = {}

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

    def glitch(
        self, obs: Observation, thresholds: Thresholds
    ) -> tuple[Observation | None, tuple[str, bytes] | None]:
        """A flood gauge's observation through dropouts (None: lost) and spikes (a wild water
        level), with the fault that starts here, if any: (kind, note for the manifest)."""
        sensor_id, config = obs.sensor_id, self.config
        if self._dropping.get(sensor_id):
            self._dropping[sensor_id] -= 1
            return None, None
        if self.happens(sensor_id, config.dropouts):
            self._dropping[sensor_id] = self.dropout_readings(sensor_id) - 1
            return None, ("dropout", str(obs.t).encode())
        fault = None
        spike = self._spiking.pop(sensor_id, None)
        if spike is None and self.happens(sensor_id, config.spikes):
            spike = self.spike(sensor_id, thresholds)
            note = {"t": obs.t, "readings": spike[0], "water_level": spike[1]}
            fault = ("spike", json.dumps(note).encode())
        if spike is None or "water_level" not in obs.values:
            return obs, fault
        left, value = spike
        if left > 1:
            self._spiking[sensor_id] = (left - 1, value)
        return Observation(sensor_id, obs.t, {**obs.values, "water_level": value}), fault

    def spike(self, sensor_id: str, thresholds: Thresholds) -> tuple[int, float]:
        """A spike on a flood gauge: how many readings it lasts (1 or 2) and the value read."""
        rng = self.rng(sensor_id)
        readings = int(rng.integers(1, 3))
        if float(rng.random()) < SPIKE_UP_SHARE:
            value = thresholds.awas + float(rng.uniform(*SPIKE_ABOVE_AWAS_M))
        else:
            value = -float(rng.uniform(*SPIKE_BELOW_ZERO_M))
        water = metrics_of(Family.FLOOD_GAUGE)["water_level"]
        return readings, round(min(max(value, water.minimum), water.maximum), 3)

    def dropout_readings(self, sensor_id: str) -> int:
        """How many readings in a row a dropout loses."""
        low, high = DROPOUT_READINGS
        return int(self.rng(sensor_id).integers(low, high + 1))
