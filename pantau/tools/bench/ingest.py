"""`pantau bench ingest`: throughput, latency, loss and memory of the ingest path.

Everything runs as separate processes against a private Mosquitto and the local PostgreSQL
(a fresh database per scenario, dropped afterwards):

* (a) pass-through: an MQTT v5 QoS 1 subscriber that only acknowledges;
* (b) the raw binary-COPY ceiling of the database;
* (c) the naive baseline: one INSERT per message, autocommit;
* (d) Pantau ingest, one observation per message;
* (e) Pantau ingest, SenML gateway packs of 50 readings.

Throughput is measured by draining: the load is published first (several publishing
processes) into the consumer's persistent session, then the consumer starts and the time from
its first message to its last commit counts, so the publisher cannot be the limit. Latency is
measured apart, live, with the publisher paced at half the measured throughput: the load
stamps every reading with its publish time; ingest observes commit time minus that time in its
``pantau_ingest_publish_to_commit_seconds`` histogram. Lost and duplicated readings come from
``python -m simulators verify`` over both runs' manifests.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from pantau.city import load_city
from pantau.db import registry
from pantau.db.migrate import current_mode, migrate, refresh_rollups
from pantau.settings import DEFAULT_CITY_FILE, StorageSettings
from pantau.tools.bench._common import READY, scrape, service_env
from pantau.tools.scratch import temporary_database
from pantau.tools.services import PrivateMosquitto, free_port, tree_memory_bytes, wait_until
from pantau.topics import uplink_filter
from simulators.load import load_gateway_id

PACK_SIZE = 50


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Sizes of one benchmark run."""

    admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    city_file: Path = DEFAULT_CITY_FILE
    messages: int = 200_000
    packs: int = 20_000
    copy_rows: int = 2_000_000
    latency_s: float = 15.0
    publishers: int = 3
    # The load runs at a lower priority: on a machine of its own it would take nothing from the
    # broker, ingest and database, so here it yields the cores to them when they need them. Its
    # messages carry the time they are actually published, and the rate reached is reported.
    load_niceness: int = 10
    # (b) and the drain of (e) alternate this many times and each reports its median: within
    # one run, (b) alone has varied by a quarter from one hour to the next.
    rounds: int = 3
    log: Callable[[str], None] = print

    @classmethod
    def quick(cls, **overrides: object) -> BenchConfig:
        sizes: dict[str, object] = {
            "messages": 20_000, "packs": 600, "copy_rows": 200_000, "latency_s": 4.0,
            "publishers": 2, "rounds": 1,
        }  # fmt: skip
        return cls(**{**sizes, **overrides})  # type: ignore[arg-type]


@dataclass(kw_only=True)
class Row:
    """One scenario's results."""

    key: str
    name: str
    readings: int = 0
    readings_per_s: float = 0.0
    p50_s: float | None = None
    p99_s: float | None = None
    lost: int | None = None
    duplicated: int | None = None
    peak_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Target:
    name: str
    measured: float | None
    required: float
    passed: bool


