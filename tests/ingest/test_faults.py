"""Fault tests: a publisher sends a known set of readings (recorded in a manifest) while ingest
is killed, the database or the broker goes away, or hostile payloads are mixed in. Each ends
with every valid reading stored exactly once, every hostile payload recorded as rejected, and
ingest's memory bounded.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pantau.catalogue import Family, metrics_of
from pantau.city import City
from pantau.db import registry
from pantau.db.migrate import migrate
from pantau.settings import MqttSettings, StorageSettings
from pantau.tools.services import PrivateMosquitto, PrivatePostgres, wait_until
from simulators.load import LoadResult, run_load
from simulators.manifest import ManifestWriter, load_manifest
from simulators.verify import VerifyReport, verify
from tests.fixtures.ingest import IngestFactory, IngestProcess
from tests.ingest.helpers import publish_all

pytestmark = pytest.mark.slow

# Far above what the window (10,000 small messages) needs, far below an unbounded queue of a
# run this size.
RSS_LIMIT_BYTES = 300 * 1024**2


class RssSampler:
    """Samples the ingest process's resident memory (following restarts) in the background."""

    def __init__(self, process: IngestProcess, interval_s: float = 0.1) -> None:
        self.process = process
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.peak = max(self.peak, self.process.rss_bytes())
            except (AssertionError, OSError, KeyError, ValueError):
                continue  # between a kill and the restart

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self._stop.set()
        self._thread.join()
        with suppress(AssertionError, OSError, KeyError):
            self.peak = max(self.peak, self.process.peak_rss_bytes())


