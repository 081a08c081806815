"""The writing stage against a real database: idempotent batches, acknowledgement only after
commit, retries through an outage, the spool, and rows the database refuses."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ingest.acker import Acker
from ingest.batcher import Batch
from ingest.decoder import DecodedMessage
from ingest.metrics import IngestMetrics
from ingest.source import Inbound
from ingest.spool import SPOOL_FILE, Spool, encode_record
from ingest.writer import Database, Writer
from pantau.city import City
from pantau.db import registry
from pantau.db.migrate import migrate
from pantau.db.store import RejectedPayload
from pantau.payload import Reading, Reason, Rejection
from pantau.settings import StorageSettings
from pantau.tools.services import PrivatePostgres, wait_until
from tests.ingest.helpers import inbound


class RecordingTarget:
    """Stands in for the MQTT source: records which messages were acknowledged, and when."""

    def __init__(self) -> None:
        self.acked: list[Inbound] = []
        self.lock = threading.Lock()

    def ack(self, messages: list[Inbound]) -> int:
        with self.lock:
            self.acked.extend(messages)
        return len(messages)

    @property
    def inflight(self) -> int:
        return 0


def _batch(start: int, count: int, *, sensor: str = "fg-welang-1") -> Batch:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    items = []
    for i in range(start, start + count):
        items.append(
            DecodedMessage(
                message=inbound(f"t/up/{sensor}", {"i": i}),
                readings=[Reading.at(base + timedelta(seconds=i), sensor, "water_level", i / 100)],
            )
        )
    return Batch(items=items, readings_count=count)


def _writer(
    url: str,
    target: RecordingTarget,
    spool: Spool | None = None,
    *,
    connections: int = 1,
    database: Database | None = None,
) -> Writer:
    return Writer(
        database=database or Database(conninfo=url, connect_timeout_s=2),
        acker=Acker(target),
        metrics=IngestMetrics(),
        spool=spool,
        retry_initial_s=0.05,
        retry_max_s=0.5,
        connections=connections,
    )


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
        return int(row[0]) if row else -1


@pytest.mark.parametrize("connections", [1, 2])
def test_duplicate_batch_is_stored_once_and_both_are_acked(city_db: str, connections: int) -> None:
    target = RecordingTarget()
    writer = _writer(city_db, target, connections=connections)
    writer.start()
    batch = _batch(0, 50)
    assert writer.submit(batch)
    assert writer.submit(Batch(items=list(batch.items), readings_count=50))  # redelivery
    assert writer.finish(timeout_s=30)
    assert _count(city_db) == 50
    assert len(target.acked) == 100
    metrics = writer._metrics
    assert metrics.duplicates_dropped._value.get() == 50
    assert metrics.readings_inserted._value.get() == 50


def test_rejections_are_committed_with_their_batch(city_db: str) -> None:
    target = RecordingTarget()
    writer = _writer(city_db, target)
    writer.start()
    message = inbound("t/up/fg-welang-1", b"{nope")
    rejected = RejectedPayload(
        topic=message.topic,
        payload=message.payload,
        received_at=datetime.now(UTC),
        rejection=Rejection(Reason.MALFORMED_JSON, "Expecting property name"),
    )
    batch = _batch(0, 3)
    batch.items.append(DecodedMessage(message=message, rejected=[rejected]))
    writer.submit(batch)
    assert writer.finish(timeout_s=30)
    with psycopg.connect(city_db) as conn:
        rows = conn.execute("SELECT reason, payload FROM rejected_payloads").fetchall()
    assert rows == [("malformed_json", b"{nope")]
    assert len(target.acked) == 4


def test_rows_the_database_refuses_are_recorded_before_the_ack(city_db: str) -> None:
    """A refused row is split out, kept as a `db_refused` rejection and counted; the rest of
    its batch is stored and every message acknowledged."""
    with psycopg.connect(city_db, autocommit=True) as conn:
        # Something decoding cannot know about: a rule the database itself enforces.
        conn.execute("ALTER TABLE readings ADD CONSTRAINT no_minus_42 CHECK (value <> -0.42)")
    target = RecordingTarget()
    writer = _writer(city_db, target)
    writer.start()
    bad = RejectedPayload(
        topic="t/up/\x00",  # PostgreSQL text cannot hold NUL
        payload=b"x",
        received_at=datetime.now(UTC),
        rejection=Rejection(Reason.BAD_TOPIC, "nul"),
    )
    batch = _batch(0, 20)
    batch.items[7].rejected.append(bad)
    refused = batch.items[11].readings[0]._replace(value=-0.42)
    batch.items[11].readings[0] = refused
    writer.submit(batch)
    writer.submit(_batch(20, 5))  # the stream goes on
    assert writer.finish(timeout_s=30)
    assert _count(city_db) == 24
    assert len(target.acked) == 25
    metrics = writer._metrics
    assert metrics.unstorable._value.get() == 0
    assert metrics.rejected.labels(reason="db_refused")._value.get() == 2
    with psycopg.connect(city_db) as conn:
        rows = conn.execute(
            "SELECT topic, payload, detail FROM rejected_payloads WHERE reason = 'db_refused' "
            "ORDER BY topic"
        ).fetchall()
    (topic, payload, detail), (nul_topic, nul_payload, nul_detail) = rows
    assert (nul_topic, nul_payload) == ("t/up/\\x00", b"x")
    assert "bad_topic record" in nul_detail
    # The refused reading, as an observation of its sensor: replayable once the cause is gone.
    assert topic == "pantau/up/fg-welang-1"
    assert json.loads(payload) == {
        "sensor": "fg-welang-1",
        "ts": refused.time.isoformat(),
        "values": {"water_level": -0.42},
    }
    assert "no_minus_42" in detail


@pytest.fixture
def outage_db(private_postgres: PrivatePostgres, mini_city: City) -> str:
    url = private_postgres.create_database("ingest_outage")
    migrate(url, StorageSettings(raw_retention=timedelta(days=7), premake_partitions=2))
    with psycopg.connect(url, autocommit=True) as conn:
        registry.load_city(conn, mini_city)
    return url


@pytest.mark.parametrize("connections", [1, 2])
def test_database_outage_holds_acks_until_the_retry_commits(
    private_postgres: PrivatePostgres, outage_db: str, connections: int
) -> None:
    target = RecordingTarget()
    writer = _writer(outage_db, target, connections=connections)
    writer.start()
    writer.submit(_batch(0, 10))
    wait_until(lambda: len(target.acked) == 10, timeout_s=20, what="first batch acked")

    private_postgres.stop("immediate")
    writer.submit(_batch(10, 10))
    wait_until(
        lambda: writer._metrics.write_retries._value.get() >= 3, timeout_s=20, what="retries"
    )
    assert len(target.acked) == 10, "nothing may be acknowledged while the database is away"
    assert writer._metrics.database_up._value.get() == 0

    private_postgres.start()
    wait_until(lambda: len(target.acked) == 20, timeout_s=30, what="batch committed after outage")
    assert writer.finish(timeout_s=30)
    assert _count(outage_db) == 20


@pytest.mark.parametrize("connections", [1, 2])
def test_spool_acks_during_outage_and_replays_in_order(
    private_postgres: PrivatePostgres, outage_db: str, tmp_path: Path, connections: int
) -> None:
    spool = Spool(directory=tmp_path / "spool", max_bytes=10**7)
    spool.open()
    target = RecordingTarget()
    writer = _writer(outage_db, target, spool=spool, connections=connections)
    writer.start()
    private_postgres.stop("immediate")
    for i in range(5):
        writer.submit(_batch(i * 10, 10))
    wait_until(lambda: len(target.acked) == 50, timeout_s=30, what="spooled batches acked")
    assert spool.size_bytes > 0
    assert writer._metrics.spooled_batches._value.get() == 5

    private_postgres.start()
    wait_until(lambda: spool.empty, timeout_s=30, what="spool replayed")
    writer.submit(_batch(50, 10))
    assert writer.finish(timeout_s=30)
    assert _count(outage_db) == 60
    with psycopg.connect(outage_db) as conn:
        value = conn.execute(
            "SELECT value FROM latest_readings WHERE sensor_id = 'fg-welang-1'"
        ).fetchone()
    assert value == (0.59,)  # newest by observation time


def test_a_damaged_spool_record_is_recorded_and_the_rest_replayed(
    city_db: str, tmp_path: Path
) -> None:
    """A spool left by a crash during an outage, its middle record damaged since."""
    directory = tmp_path / "spool"
    spool = Spool(directory=directory, max_bytes=10**7)
    spool.open()
    batches = [_batch(i * 10, 10) for i in range(3)]
    ends = []
    for batch in batches:
        assert spool.append(batch.readings(), [])
        ends.append(spool.size_bytes)
    spool.close()
    path = directory / SPOOL_FILE
    data = bytearray(path.read_bytes())
    data[ends[1] - 10] ^= 0x55
    path.write_bytes(bytes(data))

    restarted = Spool(directory=directory, max_bytes=10**7)
    assert restarted.open() == 2
    target = RecordingTarget()
    writer = _writer(city_db, target, spool=restarted)
    writer.start()
    wait_until(lambda: restarted.empty, timeout_s=30, what="spool replayed")
    assert writer.finish(timeout_s=30)
    assert _count(city_db) == 20
    with psycopg.connect(city_db) as conn:
        stored = {r[0] for r in conn.execute("SELECT value FROM readings").fetchall()}
        rows = conn.execute(
            "SELECT topic, length(payload), detail FROM rejected_payloads"
        ).fetchall()
    assert stored == {r.value for b in (batches[0], batches[2]) for r in b.readings()}
    ((topic, size, detail),) = rows
    assert topic == f"{SPOOL_FILE}@{ends[0]}" and size == ends[1] - ends[0]
    assert "failed their checksums" in detail
    assert writer._metrics.rejected.labels(reason="spool_corrupt")._value.get() == 1


def test_full_spool_pushes_back(
    private_postgres: PrivatePostgres, outage_db: str, tmp_path: Path
) -> None:
    first = _batch(0, 10)
    room = len(encode_record(first.readings(), [])) + 100
    spool = Spool(directory=tmp_path / "spool", max_bytes=room)
    spool.open()
    target = RecordingTarget()
    writer = _writer(outage_db, target, spool=spool)
    writer.start()
    private_postgres.stop("immediate")
    writer.submit(first)
    wait_until(lambda: len(target.acked) == 10, timeout_s=30, what="first batch spooled")
    writer.submit(_batch(10, 30))  # does not fit: held, not acknowledged
    time.sleep(0.5)  # give a wrong implementation time to acknowledge
    assert len(target.acked) == 10
    private_postgres.start()
    wait_until(lambda: len(target.acked) == 40, timeout_s=30, what="held batch committed")
    assert writer.finish(timeout_s=30)
    assert _count(outage_db) == 40 and spool.empty


class _HeldDatabase(Database):
    """Connections whose first batch (on whichever connection) waits until another commits and
    the test has looked (``release``)."""

    def __init__(self, *, conninfo: str, shared: dict[str, object] | None = None) -> None:
        super().__init__(conninfo=conninfo, connect_timeout_s=2)
        self.shared = shared if shared is not None else {
            "lock": threading.Lock(), "held": False, "later_committed": threading.Event(),
            "release": threading.Event(),
        }  # fmt: skip

    def sibling(self) -> Database:
        return _HeldDatabase(conninfo=self._conninfo, shared=self.shared)

    def store(self, readings, rejected):  # type: ignore[no-untyped-def]
        later_committed = self.shared["later_committed"]
        assert isinstance(later_committed, threading.Event)
        with self.shared["lock"]:  # type: ignore[attr-defined]
            hold, self.shared["held"] = not self.shared["held"], True
        if hold:
            assert later_committed.wait(20), "the other connection never committed"
            release = self.shared["release"]
            assert isinstance(release, threading.Event)
            assert release.wait(20), "the test never released the held batch"
            return super().store(readings, rejected)
        result = super().store(readings, rejected)
        later_committed.set()
        return result


def test_acks_keep_submission_order_when_a_later_batch_commits_first(city_db: str) -> None:
    database = _HeldDatabase(conninfo=city_db)
    later_committed = database.shared["later_committed"]
    assert isinstance(later_committed, threading.Event)
    target = RecordingTarget()
    writer = _writer(city_db, target, connections=2, database=database)
    writer.start()
    first, second = _batch(0, 20), _batch(20, 20)
    assert writer.submit(first)
    wait_until(lambda: database.shared["held"] is True, timeout_s=10, what="first batch held")
    assert writer.submit(second)
    assert later_committed.wait(20)
    assert _count(city_db) == 20 and target.acked == [], "the later batch waits for the first"
    database.shared["release"].set()  # type: ignore[attr-defined]
    assert writer.finish(timeout_s=30)
    assert target.acked == first.messages + second.messages
    assert _count(city_db) == 40