@dataclass(kw_only=True)
class BenchResult:
    machine: dict[str, str]
    config: dict[str, object]
    rows: list[Row]
    targets: list[Target]

    def to_json(self) -> str:
        return json.dumps(
            {
                "machine": self.machine,
                "config": self.config,
                "rows": [asdict(r) for r in self.rows],
                "targets": [asdict(t) for t in self.targets],
            }
        )


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and why."""


# -- processes -------------------------------------------------------------------------------


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _run_json(
    command: list[str], *, timeout_s: float, env: dict[str, str] | None = None, nice: int = 0
) -> dict[str, object]:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"{' '.join(command[:4])} failed: {done.stderr[-2000:]}")
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"{' '.join(command[:4])} printed no result: {done.stdout[-500:]}")
    result: dict[str, object] = json.loads(lines[-1])
    return result


def _load(
    *,
    broker: str,
    root: str,
    city: Path,
    messages: int,
    publishers: int,
    shape: str,
    per_message: int,
    manifest: Path,
    nice: int,
    rate: float | None = None,
) -> dict[str, object]:
    command = _python(
        "-m", "simulators", "load", "--messages", str(messages),
        "--processes", str(publishers), "--shape", shape,
        "--readings-per-message", str(per_message), "--manifest", str(manifest),
        "--mqtt-url", broker, "--topic-root", root, "--city", str(city), "--json",
    )  # fmt: skip
    if rate is not None:
        command += ["--rate", f"{rate:.1f}"]
    return _run_json(command, timeout_s=3600, nice=nice)


def _start_background(
    command: list[str], *, env: dict[str, str] | None = None, log: Path
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True, env=env
    )


def _await_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == READY:
            return
    raise BenchError(f"helper exited {process.wait()} before it was ready")


def _finish(process: subprocess.Popen[str], *, timeout_s: float) -> dict[str, object]:
    out, _ = process.communicate(timeout=timeout_s)
    lines = [line for line in out.strip().splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise BenchError(f"helper exited {process.returncode} without a result")
    result: dict[str, object] = json.loads(lines[-1])
    return result


def _peak_rss(pid: int) -> int:
    # Ingest runs its MQTT client in a child process: count the whole tree.
    return tree_memory_bytes(pid, key="VmHWM")


def _verify(database: str, manifests: list[str]) -> tuple[int, int, bool]:
    """(lost, duplicated, ok) from the simulators' verify command."""
    done = subprocess.run(
        _python("-m", "simulators", "verify", *manifests, "--database-url", database, "--json"),
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode not in (0, 1):
        raise BenchError(f"verify failed: {done.stderr[-2000:]}")
    try:
        counts = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"verify printed no result: {done.stdout[-1000:]}") from None
    return int(counts["lost"]), int(counts["duplicated"]), bool(counts["ok"])


# -- databases -------------------------------------------------------------------------------


@contextmanager
def _database(config: BenchConfig, *, with_city: bool) -> Iterator[str]:
    with temporary_database(config.admin_url, prefix="pantau_bench") as url:
        if with_city:
            migrate(url, StorageSettings(raw_retention=timedelta(days=7), premake_partitions=2))
            with psycopg.connect(url, autocommit=True) as conn:
                city = load_city(config.city_file)
                registry.load_city(conn, city)
                # The load's SenML packs come from gateways of its own, for every sensor.
                for index in range(config.publishers):
                    registry.register_gateway(
                        conn, load_gateway_id(index), [s.id for s in city.sensors]
                    )
        yield url


# -- ingest as a process ---------------------------------------------------------------------


