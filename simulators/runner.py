"""A simulator run: the fleet's observations through faults and payload shaping to the broker.

Pipeline per observation: the device stage (outages, clock skew, out-of-order and late
delivery), the shaping stage (single observations, per-sensor lists, or gateway SenML packs),
then publishing, where message-level faults (duplicates, malformed and out-of-range payloads)
are added. Everything published is written to the manifest as it goes.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pantau.catalogue import Family, Metric, metrics_of
from pantau.city import City
from pantau.settings import MqttSettings
from simulators.clock import SimClock
from simulators.config import WIB, RunConfig
from simulators.faults import FaultInjector
from simulators.fleet import Fleet, Observation
from simulators.manifest import ManifestWriter
from simulators.publisher import PublisherPool, run_token
from simulators.scenarios import Scenario, StressScenario, get_scenario

# A returning device sends its backlog in lists of at most this many observations.
BURST_CHUNK = 50
PROGRESS_EVERY_S = 0.2


@dataclass(slots=True)
class RunStats:
    """Counters of a run, updated as it goes (the progress display reads them)."""

    scenario: str
    sim_start: float
    sim_end: float | None
    sim_now: float = 0.0
    messages: int = 0
    readings: int = 0
    observations: int = 0
    errors: int = 0
    unacked: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    wall_started: float = field(default_factory=time.monotonic)
    wall_elapsed_s: float = 0.0
    last_error: str | None = None

    @property
    def rate_per_s(self) -> float:
        elapsed = time.monotonic() - self.wall_started
        return self.messages / elapsed if elapsed > 0 else 0.0


@dataclass(slots=True)
class _Held:
    countdown: int  # newer observations still to go out before this one
    obs: Observation


@dataclass(slots=True)
class _Message:
    device: str  # the account that publishes it (sensor or gateway)
    payload: bytes
    readings: list[tuple[str, str, int, float]]  # sensor, metric, time (µs), value
    sensor_id: str  # a sensor the message speaks for


def _us(t: float) -> int:
    return round(t * 1_000) * 1_000


def _iso(t: float) -> str:
    """Device-style RFC 3339 time in WIB with milliseconds."""
    return datetime.fromtimestamp(_us(t) / 1_000_000, tz=WIB).isoformat(timespec="milliseconds")


def _number(metric: Metric, value: float) -> float | int:
    return int(value) if metric.integer else value


class Simulation:
    """One run of a scenario against a broker."""

    def __init__(
        self,
        *,
        city: City,
        mqtt: MqttSettings,
        config: RunConfig,
        on_progress: Callable[[RunStats], None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.city = city
        self.mqtt = mqtt
        self.config = config
        self.on_progress = on_progress
        self.stop = threading.Event()
        self.scenario: Scenario = get_scenario(config.scenario)
        if isinstance(self.scenario, StressScenario):
            self.scenario.fastest_interval_s = config.fastest_interval_s
        self.fleet = Fleet(city, seed=config.seed)
        self.families = {s.id: s.family for s in city.sensors}
        # SenML packs go out through the sensor's gateway in the city file; a sensor without
        # one sends its own packs (a device may always report for itself).
        self.gateway = {s.id: city.gateway_of(s.id) or s.id for s in city.sensors}
        self.start, self.end, self.clock = self._plan(wall)
        self.scenario.apply(self.fleet, self.start)
        self.injector = FaultInjector(config.faults, seed=config.seed)
        self.stats = RunStats(scenario=self.scenario.name, sim_start=self.start, sim_end=self.end)
        self._seq: Counter[str] = Counter()
        self._lists: dict[str, list[Observation]] = defaultdict(list)
        self._packs: dict[str, list[Observation]] = defaultdict(list)
        self._backlog: dict[str, list[Observation]] = defaultdict(list)
        self._held_out_of_order: dict[str, Observation] = {}
        self._held_late: dict[str, deque[_Held]] = defaultdict(deque)
        self._silent_now: set[str] = set()
        self._skew_noted: set[str] = set()
        self._pool: PublisherPool | None = None
        self._manifest: ManifestWriter | None = None
        self._last_progress = 0.0

    def _plan(self, wall: Callable[[], float]) -> tuple[float, float | None, SimClock]:
        config = self.config
        now = wall()
        length = config.duration or config.backfill or self.scenario.duration(self.fleet)
        length_s = None if length is None else length.total_seconds()
        requested = None if config.start is None else config.start.timestamp()
        if config.backfill is not None:
            assert length_s is not None
            start = requested if requested is not None else now - config.backfill.total_seconds()
            end = min(start + length_s, now)  # backfill writes the past only
            return start, end, SimClock(start=start, backfill=True, wall=wall)
        if config.speed != 1.0 and requested is None:
            # Accelerated: start in the past so that simulated time catches up with now at the
            # end (or after a day when the run has no end), then carries on in real time.
            start = self.scenario.preferred_start(now, length_s or 86_400.0)
        else:
            start = requested if requested is not None else now
        stop = None if length_s is None else start + length_s
        return start, stop, SimClock(start=start, speed=config.speed, wall=wall)

    # -------------------------------------------------------------------------- running

    def run(self) -> RunStats:
        """Publish until the scenario ends, ``max_messages`` is reached or ``stop`` is set."""
        config = self.config
        token = run_token()
        self._pool = PublisherPool(
            mqtt_settings=self.mqtt,
            client_prefix=f"pantau-sim-{token}",
            credentials=config.credentials,
        )
        meta: dict[str, object] = {
            "scenario": self.scenario.name,
            "shape": config.shape,
            "speed": config.speed,
            "backfill_s": None if config.backfill is None else config.backfill.total_seconds(),
            "start": datetime.fromtimestamp(self.start, UTC).isoformat(),
        }
        if config.manifest is not None:
            self._manifest = ManifestWriter(
                config.manifest, topic_root=self.mqtt.topic_root, seed=config.seed, meta=meta
            )
            self._manifest.open()
        completed = False
        try:
            # Connect up front so an unreachable broker is reported before anything else.
            if config.credentials is None:
                self._pool.for_device("shared")
            try:
                self._loop()
            except KeyboardInterrupt:
                self.stop.set()
            self._finish()
            completed = True
        finally:
            self._pool.close()
            if self._manifest is not None:
                self._manifest.close(complete=completed)
            self.stats.wall_elapsed_s = time.monotonic() - self.stats.wall_started
        return self.stats

    def _loop(self) -> None:
        limit = self.config.max_messages
        for t, sensor_id in self.fleet.schedule(self.start, self.end):
            while True:
                delay = self.clock.delay_s(t)
                if delay <= 0 or self.stop.is_set():
                    break
                self._progress(force=True)
                self.stop.wait(min(delay, PROGRESS_EVERY_S))
            if self.stop.is_set():
                return
            self.stats.sim_now = t
            self._device(self.fleet.observe(sensor_id, t))
            self._progress()
            if limit is not None and self.stats.messages >= limit:
                return

    def _progress(self, *, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            assert self._pool is not None
            self.stats.errors = self._pool.errors
            self.stats.last_error = self._pool.last_error()
            self.on_progress(self.stats)

    def _finish(self) -> None:
        for sensor_id, held in list(self._held_out_of_order.items()):
            self._shape(held)
            del self._held_out_of_order[sensor_id]
        for queue in self._held_late.values():
            while queue:
                self._shape(queue.popleft().obs)
        for sensor_id in list(self._backlog):
            self._flush_backlog(sensor_id)
        for sensor_id in list(self._lists):
            self._flush_list(sensor_id)
        for gateway in list(self._packs):
            self._flush_pack(gateway)
        assert self._pool is not None
        acked = self._pool.flush(timeout_s=60.0)
        unacked = 0 if acked else sum(p.outstanding for p in self._pool.publishers)
        self.stats.unacked = unacked
        self.stats.errors = self._pool.errors + unacked
        self.stats.last_error = self._pool.last_error()
        if self.on_progress is not None:
            self.on_progress(self.stats)

    # ---------------------------------------------------------------------- device stage

    def _device(self, obs: Observation) -> None:
        self.stats.observations += 1
        if self._silenced(obs):
            return
        self._silent_now.discard(obs.sensor_id)
        if self._backlog.get(obs.sensor_id):
            self._flush_backlog(obs.sensor_id)
        changed = self._glitched(obs)
        if changed is not None:
            self._order(self._skewed(changed))

    def _silenced(self, obs: Observation) -> bool:
        """Whether the device is silent now (its observation kept for later, or lost)."""
        sensor_id = obs.sensor_id
        outage = self.scenario.silent(sensor_id, obs.t)
        if not (outage or self.injector.silent(sensor_id, obs.t)):
            return False
        if sensor_id not in self._silent_now:
            self._silent_now.add(sensor_id)
            self._fault("silent", sensor_id, _iso(obs.t).encode(), expect_rejected=False)
        if outage or self.config.faults.burst_after_reconnect:
            self._backlog[sensor_id].append(obs)
        return True

    def _glitched(self, obs: Observation) -> Observation | None:
        """A flood gauge's observation with a spike or a dropout injected (None: dropped)."""
        faults = self.config.faults
        sensor_id = obs.sensor_id
        if self.families[sensor_id] is not Family.FLOOD_GAUGE or not (
            faults.spikes or faults.dropouts
        ):
            return obs
        thresholds = self.city.sensor(sensor_id).thresholds
        assert thresholds is not None  # every flood gauge has them
        glitched, fault = self.injector.glitch(obs, thresholds)
        if fault is not None:
            self._fault(fault[0], sensor_id, fault[1], expect_rejected=False)
        return glitched

    def _skewed(self, obs: Observation) -> Observation:
        """The observation as the device's skewed clock stamps it."""
        sensor_id = obs.sensor_id
        skew = self.injector.skew_s(sensor_id)
        if not skew:
            return obs
        if sensor_id not in self._skew_noted:
            self._skew_noted.add(sensor_id)
            note = json.dumps({"skew_s": round(skew, 3)}).encode()
            self._fault("clock_skew", sensor_id, note, expect_rejected=False)
        return Observation(sensor_id, round(obs.t + skew, 3), obs.values)

    def _order(self, obs: Observation) -> None:
        """Shape the observation, late or out of order where the faults say so."""
        sensor_id = obs.sensor_id
        injector = self.injector
        faults = self.config.faults
        # Late observations wait behind a few newer ones of the same sensor.
        ready = []
        queue = self._held_late[sensor_id]
        for held in queue:
            held.countdown -= 1
        while queue and queue[0].countdown <= 0:
            ready.append(queue.popleft().obs)
        if injector.happens(sensor_id, faults.late):
            queue.append(_Held(injector.late_by(sensor_id), obs))
            self._fault("late", sensor_id, _iso(obs.t).encode(), expect_rejected=False)
        elif sensor_id in self._held_out_of_order:
            self._shape(obs)
            self._shape(self._held_out_of_order.pop(sensor_id))
        elif injector.happens(sensor_id, faults.out_of_order):
            self._held_out_of_order[sensor_id] = obs
            self._fault("out_of_order", sensor_id, _iso(obs.t).encode(), expect_rejected=False)
        else:
            self._shape(obs)
        for late in ready:
            self._shape(late)

    def _flush_backlog(self, sensor_id: str) -> None:
        backlog = self._backlog.pop(sensor_id, [])
        if not backlog:
            return
        self._fault("burst", sensor_id, str(len(backlog)).encode(), expect_rejected=False)
        if self.config.shape == "senml":
            for obs in backlog:
                self._to_pack(obs, force=False)
            self._flush_pack(self.gateway[sensor_id])
            return
        for offset in range(0, len(backlog), BURST_CHUNK):
            self._send_list(sensor_id, backlog[offset : offset + BURST_CHUNK])

    # ---------------------------------------------------------------------- shaping stage

    def _shape(self, obs: Observation) -> None:
        shape = self.config.shape
        if shape == "single":
            self._send_single(obs)
        elif shape == "list":
            self._lists[obs.sensor_id].append(obs)
            if len(self._lists[obs.sensor_id]) >= self.config.list_size:
                self._flush_list(obs.sensor_id)
        else:
            self._to_pack(obs, force=True)

    def _observation_json(
        self, obs: Observation
    ) -> tuple[dict[str, object], list[tuple[str, str, int, float]]]:
        metrics = metrics_of(self.families[obs.sensor_id])
        self._seq[obs.sensor_id] += 1
        values = {name: _number(metrics[name], v) for name, v in obs.values.items()}
        us = _us(obs.t)
        readings = [(obs.sensor_id, name, us, float(v)) for name, v in obs.values.items()]
        body = {"ts": _iso(obs.t), "seq": self._seq[obs.sensor_id], "values": values}
        return body, readings

    def _send_single(self, obs: Observation) -> None:
        body, readings = self._observation_json(obs)
        self._publish(_Message(obs.sensor_id, json.dumps(body).encode(), readings, obs.sensor_id))

    def _send_list(self, sensor_id: str, observations: list[Observation]) -> None:
        bodies, readings = [], []
        for obs in observations:
            body, found = self._observation_json(obs)
            bodies.append(body)
            readings.extend(found)
        self._publish(_Message(sensor_id, json.dumps(bodies).encode(), readings, sensor_id))

    def _flush_list(self, sensor_id: str) -> None:
        observations = self._lists.pop(sensor_id, [])
        if observations:
            self._send_list(sensor_id, observations)

    def _to_pack(self, obs: Observation, *, force: bool) -> None:
        gateway = self.gateway[obs.sensor_id]
        pack = self._packs[gateway]
        pack.append(obs)
        records = sum(len(o.values) for o in pack)
        if force and (
            records >= self.config.pack_size or obs.t - pack[0].t >= self.config.gateway_period_s
        ):
            self._flush_pack(gateway)

    def _flush_pack(self, gateway: str) -> None:
        pack = self._packs.pop(gateway, [])
        if not pack:
            return
        base = math.floor(min(o.t for o in pack))
        records: list[dict[str, object]] = []
        readings = []
        for obs in pack:
            metrics = metrics_of(self.families[obs.sensor_id])
            offset = round(_us(obs.t) / 1_000_000 - base, 3)
            first = True
            for name, value in obs.values.items():
                record: dict[str, object] = {}
                if first:
                    record["bn"] = f"{obs.sensor_id}/"
                    if not records:
                        record["bt"] = base
                    first = False
                record.update(n=name, u=metrics[name].unit, v=_number(metrics[name], value))
                record["t"] = offset
                records.append(record)
                readings.append((obs.sensor_id, name, _us(obs.t), float(value)))
        self._publish(_Message(gateway, json.dumps(records).encode(), readings, pack[0].sensor_id))

    # ------------------------------------------------------------------- publishing stage

    def _publish(self, message: _Message) -> None:
        assert self._pool is not None
        self._pool.publish(message.device, message.payload)
        self._record(message)
        faults = self.config.faults
        injector = self.injector
        sensor_id = message.sensor_id
        if injector.happens(message.device, faults.duplicates):
            # The device did not see the PUBACK and sends the same message again.
            self._pool.publish(message.device, message.payload)
            self._record(message)
            self._fault("duplicate", message.device, message.payload, expect_rejected=False)
        if injector.happens(message.device, faults.malformed):
            payload = injector.malformed_payload(sensor_id)
            self._pool.publish(sensor_id, payload)
            self.stats.messages += 1
            self._fault("malformed", sensor_id, payload, expect_rejected=True)
        if injector.happens(message.device, faults.out_of_range):
            t = message.readings[0][2] / 1_000_000 if message.readings else self.stats.sim_now
            # Rejected as a whole (its only value is out of range), so its time may repeat one.
            payload = injector.out_of_range_payload(
                Observation(sensor_id, t, {}), self.families[sensor_id], _iso(t)
            )
            self._pool.publish(sensor_id, payload)
            self.stats.messages += 1
            self._fault("out_of_range", sensor_id, payload, expect_rejected=True)

    def _record(self, message: _Message) -> None:
        self.stats.messages += 1
        self.stats.readings += len(message.readings)
        if self._manifest is not None:
            for sensor_id, metric, us, value in message.readings:
                self._manifest.valid_us(sensor_id, metric, us, value)

    def _fault(self, kind: str, device: str, payload: bytes, *, expect_rejected: bool) -> None:
        self.stats.faults[kind] += 1
        if self._manifest is not None:
            self._manifest.fault(
                kind,
                topic=self.mqtt.uplink_topic(device),
                payload=payload,
                expect_rejected=expect_rejected,
            )


def simulated_span(stats: RunStats) -> timedelta:
    """How much simulated time a run has covered so far."""
    return timedelta(seconds=round(max(0.0, stats.sim_now - stats.sim_start)))
