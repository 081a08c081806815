"""Writing stage: batches committed to the database, retried through outages, spooled if asked.

Each writing thread owns one database connection; there are ``connections`` of them, taking
batches in turn, so that one batch's statements run while the next is copied in (the database
does most of the work of a batch, and it can use another core for the next). Each batch is
written in one transaction with :func:`pantau.db.store.store` (idempotent: a redelivered message
stores nothing twice, whichever connection writes it), then its messages are acknowledged.
Acknowledgements go out in the order the batches were submitted, whichever commits first: MQTT
asks for PUBACKs in the order the messages came.

When the database is away the same batch is retried with exponential backoff and nothing is
acknowledged, so the broker stops sending once the in-flight window is full. With a spool, a
batch that cannot be written is appended to the spool instead (fsync'd, then acknowledged) and
ingest keeps draining the broker; once the database answers, the spool is replayed in order
(by one thread at a time) before that thread writes anything newer.

A batch the database refuses for its data (never expected: decoding validates everything) is
split in halves until the offending rows are isolated, and the rest is stored, so one bad row
cannot stall the stream. Each refused row is recorded in ``rejected_payloads`` as ``db_refused``
with the database's error (a reading as an observation of its sensor, which an operator can
replay once the cause is fixed), counted, and only then acknowledged with its batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import orjson
import psycopg

from ingest.acker import Acker
from ingest.batcher import Batch
from ingest.decoder import storable
from ingest.metrics import IngestMetrics
from ingest.source import Inbound
from ingest.spool import Spool
from pantau.db import store as db_store
from pantau.db.store import RejectedPayload, StagedReadings, StoreResult
from pantau.logs import get_logger
from pantau.payload import Reading, Reason, Rejection
from pantau.topics import uplink_topic

log = get_logger(__name__)


class TransientError(RuntimeError):
    """The database is unreachable or busy: retry the same batch later."""


class UnstorableDataError(RuntimeError):
    """The database refused the batch's content: retrying it unchanged cannot succeed."""


def _classify(error: BaseException) -> type[RuntimeError]:
    if isinstance(error, psycopg.DataError | psycopg.IntegrityError):
        return UnstorableDataError
    if isinstance(error, psycopg.Error | OSError):
        # Connection loss, shutdown, timeouts, deadlocks, a missing table while migrations
        # run: all worth waiting for. Dropping data is never the answer to those.
        return TransientError
    return UnstorableDataError  # adaptation errors raised by the driver before anything was sent