class _Ingest:
    def __init__(self, *, database: str, broker: str, root: str, workdir: Path) -> None:
        self.port = free_port()
        self.env = service_env(
            database=database,
            broker=broker,
            root=root,
            PANTAU_MQTT__CLIENT_ID=f"bench-{root}",
            PANTAU_MQTT__SHARED_GROUP="",
            PANTAU_INGEST__METRICS_PORT=str(self.port),
            PANTAU_STORAGE__RAW_RETENTION="P7D",
        )
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            _python("-m", "ingest"), env=self.env, cwd=self.workdir,
            stdout=subprocess.DEVNULL, stderr=(self.workdir / "ingest.log").open("ab"),
        )  # fmt: skip
        wait_until(self._healthy, timeout_s=60, what="ingest")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise BenchError(f"ingest exited: {(self.workdir / 'ingest.log').read_text()[-2000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
            return bool(r.status == 200)

    def samples(self) -> dict[str, float]:
        return scrape(self.port)

    def stop(self) -> int:
        assert self.process is not None
        peak = _peak_rss(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        if code != 0:
            raise BenchError(f"ingest exited {code} on SIGTERM")
        return peak


def _quantile(samples: dict[str, float], name: str, q: float) -> float | None:
    buckets = sorted(
        (float(key.split("{le=")[1].rstrip("}")), value)
        for key, value in samples.items()
        if key.startswith(name + "_bucket{le=")
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_edge, lower_count = 0.0, 0.0
    for edge, count in buckets:
        if count >= rank:
            if edge == float("inf"):
                return lower_edge
            width = count - lower_count
            fraction = 0.0 if width == 0 else (rank - lower_count) / width
            return lower_edge + fraction * (edge - lower_edge)
        lower_edge, lower_count = edge, count
    return lower_edge


# -- scenarios -------------------------------------------------------------------------------


def _copy_ceiling(config: BenchConfig) -> Row:
    row = Row(key="b", name="raw COPY ceiling (database)")
    with _database(config, with_city=False) as url:
        result = _run_json(
            _python(
                "-m",
                "pantau.tools.bench.copyceiling",
                "--database",
                url,
                "--rows",
                str(config.copy_rows),
            ),
            timeout_s=3600,
        )
    rows, seconds = int(result["rows"]), float(result["seconds"])  # type: ignore[call-overload, arg-type]
    row.readings, row.readings_per_s = rows, rows / seconds
    row.peak_rss_mb = int(result["peak_rss_bytes"]) / 1024**2  # type: ignore[call-overload]
    row.notes.append("binary COPY, 5,000 rows a transaction, unique key; no MQTT")
    return row


def _listed(rates: list[float]) -> str:
    return ", ".join(f"{rate:,.0f}" for rate in rates)


def _median_row(runs: list[Row]) -> Row:
    """One row for repeated runs of a scenario: the median rate, every rate in the notes."""
    row = runs[0]
    if len(runs) > 1:
        rates = [run.readings_per_s for run in runs]
        row.readings_per_s = statistics.median(rates)
        row.peak_rss_mb = max(run.peak_rss_mb or 0.0 for run in runs)
        row.notes.append(
            f"runs of {_listed(rates)} rows/s, each right before a drain of (e); the median counts"
        )
    return row


def _subscriber(
    config: BenchConfig,
    broker: PrivateMosquitto,
    workdir: Path,
    *,
    key: str,
    name: str,
    module: str,
    database: str | None,
) -> Row:
    """(a) or (c): a helper subscriber process, drained then paced."""
    row = Row(key=key, name=name)
    root = f"bench-{key}-{uuid.uuid4().hex[:6]}"
    base = [
        "-m", module, "--url", broker.url, "--filter", uplink_filter(root), "--client-id", f"bench-{root}",
    ]  # fmt: skip
    if database is not None:
        base += ["--database", database]
    _run_json(_python(*base, "--create-session"), timeout_s=60)
    drain_manifest = workdir / f"{root}-drain.jsonl"
    loaded = _load(
        nice=config.load_niceness, broker=broker.url, root=root, city=config.city_file,
        messages=config.messages, publishers=config.publishers, shape="single", per_message=1,
        manifest=drain_manifest,
    )  # fmt: skip
    published = int(loaded["messages"])  # type: ignore[call-overload]
    drained = _run_json(_python(*base, "--expect", str(published)), timeout_s=3600)
    received = int(drained["messages"])  # type: ignore[call-overload]
    span = float(drained["last"]) - float(drained["first"])  # type: ignore[arg-type]
    row.readings = received
    row.readings_per_s = received / span if span > 0 else 0.0
    peak = int(drained["peak_rss_bytes"])  # type: ignore[call-overload]

    rate = row.readings_per_s / 2
    paced_messages = max(100, int(rate * config.latency_s))
    paced = _start_background(
        _python(*base, "--expect", str(paced_messages)), log=workdir / f"{root}.log"
    )
    _await_ready(paced)  # subscribed before the first paced message, so none waits for it
    paced_manifest = workdir / f"{root}-paced.jsonl"
    published_paced = _load(
        nice=config.load_niceness, broker=broker.url, root=root, city=config.city_file,
        messages=paced_messages, publishers=config.publishers, shape="single", per_message=1,
        manifest=paced_manifest, rate=rate,
    )  # fmt: skip
    latency = _finish(paced, timeout_s=600)
    row.p50_s, row.p99_s = latency["p50_s"], latency["p99_s"]  # type: ignore[assignment]
    peak = max(peak, int(latency["peak_rss_bytes"]))  # type: ignore[call-overload]
    row.peak_rss_mb = peak / 1024**2
    row.notes.append(
        f"latency at {rate:,.0f} msg/s (half the drain rate; "
        f"published at {float(published_paced['messages_per_s']):,.0f})"  # type: ignore[arg-type]
    )
    if database is not None:
        parts = sorted(str(p) for p in workdir.glob(f"{root}-*.jsonl.*"))
        row.lost, row.duplicated, _ = _verify(database, parts)
    else:
        expected = published + paced_messages
        got = received + int(latency["messages"])  # type: ignore[call-overload]
        row.lost, row.duplicated = max(0, expected - got), max(0, got - expected)
    return row


def _drain(ingest: _Ingest, expected: int) -> float:
    """Start ingest on a preloaded session; readings/s from its first receipt to its last commit."""
    ingest.start()
    wait_until(
        lambda: ingest.samples().get("pantau_ingest_messages_received_total", 0) > 0,
        timeout_s=120,
        what="ingest receiving the preloaded messages",
    )
    wait_until(
        lambda: ingest.samples().get("pantau_ingest_readings_committed_total", 0) >= expected,
        timeout_s=3600,
        what="ingest drained the preloaded messages",
    )
    samples = ingest.samples()
    # Both times come from ingest, so how often this process polls does not count.
    start = samples["pantau_ingest_first_message_timestamp_seconds"]
    end = samples["pantau_ingest_last_commit_timestamp_seconds"]
    if not 0 < start < end:
        raise BenchError(f"drain not timed: first message at {start}, last commit at {end}")
    return expected / (end - start)


def _pantau(
    config: BenchConfig,
    broker: PrivateMosquitto,
    workdir: Path,
    *,
    key: str,
    senml: bool,
    rounds: int = 1,
    before_drain: Callable[[int], None] | None = None,
) -> Row:
    name = "Pantau ingest, SenML packs of 50" if senml else "Pantau ingest, 1 observation/message"
    row = Row(key=key, name=name)
    root = f"bench-{key}-{uuid.uuid4().hex[:6]}"
    shape, per_message = ("senml", PACK_SIZE) if senml else ("single", 1)
    messages = config.packs if senml else config.messages
    with _database(config, with_city=True) as database:
        ingest = _Ingest(database=database, broker=broker.url, root=root, workdir=workdir)
        ingest.start()  # creates the persistent session
        ingest.stop()
        drains: list[float] = []
        peak = 0
        for number in range(1, rounds + 1):
            if before_drain is not None:
                before_drain(number)
            loaded = _load(
                nice=config.load_niceness, broker=broker.url, root=root, city=config.city_file,
                messages=messages, publishers=config.publishers, shape=shape,
                per_message=per_message, manifest=workdir / f"{root}-drain{number}.jsonl",
            )  # fmt: skip
            expected = int(loaded["readings"])  # type: ignore[call-overload]
            drains.append(_drain(ingest, expected))
            row.readings += expected
            peak = max(peak, ingest.stop())
        row.readings_per_s = statistics.median(drains)
        if rounds > 1:
            row.notes.append(f"drains of {_listed(drains)} readings/s; the median counts")
        # Rollups are materialised off the write path in both storage modes; say what that
        # costs, rather than let the first periodic refresh land inside the latency run.
        refresh_started = time.perf_counter()
        # A minute ahead: the buckets of the last readings are closed too (plain PostgreSQL;
        # TimescaleDB never materialises a bucket still open).
        refresh_rollups(database, through=datetime.now(UTC) + timedelta(minutes=1))
        refresh_s = time.perf_counter() - refresh_started
        with psycopg.connect(database) as conn:
            mode = current_mode(conn)
        row.notes.append(
            f"rollups ({mode} mode) of the drained readings refreshed in {refresh_s:.2f} s "
            f"({row.readings / refresh_s:,.0f} readings/s), off the write path"
        )

        rate_messages = row.readings_per_s / 2 / per_message
        paced_messages = max(20, int(rate_messages * config.latency_s))
        ingest.start()
        paced = _load(
            nice=config.load_niceness, broker=broker.url, root=root, city=config.city_file,
            messages=paced_messages, publishers=config.publishers, shape=shape,
            per_message=per_message, manifest=workdir / f"{root}-paced.jsonl", rate=rate_messages,
        )  # fmt: skip
        paced_readings = int(paced["readings"])  # type: ignore[call-overload]
        wait_until(
            lambda: (
                ingest.samples().get("pantau_ingest_readings_committed_total", 0) >= paced_readings
            ),
            timeout_s=600,
            what="paced run committed",
        )
        samples = ingest.samples()
        histogram = "pantau_ingest_publish_to_commit_seconds"
        row.p50_s = _quantile(samples, histogram, 0.50)
        row.p99_s = _quantile(samples, histogram, 0.99)
        peak = max(peak, ingest.stop())
        row.peak_rss_mb = peak / 1024**2
        row.notes.append(
            f"latency at {rate_messages * per_message:,.0f} readings/s (half the drain rate; "
            f"published at {float(paced['readings_per_s']):,.0f})"  # type: ignore[arg-type]
        )
        parts = sorted(str(p) for p in workdir.glob(f"{root}-*.jsonl.*"))
        row.lost, row.duplicated, _ = _verify(database, parts)
    return row


def _targets(rows: dict[str, Row]) -> list[Target]:
    a, b, c, d, e = (rows[k].readings_per_s for k in "abcde")
    p99 = rows["d"].p99_s
    return [
        Target(name="(d) >= 0.75 x (a)", measured=d / a if a else None, required=0.75,
               passed=bool(a) and d >= 0.75 * a),
        Target(name="(d) >= 3 x (c)", measured=d / c if c else None, required=3.0,
               passed=bool(c) and d >= 3 * c),
        Target(name="(e) >= 0.35 x (b)", measured=e / b if b else None, required=0.35,
               passed=bool(b) and e >= 0.35 * b),
        Target(name="(d) p99 at half rate < 0.5 s", measured=p99, required=0.5,
               passed=p99 is not None and p99 < 0.5),
        Target(name="(d), (e): 0 lost, 0 duplicated",
               measured=float(sum((rows[k].lost or 0) + (rows[k].duplicated or 0) for k in "de")),
               required=0.0,
               passed=all(rows[k].lost == 0 and rows[k].duplicated == 0 for k in "de")),
    ]  # fmt: skip


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    info = {"python": platform.python_version(), "cores": str(os.cpu_count())}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = re.search(r"Model name:\s*(.+)", lscpu)
        info["cpu"] = model.group(1).strip() if model else "unknown"
    except OSError:
        info["cpu"] = "unknown"
    meminfo = Path("/proc/meminfo").read_text()
    total = re.search(r"MemTotal:\s*(\d+)", meminfo)
    info["ram_gib"] = f"{int(total.group(1)) / 1024**2:.1f}" if total else "unknown"
    return info


def _timed(config: BenchConfig, label: str, step: Callable[[], Row]) -> Row:
    began = time.monotonic()
    row = step()
    config.log(
        f"scenario {label}: {row.readings_per_s:,.0f} readings/s ({time.monotonic() - began:.0f} s)"
    )
    return row


def run_bench(config: BenchConfig) -> BenchResult:
    """Run the five scenarios; see the module docstring."""
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="pantau-bench-"))
    broker = PrivateMosquitto(directory=workdir / "mosquitto")
    try:
        broker.start()
        info["mosquitto"] = subprocess.run(
            [broker.binary, "-h"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
        with psycopg.connect(config.admin_url) as conn:
            info["postgresql"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            ts = conn.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
            info["timescaledb"] = str(ts[0]) if ts else "not installed (plain PostgreSQL mode)"
        rows: dict[str, Row] = {}
        ceilings: list[Row] = []

        def ceiling(number: int) -> None:
            ceilings.append(_timed(config, f"(b), round {number}", lambda: _copy_ceiling(config)))

        # Each ratio compares scenarios run back to back, (a) then (d), and (b) right before
        # each drain of (e), so that the machine getting faster or slower during the run moves
        # both alike.
        steps: list[tuple[str, Callable[[], Row]]] = [
            ("c", lambda: _naive(config, broker, workdir)),
            ("a", lambda: _subscriber(config, broker, workdir, key="a",
                                      name="MQTT QoS 1 pass-through (ack only)",
                                      module="pantau.tools.bench.passthrough", database=None)),
            ("d", lambda: _pantau(config, broker, workdir, key="d", senml=False)),
            ("e", lambda: _pantau(config, broker, workdir, key="e", senml=True,
                                  rounds=config.rounds, before_drain=ceiling)),
        ]  # fmt: skip
        for key, step in steps:
            config.log(f"scenario ({key}) ...")
            rows[key] = _timed(config, f"({key})", step)
        rows["b"] = _median_row(ceilings)
        return BenchResult(
            machine=info,
            config={
                f.name: str(getattr(config, f.name))
                for f in fields(config)
                if f.name not in {"log", "admin_url"}
            },
            rows=[rows[k] for k in "abcde"],
            targets=_targets(rows),
        )
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _naive(config: BenchConfig, broker: PrivateMosquitto, workdir: Path) -> Row:
    with _database(config, with_city=True) as database:
        return _subscriber(
            config, broker, workdir, key="c", name="naive: 1 INSERT/message, autocommit",
            module="pantau.tools.bench.naive", database=database,
        )  # fmt: skip
