"""The outage spool: decoded batches kept on disk while the database is away.

An append-only file of records, each ``MAGIC | length | crc32 | body`` (body: JSON of the
batch's readings and rejections), fsync'd before the batch's messages are acknowledged. Records
are replayed in the order written once the database is back; the file is emptied when all of
them are committed. A crash while appending leaves a torn last record: opening the spool finds
it by its length or checksum and cuts it off (its messages were never acknowledged, so the
broker sends them again). Replaying a record twice (a crash after the commit, before the file
was emptied) stores nothing twice: the write path is idempotent.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pantau.db.store import RejectedPayload
from pantau.logs import get_logger
from pantau.payload import Reading, Reason, Rejection, from_micros, to_micros

log = get_logger(__name__)

MAGIC = b"PSP1"
_HEADER = struct.Struct("<4sII")
SPOOL_FILE = "spool.dat"


class SpoolError(RuntimeError):
    """The spool directory cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One spooled batch and where the next record starts."""

    readings: list[Reading]
    rejected: list[RejectedPayload]
    end: int


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
    return _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


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
        """Open (creating) the spool, cutting off a torn last record; returns records held."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a+b")
        except OSError as error:
            raise SpoolError(f"cannot open the spool {self.path}: {error}") from None
        count, valid_end = 0, 0
        for record in self._scan(0):
            count += 1
            valid_end = record.end
        actual = self.path.stat().st_size
        if actual != valid_end:
            log.warning(
                "spool: cutting off a torn or corrupt tail", path=str(self.path),
                kept_bytes=valid_end, dropped_bytes=actual - valid_end,
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
        with self.path.open("rb") as reader:
            reader.seek(start)
            offset = start
            while limit is None or offset < limit:
                header = reader.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return
                magic, length, checksum = _HEADER.unpack(header)
                if magic != MAGIC:
                    return
                body = reader.read(length)
                if len(body) < length or zlib.crc32(body) != checksum:
                    return
                try:
                    readings, rejected = _decode_body(body)
                except (ValueError, KeyError, TypeError):
                    return
                offset += _HEADER.size + length
                yield SpoolRecord(readings=readings, rejected=rejected, end=offset)
