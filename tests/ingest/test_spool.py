"""The outage spool: order, durability framing, torn-record recovery, damaged records that cost
only themselves, the previous format, and the size cap."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.spool import SPOOL_FILE, Spool, encode_record
from pantau.db.store import RejectedPayload
from pantau.payload import Reading, Reason, Rejection

T0 = datetime(2025, 1, 15, 3, 0, 0, 123456, tzinfo=UTC)


def _readings(n: int, start: int = 0) -> list[Reading]:
    return [
        Reading.at(T0 + timedelta(seconds=start + i), "fg-a", "water_level", 1.0 + (start + i) / 7)
        for i in range(n)
    ]


def _rejected(tag: bytes) -> RejectedPayload:
    return RejectedPayload(
        topic="t/up/fg-a",
        payload=b"\x00\xff" + tag,
        received_at=T0,
        rejection=Rejection(Reason.MALFORMED_JSON, "bad \u00e9"),
    )


def test_records_come_back_in_order_and_exactly(tmp_path: Path) -> None:
    spool = Spool(directory=tmp_path, max_bytes=10**6)
    assert spool.open() == 0 and spool.empty
    batches = [(_readings(3, i * 3), [_rejected(bytes([i]))]) for i in range(5)]
    for readings, rejected in batches:
        assert spool.append(readings, rejected)
    spool.close()

    reopened = Spool(directory=tmp_path, max_bytes=10**6)
    assert reopened.open() == 5
    got = [(r.readings, r.rejected) for r in reopened.records()]
    assert got == batches
    reopened.clear()
    assert reopened.empty and list(reopened.records()) == []
    assert (tmp_path / SPOOL_FILE).stat().st_size == 0


def test_records_from_an_offset(tmp_path: Path) -> None:
    spool = Spool(directory=tmp_path, max_bytes=10**6)
    spool.open()
    for i in range(3):
        spool.append(_readings(1, i), [])
    first = next(iter(spool.records()))
    rest = list(spool.records(first.end))
    assert [r.readings for r in rest] == [_readings(1, 1), _readings(1, 2)]


def test_torn_last_record_is_cut_off(tmp_path: Path) -> None:
    spool = Spool(directory=tmp_path, max_bytes=10**6)
    spool.open()
    spool.append(_readings(2), [])
    spool.append(_readings(2, 2), [])
    good_size = spool.size_bytes
    spool.close()
    torn = encode_record(_readings(5, 10), [])
    with (tmp_path / SPOOL_FILE).open("ab") as f:
        f.write(torn[: len(torn) // 2])  # the crash hit mid-write

    reopened = Spool(directory=tmp_path, max_bytes=10**6)
    assert reopened.open() == 2
    assert reopened.size_bytes == good_size == (tmp_path / SPOOL_FILE).stat().st_size
    assert reopened.append(_readings(1, 20), [])  # appends after the cut, not after garbage
    reopened.close()
    again = Spool(directory=tmp_path, max_bytes=10**6)
    assert again.open() == 3
    assert [r.readings for r in again.records()][-1] == _readings(1, 20)


def _spool_of(tmp_path: Path, batches: int) -> tuple[Path, list[int]]:
    """A spool file of ``batches`` records (two readings each); where each record starts."""
    spool = Spool(directory=tmp_path, max_bytes=10**6)
    spool.open()
    starts = []
    for i in range(batches):
        starts.append(spool.size_bytes)
        spool.append(_readings(2, 2 * i), [_rejected(bytes([i]))])
    spool.close()
    return tmp_path / SPOOL_FILE, [*starts, spool.size_bytes]


def _damage(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda start, end: end - 3, id="body"),
        pytest.param(lambda start, end: start + 5, id="length"),
        pytest.param(lambda start, end: start + 1, id="magic"),
        pytest.param(lambda start, end: start + 13, id="header-checksum"),
    ],
)
def test_a_corrupt_middle_record_costs_only_itself(
    tmp_path: Path, where: Callable[[int, int], int]
) -> None:
    path, starts = _spool_of(tmp_path, 3)
    damaged = path.read_bytes()[starts[1] : starts[2]]
    _damage(path, where(starts[1], starts[2]))
    spool = Spool(directory=tmp_path, max_bytes=10**6)
    assert spool.open() == 2
    assert spool.size_bytes == starts[3], "nothing is cut: the records after it were kept"
    records = list(spool.records())
    assert [r.corrupt for r in records] == [False, True, False]
    assert [r.readings for r in records] == [_readings(2, 0), [], _readings(2, 4)]
    (rejection,) = records[1].rejected
    assert rejection.rejection.reason is Reason.SPOOL_CORRUPT
    assert len(rejection.payload) == len(damaged) and rejection.payload != damaged
    assert f"{len(damaged)} bytes at offset {starts[1]}" in rejection.rejection.detail
    assert records[1].end == starts[2]
    # Resuming from the damaged record's end gives the rest, as a replay after a restart does.
    assert [r.readings for r in spool.records(records[1].end)] == [_readings(2, 4)]


def test_garbage_between_records_is_skipped(tmp_path: Path) -> None:
    path, starts = _spool_of(tmp_path, 2)
    data = path.read_bytes()
    noise = b"PSP2 not a frame \x00\xff" * 10  # even a false magic is checked, not trusted
    path.write_bytes(data[: starts[1]] + noise + data[starts[1] :])
    spool = Spool(directory=tmp_path, max_bytes=10**6)
    assert spool.open() == 2
    records = list(spool.records())
    assert [r.corrupt for r in records] == [False, True, False]
    assert records[1].rejected[0].payload == noise


def test_a_complete_last_record_with_a_bad_checksum_is_kept_as_damaged(tmp_path: Path) -> None:
    """Not torn (its messages were acknowledged): recorded, not cut off."""
    path, starts = _spool_of(tmp_path, 2)
    _damage(path, starts[2] - 3)
    spool = Spool(directory=tmp_path, max_bytes=10**6)
    assert spool.open() == 1
    assert spool.size_bytes == starts[2]
    assert [r.corrupt for r in spool.records()] == [False, True]


def test_a_spool_of_the_previous_format_is_replayed(tmp_path: Path) -> None:
    """An upgrade during an outage: the old records come back, new ones follow in PSP2."""
    old = [_readings(2), _readings(3, 2)]
    frames = b""
    for readings in old:
        body = encode_record(readings, [])[16:]
        frames += struct.pack("<4sII", b"PSP1", len(body), zlib.crc32(body)) + body
    (tmp_path / SPOOL_FILE).write_bytes(frames)
    spool = Spool(directory=tmp_path, max_bytes=10**6)
    assert spool.open() == 2
    assert spool.append(_readings(1, 9), [])
    spool.close()
    again = Spool(directory=tmp_path, max_bytes=10**6)
    assert again.open() == 3
    assert [r.readings for r in again.records()] == [*old, _readings(1, 9)]
    assert (tmp_path / SPOOL_FILE).read_bytes()[len(frames) :].startswith(b"PSP2")


def test_size_cap_refuses_without_writing(tmp_path: Path) -> None:
    record_size = len(encode_record(_readings(10), []))
    spool = Spool(directory=tmp_path, max_bytes=int(record_size * 2.5))
    spool.open()
    assert spool.append(_readings(10), [])
    assert spool.append(_readings(10, 10), [])
    before = spool.size_bytes
    assert not spool.append(_readings(10, 20), [])
    assert spool.size_bytes == before == (tmp_path / SPOOL_FILE).stat().st_size
    spool.clear()
    assert spool.append(_readings(10, 20), [])
