"""The outage spool: decoded batches kept on disk while the database is away.

An append-only file of records, fsync'd before the batch's messages are acknowledged, replayed
in the order written once the database is back; the file is emptied when all of them are
committed. Replaying a record twice (a crash after the commit, before the file was emptied)
stores nothing twice: the write path is idempotent.

Each record is framed so that one damaged record costs only itself: ``PSP2 | length | crc32 of
the body | crc32 of these 12 header bytes | body`` (little-endian; the body is JSON of the
batch's readings and rejections). A reader that meets a frame failing its checks scans forward
to the next frame whose header and body check out and goes on from there; the damaged bytes
become a ``spool_corrupt`` rejection (their first MiB kept), logged and counted, since their
messages were acknowledged and cannot come back. A crash while appending leaves a torn last
record (a valid header whose body the file ends inside, or a partial header): opening the spool
cuts it off, as its messages were never acknowledged and the broker sends them again.

Files of the previous format (``PSP1 | length | crc32 | body``, no header checksum), which an
upgrade during an outage finds, are read the same way; new records are always ``PSP2``.
"""

from __future__ import annotations

import base64
import json
import mmap
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from pantau.db.store import RejectedPayload
from pantau.logs import get_logger
from pantau.payload import Reading, Reason, Rejection, from_micros, to_micros

log = get_logger(__name__)

MAGIC = b"PSP2"
_HEADER = struct.Struct("<4sIII")  # magic, body length, body crc32, crc32 of the first 12 bytes
# The previous format, still read: a spool written before an upgrade is replayed after it.
MAGIC_V1 = b"PSP1"
_HEADER_V1 = struct.Struct("<4sII")
SPOOL_FILE = "spool.dat"
# Of a damaged stretch, this much is kept in its rejection record (the rest is only counted).
CORRUPT_KEPT_BYTES = 1024 * 1024


class SpoolError(RuntimeError):
    """The spool directory cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One spooled batch (or a damaged stretch, as its rejection) and where the next starts."""

    readings: list[Reading]
    rejected: list[RejectedPayload]
    end: int
    corrupt: bool = False


def encode_record(readings: Sequence[Reading], rejected: Sequence[RejectedPayload]) -> bytes:
    """One framed spool record."""
    body = json.dumps(
        {
            "r": [[r.time_us, r.sensor_id, r.metric, r.value, r.time_estimated] for r in readings],
            "j": [
                [
                    j.topic,
                    base64.b64encode(j.payload).decode("ascii"),
                    to_micros(j.received_at),
                    j.rejection.reason.value,
                    j.rejection.detail,
                ]
                for j in rejected
            ],
        },
        separators=(",", ":"),
    ).encode()
    head = struct.pack("<4sII", MAGIC, len(body), zlib.crc32(body))
    return head + struct.pack("<I", zlib.crc32(head)) + body


def _decode_body(body: bytes) -> tuple[list[Reading], list[RejectedPayload]]:
    data: dict[str, Any] = json.loads(body)
    readings = [
        Reading(int(t), sensor, metric, float(value), bool(estimated))
        for t, sensor, metric, value, estimated in data["r"]
    ]
    rejected = [
        RejectedPayload(
            topic=topic,
            payload=base64.b64decode(payload),
            received_at=from_micros(received),
            rejection=Rejection(Reason(reason), detail),
        )
        for topic, payload, received, reason, detail in data["j"]
    ]
    return readings, rejected


