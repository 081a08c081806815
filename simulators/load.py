"""Load mode: publish a known number of messages from several processes, as fast as asked.

Each process owns a disjoint subset of the city's sensors and its own MQTT connection, so
sensor timestamps never collide between processes. A reading's time is the wall clock when it
is published (strictly increasing per sensor), which makes commit time minus reading time the
publish-to-commit latency. With a manifest, every process writes its own part.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import numpy as np
import orjson

from pantau.catalogue import Metric, metrics_of
from pantau.city import City
from pantau.settings import MqttSettings
from pantau.topics import uplink_topic
from simulators.config import SHAPES, Shape
from simulators.manifest import ManifestWriter
from simulators.publisher import PublishError, run_token
from simulators.wire import WirePublisher

# Values cycle through this many pre-drawn numbers per metric: drawing is not what we measure.
_POOL = 4096
# How far ahead of its schedule a paced publisher may run before it sleeps.
_PACE_SLACK_S = 0.001


class LoadError(RuntimeError):
    """The load run could not start or a worker failed; the message says why."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load run published."""

    messages: int
    readings: int
    elapsed_s: float
    errors: int
    manifests: list[Path]

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> str:
        data = asdict(self)
        data["manifests"] = [str(p) for p in self.manifests]
        data["messages_per_s"] = round(self.messages_per_s, 1)
        data["readings_per_s"] = round(self.readings_per_s, 1)
        return json.dumps(data)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    index: int
    mqtt: MqttSettings
    client_id: str
    sensors: list[tuple[str, str]]  # (sensor id, family)
    messages: int
    rate_per_s: float | None
    shape: Shape
    readings_per_message: int
    qos: int
    manifest: Path | None
    seed: int
    ack_timeout_s: float


@dataclass(frozen=True, slots=True)
class _Outcome:
    index: int
    messages: int
    readings: int
    errors: int
    started: float
    finished: float
    failure: str | None = None


def load_gateway_id(index: int) -> str:
    """The gateway whose uplink load process ``index`` sends its SenML packs on.

    It is no device of the city: whoever runs the load registers it as a gateway of the
    sensors (``pantau devices link``), or its packs are refused as ``foreign_sensor``.
    """
    return f"gw-load-{index}"


def run_load(
    *,
    mqtt: MqttSettings,
    city: City,
    messages: int,
    processes: int = 2,
    rate_per_s: float | None = None,
    shape: Shape = "single",
    readings_per_message: int = 1,
    qos: int = 1,
    manifest: Path | None = None,
    seed: int = 0,
    progress: bool = False,
    ack_timeout_s: float = 120.0,
) -> LoadResult:
    """Publish ``messages`` messages from ``processes`` processes; see the module docstring.

    ``single`` sends one observation per message carrying ``readings_per_message`` of the
    sensor's metrics (at most all of them); ``list`` sends ``readings_per_message`` one-metric
    observations of one sensor; ``senml`` sends gateway packs of ``readings_per_message``
    records across the process's sensors. Returns once every PUBACK has arrived (or
    ``ack_timeout_s`` passed: the unacknowledged count as errors).
    """
    if messages < 0:
        raise LoadError("messages must be 0 or more")
    if processes < 1:
        raise LoadError("processes must be at least 1")
    if shape not in SHAPES:
        raise LoadError(f"shape must be one of {', '.join(SHAPES)}")
    if readings_per_message < 1:
        raise LoadError("readings_per_message must be at least 1")
    if rate_per_s is not None and rate_per_s <= 0:
        raise LoadError("rate_per_s must be positive (or None for as fast as possible)")
    if qos not in (0, 1):
        raise LoadError("qos must be 0 or 1")
    sensors = sorted((s.id, s.family.value) for s in city.sensors)
    if len(sensors) < processes:
        raise LoadError(
            f"{processes} processes need at least as many sensors; city has {len(sensors)}"
        )
    token = run_token()
    jobs = []
    for index in range(processes):
        share = messages // processes + (1 if index < messages % processes else 0)
        jobs.append(
            _Job(
                index=index,
                mqtt=mqtt,
                client_id=f"pantau-load-{token}-{index}",
                sensors=sensors[index::processes],
                messages=share,
                rate_per_s=None if rate_per_s is None else rate_per_s / processes,
                shape=shape,
                readings_per_message=readings_per_message,
                qos=qos,
                manifest=None if manifest is None else Path(f"{manifest}.{index}"),
                seed=seed,
                ack_timeout_s=ack_timeout_s,
            )
        )
    outcomes = _run_workers(jobs, progress=progress, total=messages)
    failures = [o.failure for o in outcomes if o.failure]
    if failures:
        raise LoadError("; ".join(sorted(set(failures))))
    started = min(o.started for o in outcomes)
    finished = max(o.finished for o in outcomes)
    return LoadResult(
        messages=sum(o.messages for o in outcomes),
        readings=sum(o.readings for o in outcomes),
        elapsed_s=max(finished - started, 1e-9),
        errors=sum(o.errors for o in outcomes),
        manifests=[j.manifest for j in jobs if j.manifest is not None],
    )


