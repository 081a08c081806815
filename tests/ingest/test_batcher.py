"""Batches flush by readings, age, message count (the window) and bytes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.batcher import Batcher
from ingest.decoder import DecodedMessage
from pantau.payload import Reading
from tests.ingest.helpers import inbound


def _item(readings: int, payload: bytes = b"{}") -> DecodedMessage:
    now = datetime.now(UTC)
    return DecodedMessage(
        message=inbound("t/up/x", payload),
        readings=[Reading.at(now, "x", f"m{i}", float(i)) for i in range(readings)],
    )


def test_flush_by_readings() -> None:
    batcher = Batcher(max_readings=10, max_age_s=60, max_messages=100, max_bytes=10**6)
    for _ in range(3):
        batcher.add(_item(3))
    assert not batcher.full()
    batcher.add(_item(3))
    assert batcher.full()
    batch = batcher.take()
    assert batch is not None
    assert batch.readings_count == 12 and len(batch.readings()) == 12 and len(batch) == 4
    assert batcher.take() is None
    assert batcher.deadline() is None


def test_flush_by_age_from_the_oldest_message() -> None:
    batcher = Batcher(max_readings=1000, max_age_s=0.5, max_messages=100, max_bytes=10**6)
    item = _item(1)
    batcher.add(item)
    batcher.add(_item(1))
    opened = item.message.received_mono
    assert batcher.deadline() == pytest.approx(opened + 0.5)
    assert not batcher.due(opened + 0.4)
    assert batcher.due(opened + 0.5)


def test_flush_by_messages_keeps_batches_inside_the_window() -> None:
    batcher = Batcher(max_readings=1000, max_age_s=60, max_messages=3, max_bytes=10**6)
    for _ in range(2):
        batcher.add(_item(0))  # rejected messages count against the window as well
    assert not batcher.full()
    batcher.add(_item(0))
    assert batcher.due(0)


def test_flush_by_bytes() -> None:
    batcher = Batcher(max_readings=1000, max_age_s=60, max_messages=100, max_bytes=1000)
    batcher.add(_item(1, b"x" * 600))
    assert not batcher.full()
    batcher.add(_item(1, b"x" * 600))
    assert batcher.full()


def test_zero_age_flushes_every_message() -> None:
    batcher = Batcher(max_readings=1000, max_age_s=0, max_messages=100, max_bytes=1000)
    item = _item(1)
    batcher.add(item)
    assert batcher.due(item.message.received_mono)


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="positive"):
        Batcher(max_readings=0, max_age_s=1, max_messages=1, max_bytes=1)