class Database:
    """One connection, opened lazily and reopened after a failure."""

    def __init__(self, *, conninfo: str, connect_timeout_s: float) -> None:
        self._conninfo = conninfo
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=max(1, round(self._connect_timeout_s)),
                application_name="pantau-ingest",
                # Notice a vanished server within seconds, not at the kernel's default hours.
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
            )
            db_store.prepare(conn)
            self._conn = conn
        return self._conn

    def sibling(self) -> Database:
        """Another connection to the same database, with the same settings."""
        return Database(conninfo=self._conninfo, connect_timeout_s=self._connect_timeout_s)

    def store(
        self, readings: Sequence[Reading] | StagedReadings, rejected: Sequence[RejectedPayload]
    ) -> StoreResult:
        """Commit one batch; raises TransientError or UnstorableDataError."""
        try:
            return db_store.store(self._connection(), readings, rejected)
        except Exception as error:
            kind = _classify(error)
            if kind is TransientError:
                self.close()
            raise kind(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as error:
                log.debug("closing a failed connection", error=str(error))
            self._conn = None


@dataclass(slots=True)
class _Backoff:
    initial_s: float
    max_s: float
    delay_s: float = 0.0
    next_attempt: float = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.next_attempt

    def failed(self, now: float) -> None:
        self.delay_s = self.initial_s if self.delay_s == 0 else min(self.delay_s * 2, self.max_s)
        self.next_attempt = now + self.delay_s

    def succeeded(self) -> None:
        self.delay_s = 0.0
        self.next_attempt = 0.0


_FINISH = object()


@dataclass(slots=True, frozen=True)
class _Job:
    number: int
    batch: Batch


class _InOrder:
    """Acknowledges batches in the order they were numbered, whichever finishes first."""

    def __init__(self, acker: Acker) -> None:
        self._acker = acker
        self._lock = threading.Lock()
        self._next = 0
        self._finished: dict[int, Sequence[Inbound]] = {}

    def done(self, number: int, messages: Sequence[Inbound]) -> None:
        """Batch ``number`` is safe (committed, spooled, or nothing to acknowledge)."""
        with self._lock:
            self._finished[number] = messages
            while self._next in self._finished:
                ready = self._finished.pop(self._next)
                self._next += 1
                if ready:
                    self._acker.ack(ready)


class Writer:
    """The writing threads: take batches, commit, acknowledge in submission order."""

    def __init__(
        self,
        *,
        database: Database,
        acker: Acker,
        metrics: IngestMetrics,
        spool: Spool | None = None,
        retry_initial_s: float,
        retry_max_s: float,
        connections: int = 1,
        is_stale: Callable[[Batch], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        topic_root: str = "pantau",
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self._databases = [database] + [database.sibling() for _ in range(connections - 1)]
        self._acker = acker
        self._metrics = metrics
        self._spool = spool
        # Replaying and appending never overlap: replay empties the file when done.
        self._spool_lock = threading.Lock()
        self._backoff = _Backoff(retry_initial_s, retry_max_s)
        self._is_stale = is_stale
        self._clock = clock
        self._topic_root = topic_root
        # One batch waits while the others are written: decoding overlaps the commits.
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._submitted = 0  # batches numbered in submission order
        self._acks = _InOrder(acker)
        self._abandon = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._run, args=(db,), name=f"ingest-writer-{index}", daemon=True
            )
            for index, db in enumerate(self._databases)
        ]
        self._replay_offset = 0
        self.database_up = False
        self.last_commit_wall: float | None = None
        self.failure: BaseException | None = None
        if spool is not None:
            metrics.spool_bytes.set(spool.size_bytes)

    # -- control (pipeline thread) -------------------------------------------------------------

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, batch: Batch, *, timeout_s: float | None = None) -> bool:
        """Queue a batch for writing; False when the writer is still busy after ``timeout_s``.

        Called from one thread (the pipeline's): that order is the order of acknowledgements.
        """
        if self.failure is not None:
            raise RuntimeError("a writer thread died") from self.failure
        try:
            self._queue.put(_Job(self._submitted, batch), timeout=timeout_s)
        except queue.Full:
            return False
        self._submitted += 1
        return True

    def finish(self, *, timeout_s: float) -> bool:
        """Write what is queued, then stop; True when everything was committed or spooled.

        After ``timeout_s`` the writer gives up on what it holds (nothing of it is acknowledged,
        so the broker keeps it) and stops.
        """
        deadline = time.monotonic() + timeout_s
        sentinels = len(self._threads)  # each thread stops at the first one it takes
        while sentinels and any(t.is_alive() for t in self._threads):
            try:
                self._queue.put(_FINISH, timeout=0.05)
                sentinels -= 1
            except queue.Full:
                if time.monotonic() > deadline:
                    break
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        clean = not any(t.is_alive() for t in self._threads) and self._queue.empty()
        if not clean:
            self._abandon.set()
            for thread in self._threads:
                thread.join(10)
        for db in self._databases:
            db.close()
        return clean

    @property
    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    @property
    def spool_bytes(self) -> int:
        return 0 if self._spool is None else self._spool.size_bytes

    @property
    def spool_full(self) -> bool:
        return self._spool is not None and self._spool.size_bytes >= self._spool.max_bytes

    # -- the thread ----------------------------------------------------------------------------

    def _run(self, db: Database) -> None:
        try:
            while not self._abandon.is_set():
                wait = None
                if self._spool is not None and not self._spool.empty:
                    wait = max(0.0, self._backoff.next_attempt - self._clock())
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    self._replay(db)
                    continue
                if item is _FINISH:
                    return
                assert isinstance(item, _Job)
                self._handle(db, item)
        except BaseException as error:  # surfaced by submit(); the service then exits
            self.failure = error
            log.exception("writer thread failed")
            raise

    def _handle(self, db: Database, job: _Job) -> None:
        batch = job.batch
        rejected = batch.rejected()
        while not self._abandon.is_set():
            if self._spool is not None and not self._spool.empty:
                self._replay(db)
            direct = self._spool is None or self._spool.empty
            if (
                direct
                and self._backoff.ready(self._clock())
                and self._write(db, batch.staged_readings(), rejected, readings=batch.readings)
            ):
                self._acks.done(job.number, batch.messages)
                return
            if self._spool is not None and self._spool_append(batch.readings(), rejected):
                self._acks.done(job.number, batch.messages)
                return
            if self._is_stale is not None and self._is_stale(batch):
                # Received on a connection that is gone: the broker sends it all again.
                log.info("dropping a batch from a lost connection", messages=len(batch))
                self._acks.done(job.number, [])
                return
            pause = max(0.01, self._backoff.next_attempt - self._clock())
            self._abandon.wait(min(pause, 1.0))

    def _spool_append(self, readings: list[Reading], rejected: list[RejectedPayload]) -> bool:
        assert self._spool is not None
        with self._spool_lock:
            try:
                appended = self._spool.append(readings, rejected)
            except OSError as error:
                log.error("spool write failed; holding the batch", error=str(error))
                return False
        if appended:
            self._metrics.spooled_batches.inc()
            self._metrics.spool_bytes.set(self._spool.size_bytes)
        return appended

    def _replay(self, db: Database) -> None:
        """Write spooled records in order while the database answers; empty the spool after."""
        spool = self._spool
        if spool is None:
            return
        with self._spool_lock:
            if spool.empty or not self._backoff.ready(self._clock()):
                return
            replayed = 0
            for record in spool.records(self._replay_offset):
                if record.corrupt:
                    log.error(
                        "spool record damaged; recording it as spool_corrupt",
                        detail=record.rejected[0].rejection.detail,
                    )
                if self._abandon.is_set() or not self._write(
                    db, record.readings, record.rejected, readings=record.readings.copy
                ):
                    return
                self._replay_offset = record.end
                replayed += 1
            log.info("spool replayed", records=replayed, bytes=spool.size_bytes)
            spool.clear()
            self._replay_offset = 0
        self._metrics.spool_bytes.set(0)

    def _write(
        self,
        db: Database,
        staged: Sequence[Reading] | StagedReadings,
        rejected: Sequence[RejectedPayload],
        *,
        readings: Callable[[], list[Reading]],
    ) -> bool:
        """Commit rows (splitting out rows the database refuses); False on a transient error.

        ``readings`` gives the rows as objects, needed only to split a refused batch.
        """
        started = time.perf_counter()
        try:
            try:
                result = db.store(staged, rejected)
            except UnstorableDataError as error:
                # The whole batch was just refused: go straight to its halves.
                result = self._store_halves(db, readings(), list(rejected), error)
        except TransientError as error:
            self._backoff.failed(self._clock())
            self._metrics.write_retries.inc()
            if self.database_up or self._backoff.delay_s == self._backoff.initial_s:
                log.warning(
                    "database write failed; retrying", error=str(error)[:300],
                    retry_in_s=round(self._backoff.delay_s, 3),
                )  # fmt: skip
            self.database_up = False
            self._metrics.database_up.set(0)
            return False
        elapsed = time.perf_counter() - started
        if not self.database_up:
            log.info("database writes succeeding")
        self.database_up = True
        self._backoff.succeeded()
        now = time.time()
        self.last_commit_wall = now
        m = self._metrics
        m.database_up.set(1)
        m.last_commit.set(now)
        m.commit_seconds.observe(elapsed)
        m.batch_readings.observe(result.staged)
        m.readings_committed.inc(result.staged)
        m.readings_inserted.inc(result.inserted)
        m.duplicates_dropped.inc(result.duplicates)
        for record in rejected:
            m.rejected.labels(reason=record.rejection.reason.value).inc()
        if isinstance(staged, StagedReadings):
            stamps = staged.observed_times_s()
        else:
            stamps = np.fromiter(
                (r.time.timestamp() for r in staged if not r.time_estimated), dtype=np.float64
            )
        m.publish_to_commit.observe_many(np.maximum(now - stamps, 0.0))
        return True

    def _store_refusal(
        self, db: Database, row: Reading | RejectedPayload, error: UnstorableDataError
    ) -> StoreResult:
        """Record the one row the database refused as a ``db_refused`` rejection."""
        reason = storable(str(error))[:500]
        if isinstance(row, Reading):
            r = row
            topic = uplink_topic(self._topic_root, r.sensor_id)
            body = {"sensor": r.sensor_id, "ts": r.time.isoformat(), "values": {r.metric: r.value}}
            received_at = datetime.now(UTC)
            payload, what = orjson.dumps(body), f"the reading {r.metric} of {r.sensor_id}"
        else:
            j = row
            topic, payload, received_at = storable(j.topic), j.payload, j.received_at
            what = f"the {j.rejection.reason.value} record of this payload"
        record = RejectedPayload(
            topic=topic,
            payload=payload,
            received_at=received_at,
            rejection=Rejection(Reason.DB_REFUSED, f"the database refused {what}: {reason}"),
        )
        try:
            db.store([], [record])
        except UnstorableDataError as again:
            log.error(
                "database refused a row, and its rejection record too; dropping it",
                error=reason[:300], again=str(again)[:300], topic=topic,
            )  # fmt: skip
            self._metrics.unstorable.inc()
            return StoreResult(staged=0, inserted=0, rejected=0)
        log.warning("database refused a row; recorded as db_refused", error=reason[:300],
                    topic=topic)  # fmt: skip
        self._metrics.rejected.labels(reason=Reason.DB_REFUSED.value).inc()
        return StoreResult(staged=0, inserted=0, rejected=1)

    def _store_splitting(
        self, db: Database, readings: list[Reading], rejected: list[RejectedPayload]
    ) -> StoreResult:
        try:
            return db.store(readings, rejected)
        except UnstorableDataError as error:
            return self._store_halves(db, readings, rejected, error)

    def _store_halves(
        self,
        db: Database,
        readings: list[Reading],
        rejected: list[RejectedPayload],
        error: UnstorableDataError,
    ) -> StoreResult:
        """Rows the database refused (with ``error``) stored in halves, down to the bad row."""
        rows = len(readings) + len(rejected)
        if rows == 0:
            return StoreResult(staged=0, inserted=0, rejected=0)
        if rows == 1:
            return self._store_refusal(db, readings[0] if readings else rejected[0], error)
        half_r, half_j = len(readings) // 2, len(rejected) // 2
        if half_r == 0 and half_j == 0:
            half_r = len(readings)  # one reading and one rejection: split between them
        first = self._store_splitting(db, readings[:half_r], rejected[:half_j])
        second = self._store_splitting(db, readings[half_r:], rejected[half_j:])
        return StoreResult(
            staged=first.staged + second.staged,
            inserted=first.inserted + second.inserted,
            rejected=first.rejected + second.rejected,
        )