def _run_workers(jobs: list[_Job], *, progress: bool, total: int) -> list[_Outcome]:
    # Spawn, not fork: the parent may run threads (paho, rich), which fork does not copy safely.
    ctx = multiprocessing.get_context("spawn")
    counter: Synchronized[int] = ctx.Value("q", 0)
    results: multiprocessing.Queue[_Outcome] = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(job, counter, results), name=f"pantau-load-{job.index}")
        for job in jobs
    ]
    for worker in workers:
        worker.start()
    outcomes: list[_Outcome] = []
    try:
        if progress:
            _show_progress(workers, counter, results, outcomes, total)
        while len(outcomes) < len(jobs):
            try:
                outcomes.append(results.get(timeout=0.5))
            except queue.Empty:
                dead = [w for w in workers if not w.is_alive() and w.exitcode not in (0, None)]
                if dead and len(outcomes) < len(jobs):
                    # A worker that died without reporting (killed, out of memory).
                    _drain(results, outcomes)
                    if len(outcomes) < len(jobs):
                        codes = ", ".join(f"{w.name}: exit {w.exitcode}" for w in dead)
                        raise LoadError(f"load worker died: {codes}") from None
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
                worker.join()
    return outcomes


def _drain(results: multiprocessing.Queue[_Outcome], outcomes: list[_Outcome]) -> None:
    while True:
        try:
            outcomes.append(results.get(timeout=0.2))
        except queue.Empty:
            return


