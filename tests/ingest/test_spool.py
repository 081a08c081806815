"""The outage spool: order, durability framing, torn-record recovery and the size cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

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


def test_corrupt_record_ends_the_valid_part(tmp_path: Path) -> None:
    spool = Spool(directory=tmp_path, max_bytes=10**6)
    spool.open()
    spool.append(_readings(2), [])
    first_end = spool.size_bytes
    spool.append(_readings(2, 2), [])
    spool.close()
    path = tmp_path / SPOOL_FILE
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the last record's body: checksum mismatch
    path.write_bytes(bytes(data))
    reopened = Spool(directory=tmp_path, max_bytes=10**6)
    assert reopened.open() == 1
    assert reopened.size_bytes == first_end


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