@contextmanager
def load_in_background(**kwargs: object) -> Iterator[Callable[[], LoadResult]]:
    """Run ``run_load`` in a thread; the yielded function waits for its result."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = run_load(**kwargs)  # type: ignore[arg-type]
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def result() -> LoadResult:
        thread.join(timeout=600)
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        value = box["result"]
        assert isinstance(value, LoadResult)
        return value

    yield result
    thread.join(timeout=600)


def _count(url: str) -> int:
    with psycopg.connect(url, connect_timeout=2) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
        return int(row[0]) if row else 0


def _more_than(url: str, rows: int) -> Callable[[], bool]:
    return lambda: _count(url) > rows


def _settle(
    url: str, expected: int, ingest: IngestProcess | None = None, *, timeout_s: float = 180
) -> None:
    try:
        wait_until(
            lambda: _count(url) >= expected, timeout_s=timeout_s, what=f"{expected} readings"
        )
    except TimeoutError as error:
        facts = f"stored {_count(url)} of {expected}"
        if ingest is not None and ingest.running():
            facts += "; " + ", ".join(
                f"{name}={ingest.metric(name):g}"
                for name in (
                    "pantau_ingest_messages_received_total",
                    "pantau_ingest_readings_committed_total",
                    "pantau_ingest_inflight_messages",
                    "pantau_ingest_mqtt_connected",
                )
            )
        raise AssertionError(f"{error}: {facts}") from None


def _assert_ok(report: VerifyReport) -> None:
    assert report.ok, (
        f"lost={len(report.lost)} (e.g. {report.lost[:3]}), duplicated={report.duplicated}, "
        f"mismatch={len(report.value_mismatch)}, unexpected={len(report.unexpected)}, "
        f"rejected_missing={len(report.rejected_missing)} "
        f"(kinds {sorted({f.kind for f in report.rejected_missing})})"
    )
    assert report.stored == report.expected > 0


def _mqtt(broker: PrivateMosquitto, test_id: str) -> MqttSettings:
    return MqttSettings(
        url=broker.url,
        topic_root=f"fault-{test_id}",
        client_id=f"ingest-{test_id}",
        shared_group=f"g-{test_id}",
    )


def test_kill_9_twice_mid_stream(
    city_db: str,
    private_broker: PrivateMosquitto,
    mini_city: City,
    test_id: str,
    ingest_factory: IngestFactory,
    tmp_path: Path,
) -> None:
    mqtt = _mqtt(private_broker, test_id)
    ingest = ingest_factory(database_url=city_db, mqtt=mqtt)
    with RssSampler(ingest) as rss, load_in_background(
        mqtt=mqtt, city=mini_city, messages=6_000, processes=2, rate_per_s=800,
        readings_per_message=4, manifest=tmp_path / "manifest.jsonl",
    ) as finished:  # fmt: skip
        for threshold in (4_000, 10_000):  # of about 20,000 readings
            wait_until(_more_than(city_db, threshold), timeout_s=120, what=f"{threshold} stored")
            ingest.kill()
            ingest.start()
        result = finished()
    assert result.errors == 0
    _settle(city_db, result.readings, ingest)
    _assert_ok(verify(city_db, load_manifest(result.manifests)))
    assert rss.peak < RSS_LIMIT_BYTES
    assert ingest.terminate() == 0


@pytest.fixture
def outage_db(private_postgres: PrivatePostgres, mini_city: City) -> str:
    url = private_postgres.create_database("pantau_faults")
    migrate(url, StorageSettings(raw_retention=timedelta(days=7), premake_partitions=2))
    with psycopg.connect(url, autocommit=True) as conn:
        registry.load_city(conn, mini_city)
    return url


@pytest.mark.parametrize("spool", [False, True], ids=["in-memory", "spool"])
def test_database_stopped_for_20_s_mid_stream(
    spool: bool,
    private_postgres: PrivatePostgres,
    outage_db: str,
    private_broker: PrivateMosquitto,
    mini_city: City,
    test_id: str,
    ingest_factory: IngestFactory,
    tmp_path: Path,
) -> None:
    mqtt = _mqtt(private_broker, test_id)
    extra: dict[str, object] = {"spool_dir": tmp_path / "spool"} if spool else {}
    ingest = ingest_factory(database_url=outage_db, mqtt=mqtt, **extra)
    with RssSampler(ingest) as rss, load_in_background(
        mqtt=mqtt, city=mini_city, messages=15_000, processes=2, rate_per_s=500,
        readings_per_message=2, manifest=tmp_path / "manifest.jsonl",
    ) as finished:  # fmt: skip
        wait_until(lambda: _count(outage_db) > 3_000, timeout_s=120, what="stream under way")
        private_postgres.stop("immediate")
        outage_ends = time.monotonic() + 20
        wait_until(lambda: ingest.metric("pantau_ingest_database_up") == 0, timeout_s=20,
                   what="ingest notices the outage")  # fmt: skip
        if spool:
            # Ingest keeps draining the broker into the spool.
            wait_until(lambda: ingest.metric("pantau_ingest_spool_bytes") > 0, timeout_s=20,
                       what="spool in use")  # fmt: skip
        else:
            # Nothing acknowledged: the window fills and the broker holds the rest.
            wait_until(
                lambda: ingest.metric("pantau_ingest_inflight_messages") >= 5_000,
                timeout_s=30,
                what="in-flight window filling",
            )
        assert ingest.running()
        time.sleep(max(0.0, outage_ends - time.monotonic()))  # the outage lasts 20 s
        private_postgres.start()
        result = finished()
    assert result.errors == 0
    _settle(outage_db, result.readings, ingest)
    _assert_ok(verify(outage_db, load_manifest(result.manifests)))
    if spool:
        wait_until(lambda: ingest.metric("pantau_ingest_spool_bytes") == 0, timeout_s=60,
                   what="spool emptied")  # fmt: skip
        assert ingest.metric("pantau_ingest_spooled_batches_total") > 0
    assert rss.peak < RSS_LIMIT_BYTES
    assert ingest.terminate() == 0


@pytest.mark.parametrize(
    "shared",
    [
        pytest.param(False, id="plain-subscription"),
        pytest.param(
            True,
            id="shared-subscription",
            marks=pytest.mark.xfail(
                reason="Mosquitto 2.0.11 does not restore $share subscriptions from its "
                "persistence file: messages published after the restart and before ingest "
                "subscribes again are routed to no one (see docs/ingest.md)",
                strict=False,
            ),
        ),
    ],
)
def test_broker_restarted_mid_stream(
    shared: bool,
    city_db: str,
    private_broker: PrivateMosquitto,
    mini_city: City,
    test_id: str,
    ingest_factory: IngestFactory,
    tmp_path: Path,
) -> None:
    mqtt = _mqtt(private_broker, test_id)
    if not shared:
        mqtt = mqtt.model_copy(update={"shared_group": None})
    ingest = ingest_factory(database_url=city_db, mqtt=mqtt)
    with RssSampler(ingest) as rss, load_in_background(
        mqtt=mqtt, city=mini_city, messages=8_000, processes=2, rate_per_s=800,
        readings_per_message=3, manifest=tmp_path / "manifest.jsonl",
    ) as finished:  # fmt: skip
        wait_until(lambda: _count(city_db) > 6_000, timeout_s=120, what="stream under way")
        private_broker.stop()  # SIGTERM: the broker saves its state
        private_broker.start()
        wait_until(lambda: ingest.health()[1]["mqtt_connected"], timeout_s=30,
                   what="ingest reconnected")  # fmt: skip
        result = finished()
    assert result.errors == 0
    _settle(city_db, result.readings, ingest, timeout_s=60)
    _assert_ok(verify(city_db, load_manifest(result.manifests)))
    assert rss.peak < RSS_LIMIT_BYTES
    assert ingest.terminate() == 0


# -- hostile payloads ------------------------------------------------------------------------

MAX_PAYLOAD_BYTES = 4096
FLOOD_METRICS = metrics_of(Family.FLOOD_GAUGE)
_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)


def _obs(ts: object, values: dict[str, object]) -> bytes:
    return json.dumps({"ts": ts, "values": values}, allow_nan=True).encode()


def hostile(root: str, now: float) -> st.SearchStrategy[tuple[str, str, bytes]]:
    """(kind, topic, payload) that ingest must reject whole, one strategy per reason."""
    gauge = f"{root}/up/fg-welang-1"
    recent = now - 3_600
    malformed = st.binary(min_size=1, max_size=200).filter(_not_json)
    shapes = st.one_of(
        st.integers(), st.text(max_size=30), st.just([]), st.lists(st.integers(), min_size=1),
        st.fixed_dictionaries({"ts": st.just(recent)}),
        st.fixed_dictionaries({"ts": st.just(recent), "values": st.lists(st.integers())}),
    ).map(lambda doc: json.dumps(doc).encode())  # fmt: skip
    unknown_sensor = st.tuples(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=3, max_size=30)
    ).map(lambda t: (f"{root}/up/zz-{t[0]}", _obs(recent, {"water_level": 1.0})))
    unknown_metric = _names.filter(lambda n: n not in FLOOD_METRICS).map(
        lambda n: _obs(recent, {n: 1.0})
    )
    out_of_range = st.one_of(
        st.floats(min_value=15.001, max_value=1e300), st.floats(min_value=-1e300, max_value=-2.001)
    ).map(lambda v: _obs(recent, {"water_level": v}))
    non_finite = st.sampled_from([math.nan, math.inf, -math.inf]).map(
        lambda v: _obs(recent, {"water_level": v})
    )
    future = st.floats(min_value=now + 3_600, max_value=now + 50 * 365 * 86_400).map(
        lambda ts: _obs(ts, {"water_level": 1.0})
    )
    too_old = st.floats(min_value=0, max_value=now - 30 * 86_400).map(
        lambda ts: _obs(ts, {"water_level": 1.0})
    )
    bad_time = st.one_of(st.booleans(), st.text(max_size=20), st.just(None)).map(
        lambda ts: _obs(ts, {"water_level": 1.0})
    )
    bad_value = st.one_of(st.text(max_size=10), st.lists(st.integers(), max_size=3)).map(
        lambda v: _obs(recent, {"water_level": v})
    )
    unit_mismatch = st.sampled_from(["ft", "cm", "km", "%"]).map(
        lambda u: json.dumps(
            [{"bn": "fg-welang-1/", "bt": recent, "n": "water_level", "u": u, "v": 1.0}]
        ).encode()
    )
    # A street node's own uplink, naming the gauge: in every shape.
    foreign = st.sampled_from([
        [{"bn": "fg-welang-1/", "bt": recent, "n": "water_level", "u": "m", "v": 4.321}],
        [{"sensor": "fg-welang-1", "ts": recent, "values": {"water_level": 4.321}}],
        {"sensor": "fg-welang-1", "ts": recent, "values": {"water_level": 4.321}},
    ]).map(lambda doc: (f"{root}/up/sn-bangil-1", json.dumps(doc).encode()))  # fmt: skip
    oversized = st.integers(min_value=MAX_PAYLOAD_BYTES + 1, max_value=3 * MAX_PAYLOAD_BYTES).map(
        lambda n: b'{"values": {"water_level": 1}, "pad": "' + b"x" * n + b'"}'
    )
    at_gauge = {
        "malformed_json": malformed, "bad_shape": shapes, "unknown_metric": unknown_metric,
        "out_of_range": out_of_range, "non_finite": non_finite, "future_time": future,
        "too_old": too_old, "bad_time": bad_time, "bad_value": bad_value,
        "unit_mismatch": unit_mismatch, "oversized": oversized,
    }  # fmt: skip
    return st.one_of(
        unknown_sensor.map(lambda tp: ("unknown_sensor", tp[0], tp[1])),
        foreign.map(lambda tp: ("foreign_sensor", tp[0], tp[1])),
        *(s.map(_tagger(kind, gauge)) for kind, s in at_gauge.items()),
    )


def _tagger(kind: str, topic: str) -> Callable[[bytes], tuple[str, str, bytes]]:
    return lambda payload: (kind, topic, payload)


def _not_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return True
    return False


def _draw_hostile(root: str, count: int) -> list[tuple[str, str, bytes]]:
    drawn: list[tuple[str, str, bytes]] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile(root, time.time()))
    def collect(item: tuple[str, str, bytes]) -> None:
        drawn.append(item)

    collect()
    assert drawn
    while len(drawn) < count:  # hypothesis may stop early on a small space: repeat some
        drawn.append(drawn[len(drawn) % max(1, len(drawn))])
    return drawn[:count]


def test_hostile_payloads_interleaved_with_valid_readings(
    city_db: str,
    private_broker: PrivateMosquitto,
    mini_city: City,
    test_id: str,
    ingest_factory: IngestFactory,
    tmp_path: Path,
) -> None:
    mqtt = _mqtt(private_broker, test_id)
    ingest = ingest_factory(database_url=city_db, mqtt=mqtt, max_payload_bytes=MAX_PAYLOAD_BYTES)
    payloads = _draw_hostile(mqtt.topic_root, 1_000)
    assert len({kind for kind, _, _ in payloads}) >= 12, "every reason is exercised"
    hostile_manifest = tmp_path / "hostile.jsonl"
    with ManifestWriter(hostile_manifest, topic_root=mqtt.topic_root) as manifest:
        for kind, topic, payload in payloads:
            manifest.fault(kind, topic=topic, payload=payload, expect_rejected=True)

    with RssSampler(ingest) as rss, load_in_background(
        mqtt=mqtt, city=mini_city, messages=6_000, processes=2, rate_per_s=1_000,
        readings_per_message=4, manifest=tmp_path / "manifest.jsonl",
    ) as finished:  # fmt: skip
        for start in range(0, len(payloads), 50):
            chunk = payloads[start : start + 50]
            publish_all(mqtt, [(topic, payload) for _, topic, payload in chunk])
            time.sleep(0.2)  # pacing: spread the hostile payloads across the valid stream
        result = finished()
    assert result.errors == 0
    _settle(city_db, result.readings, ingest)
    report = verify(city_db, load_manifest([*result.manifests, hostile_manifest]))
    wait_until(
        lambda: (
            not verify(
                city_db, load_manifest([*result.manifests, hostile_manifest])
            ).rejected_missing
        ),
        timeout_s=60,
        what="every hostile payload recorded",
    )
    report = verify(city_db, load_manifest([*result.manifests, hostile_manifest]))
    _assert_ok(report)
    assert report.faults_expected_rejected == 1_000
    assert ingest.running() and ingest.health()[0] == 200
    assert rss.peak < RSS_LIMIT_BYTES
    assert ingest.terminate() == 0


def test_hostile_strategy_never_produces_storable_readings() -> None:
    """The generator itself: every hostile payload decodes to rejections and no reading."""
    from pantau.payload import DecodeLimits, decode

    now = datetime.now(UTC)
    lookup = {"fg-welang-1": Family.FLOOD_GAUGE}
    for kind, topic, payload in _draw_hostile("h", 300):
        out = decode(
            payload, topic=topic, topic_root="h", sensors=lookup, received_at=now,
            limits=DecodeLimits(max_payload_bytes=MAX_PAYLOAD_BYTES, max_age=timedelta(days=7)),
        )  # fmt: skip
        assert not out.readings, (kind, payload[:100])
        assert out.rejections, (kind, payload[:100])