def _show_progress(
    workers: Sequence[multiprocessing.process.BaseProcess],
    counter: Synchronized[int],
    results: multiprocessing.Queue[_Outcome],
    outcomes: list[_Outcome],
    total: int,
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("load"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9.0f} msg/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("load", total=total, rate=0.0)
        began = time.monotonic()
        while len(outcomes) < len(workers):
            try:
                outcomes.append(results.get(timeout=0.25))
            except queue.Empty:
                if not any(w.is_alive() for w in workers):
                    break
            done = counter.value
            bar.update(task, completed=done, rate=done / max(time.monotonic() - began, 1e-9))
        bar.update(task, completed=counter.value)


def _value_pool(metric: Metric, rng: np.random.Generator) -> list[float]:
    """Plausible in-range values (integers for counted metrics), rounded like a device would."""
    span = metric.maximum - metric.minimum
    low, high = metric.minimum + 0.05 * span, metric.minimum + 0.5 * span
    raw = rng.uniform(low, high, _POOL)
    if metric.integer:
        return [float(v) for v in np.rint(raw)]
    return [float(v) for v in np.round(raw, 3)]


def _worker(
    job: _Job, counter: Synchronized[int], results: multiprocessing.Queue[_Outcome]
) -> None:
    started = time.time()
    try:
        messages, readings, errors, started = _publish_share(job, counter)
    except (PublishError, OSError) as error:
        results.put(_Outcome(job.index, 0, 0, 0, started, time.time(), failure=str(error)))
        return
    results.put(_Outcome(job.index, messages, readings, errors, started, time.time()))


class _Composer:
    """The messages of one load share, in the job's shape: each sensor's readings from its
    metrics' pre-drawn values, their times increasing per sensor, each one written to the
    manifest (when there is one)."""

    def __init__(self, job: _Job, writer: ManifestWriter | None) -> None:
        rng = np.random.default_rng([job.seed, job.index])
        self._job = job
        self._writer = writer
        self._names = {
            family: list(metrics_of(family)) for family in {family for _, family in job.sensors}
        }
        self._pools = {
            (family, name): _value_pool(metric, rng)
            for family in self._names
            for name, metric in metrics_of(family).items()
        }
        self._units = {(f, n): m.unit for f in self._names for n, m in metrics_of(f).items()}
        root = job.mqtt.topic_root
        self._last_us = {sensor: 0 for sensor, _ in job.sensors}
        self._draw = 0
        self._cursor = 0  # round robin over sensors (and, for SenML, their metrics)
        self._sequence: dict[str, int] = {}  # each device numbers its own messages (`seq`)
        self._gateway_topic = uplink_topic(root, load_gateway_id(job.index))
        self._sensor_topics = {sensor: uplink_topic(root, sensor) for sensor, _ in job.sensors}

    def next(self) -> tuple[str, bytes, int]:
        """The next message: its topic, its body and how many readings it carries."""
        job = self._job
        if job.shape == "senml":
            return self._pack()
        sensor, family = job.sensors[self._cursor % len(job.sensors)]
        self._cursor += 1
        if job.shape == "single":
            return self._single(sensor, family)
        return self._series(sensor, family)

    def _stamp(self, sensor: str) -> int:
        us = max(time.time_ns() // 1000, self._last_us[sensor] + 1)
        self._last_us[sensor] = us
        return us

    def _value(self, family: str, name: str) -> float:
        value = self._pools[(family, name)][self._draw % _POOL]
        self._draw += 1
        return value

    def _pack(self) -> tuple[str, bytes, int]:
        """A gateway's SenML pack, its records round robin over the sensors and metrics."""
        job, writer = self._job, self._writer
        records: list[dict[str, object]] = []
        previous = None
        for _ in range(job.readings_per_message):
            sensor, family = job.sensors[self._cursor % len(job.sensors)]
            names = self._names[family]
            name = names[(self._cursor // len(job.sensors)) % len(names)]
            self._cursor += 1
            value = self._value(family, name)
            us = self._stamp(sensor)
            record: dict[str, object] = {
                "n": name,
                "u": self._units[(family, name)],
                "v": value,
                "t": us / 1_000_000,
            }
            if sensor != previous:
                record = {"bn": f"{sensor}/", **record}
                previous = sensor
            records.append(record)
            if writer is not None:
                writer.valid_us(sensor, name, us, value)
        return self._gateway_topic, orjson.dumps(records), len(records)

    def _single(self, sensor: str, family: str) -> tuple[str, bytes, int]:
        """One observation of the sensor's first metrics, numbered."""
        us = self._stamp(sensor)
        chosen = self._names[family][: self._job.readings_per_message]
        values = {}
        for name in chosen:
            values[name] = self._value(family, name)
            if self._writer is not None:
                self._writer.valid_us(sensor, name, us, values[name])
        seq = self._sequence[sensor] = self._sequence.get(sensor, -1) + 1
        body = orjson.dumps({"ts": us / 1_000_000, "seq": seq, "values": values})
        return self._sensor_topics[sensor], body, len(chosen)

    def _series(self, sensor: str, family: str) -> tuple[str, bytes, int]:
        """A list of observations, one metric each, in turn."""
        names = self._names[family]
        observations = []
        for k in range(self._job.readings_per_message):
            us = self._stamp(sensor)
            name = names[k % len(names)]
            value = self._value(family, name)
            observations.append({"ts": us / 1_000_000, "values": {name: value}})
            if self._writer is not None:
                self._writer.valid_us(sensor, name, us, value)
        return self._sensor_topics[sensor], orjson.dumps(observations), len(observations)


def _publish_share(job: _Job, counter: Synchronized[int]) -> tuple[int, int, int, float]:
    publisher = WirePublisher(
        mqtt_settings=job.mqtt, client_id=job.client_id, qos=job.qos, window=1000
    )
    publisher.connect()
    writer = (
        None
        if job.manifest is None
        else ManifestWriter(
            job.manifest,
            topic_root=job.mqtt.topic_root,
            seed=job.seed,
            meta={"mode": "load", "shape": job.shape, "part": job.index},
        )
    )
    composer = _Composer(job, writer)
    messages = readings = 0
    started = time.time()
    began = time.monotonic()
    finished = False
    try:
        if writer is not None:
            writer.open()
        for number in range(job.messages):
            if job.rate_per_s is not None:
                delay = began + number / job.rate_per_s - time.monotonic()
                # Pacing to the requested rate, a millisecond at a time: a sleep per message
                # costs a context switch each, a large share of a fast publisher's time.
                if delay > _PACE_SLACK_S:
                    publisher.pause(delay)
            topic, body, count = composer.next()
            publisher.publish(topic, body)
            messages += 1
            readings += count
            if messages % 256 == 0:
                with counter.get_lock():
                    counter.value += 256
        with counter.get_lock():
            counter.value += messages % 256
        acked = publisher.flush(timeout_s=job.ack_timeout_s)
        errors = publisher.errors + (0 if acked else publisher.outstanding)
        finished = True
    finally:
        publisher.close()
        if writer is not None:
            writer.close(complete=finished)
    return messages, readings, errors, started