class Spool:
    """A size-capped, append-only, fsync'd file of batches."""

    def __init__(self, *, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.path = directory / SPOOL_FILE
        self._file: BinaryIO | None = None
        self._size = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def empty(self) -> bool:
        return self._size == 0

    def open(self) -> int:
        """Open (creating) the spool, cutting off a torn last record; returns records held.

        Damaged records found on the way are logged here and replayed as rejections.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a+b")
        except OSError as error:
            raise SpoolError(f"cannot open the spool {self.path}: {error}") from None
        count = 0
        valid_end = 0
        for record in self._scan(0):
            if record.corrupt:
                log.error(
                    "spool: a damaged record will be skipped and recorded as spool_corrupt",
                    path=str(self.path), detail=record.rejected[0].rejection.detail,
                )  # fmt: skip
            else:
                count += 1
            valid_end = record.end
        actual = self.path.stat().st_size
        if actual != valid_end:
            log.warning(
                "spool: cutting off a torn last record (never acknowledged)",
                path=str(self.path), kept_bytes=valid_end, dropped_bytes=actual - valid_end,
            )  # fmt: skip
            self._file.truncate(valid_end)
            os.fsync(self._file.fileno())
        self._size = valid_end
        return count

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, readings: Sequence[Reading], rejected: Sequence[RejectedPayload]) -> bool:
        """Write one batch durably; False (nothing written) when it would exceed the cap."""
        record = encode_record(readings, rejected)
        if self._size + len(record) > self.max_bytes:
            return False
        file = self._require()
        file.seek(0, os.SEEK_END)
        try:
            file.write(record)
            file.flush()
            os.fsync(file.fileno())
        except OSError:
            # Leave no partial record behind: the next append would follow garbage.
            file.truncate(self._size)
            raise
        self._size += len(record)
        return True

    def records(self, start: int = 0) -> Iterator[SpoolRecord]:
        """Records from byte offset ``start`` on, in the order written."""
        return self._scan(start, limit=self._size if self._file is not None else None)

    def clear(self) -> None:
        """Forget every record (all of them are committed)."""
        file = self._require()
        file.truncate(0)
        os.fsync(file.fileno())
        self._size = 0

    def _require(self) -> BinaryIO:
        if self._file is None:
            raise SpoolError("spool is not open")
        return self._file

    def _scan(self, start: int, limit: int | None = None) -> Iterator[SpoolRecord]:
        """Records from ``start`` to ``limit`` (default: the end of the file): each intact
        frame, each damaged stretch between intact ones as a corrupt record; a torn last
        frame ends the scan before it."""
        with self.path.open("rb") as reader:
            size = os.fstat(reader.fileno()).st_size
            end = size if limit is None else min(limit, size)
            if end <= start:
                return
            with mmap.mmap(reader.fileno(), end, access=mmap.ACCESS_READ) as view:
                offset = start
                while offset < end:
                    frame = _frame(view, offset, end)
                    if frame is not None:
                        yield frame
                        offset = frame.end
                        continue
                    following = _next_frame(view, offset + 1, end)
                    if following is None and _torn_tail(view, offset, end):
                        return
                    yield _damaged(view, offset, end if following is None else following)
                    if following is None:
                        return
                    offset = following


def _frame(view: mmap.mmap, offset: int, end: int) -> SpoolRecord | None:
    """The intact frame at ``offset``, or None."""
    magic = view[offset : offset + 4]
    if magic == MAGIC and offset + _HEADER.size <= end:
        _, length, checksum, header_sum = _HEADER.unpack_from(view, offset)
        if zlib.crc32(view[offset : offset + 12]) != header_sum:
            return None
        body_start = offset + _HEADER.size
    elif magic == MAGIC_V1 and offset + _HEADER_V1.size <= end:
        _, length, checksum = _HEADER_V1.unpack_from(view, offset)
        body_start = offset + _HEADER_V1.size
    else:
        return None
    body = view[body_start : body_start + length]
    if len(body) < length or body_start + length > end or zlib.crc32(body) != checksum:
        return None
    try:
        readings, rejected = _decode_body(body)
    except (ValueError, KeyError, TypeError):
        return None
    return SpoolRecord(readings=readings, rejected=rejected, end=body_start + length)


def _torn_tail(view: mmap.mmap, offset: int, end: int) -> bool:
    """Whether the last bytes, from ``offset``, are what a crash while appending leaves: a
    partial header, or an intact header announcing more body than the file holds."""
    magic = view[offset : offset + 4]
    if end - offset < _HEADER_V1.size or (magic == MAGIC and end - offset < _HEADER.size):
        return True
    if magic == MAGIC:
        _, length, _, header_sum = _HEADER.unpack_from(view, offset)
        intact = zlib.crc32(view[offset : offset + 12]) == header_sum
        return intact and offset + _HEADER.size + int(length) > end
    if magic == MAGIC_V1:
        _, length, _ = _HEADER_V1.unpack_from(view, offset)
        return offset + _HEADER_V1.size + int(length) > end
    return False


def _next_frame(view: mmap.mmap, start: int, end: int) -> int | None:
    """Offset of the next intact frame at or after ``start``, or None."""
    position = start
    while position < end:
        found = (view.find(MAGIC, position, end), view.find(MAGIC_V1, position, end))
        if max(found) < 0:
            return None
        position = min(i for i in found if i >= 0)
        if _frame(view, position, end) is not None:
            return position
        position += 1
    return None


def _damaged(view: mmap.mmap, offset: int, end: int) -> SpoolRecord:
    """A damaged stretch of the spool as the rejection that records it."""
    kept = view[offset : min(end, offset + CORRUPT_KEPT_BYTES)]
    detail = (
        f"{end - offset} bytes at offset {offset} of the outage spool failed their checksums: "
        "the readings and rejections they held are lost"
        + ("" if len(kept) == end - offset else f" (the first {len(kept)} bytes are kept here)")
    )
    record = RejectedPayload(
        topic=f"{SPOOL_FILE}@{offset}",
        payload=bytes(kept),
        received_at=datetime.now(UTC),
        rejection=Rejection(Reason.SPOOL_CORRUPT, detail),
    )
    return SpoolRecord(readings=[], rejected=[record], end=end, corrupt=True)
