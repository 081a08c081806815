"""Batching stage: decoded messages gathered into batches flushed by size, age or window.

A batch is flushed when it holds ``max_readings`` readings, when its oldest message is
``max_age_s`` old, when it holds ``max_messages`` messages (kept below the in-flight window:
the broker sends nothing more until something is acknowledged, so a batch waiting for more
messages than the window allows would wait for ever) or ``max_bytes`` of raw payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ingest.decoder import DecodedMessage
from ingest.source import Inbound
from pantau.db.store import RejectedPayload, StagedReadings
from pantau.payload import Reading


@dataclass(slots=True)
class Batch:
    """Messages written (and then acknowledged) together.

    Built with :meth:`add`, a batch also keeps its readings encoded for COPY as they arrive
    (on the decoding thread), so the writer only streams them.
    """

    items: list[DecodedMessage] = field(default_factory=list)
    readings_count: int = 0
    payload_bytes: int = 0
    opened_mono: float = 0.0
    staged: StagedReadings | None = None
    staging_failed: bool = False

    def add(self, item: DecodedMessage) -> None:
        if not self.items:
            self.opened_mono = item.message.received_mono
        self.items.append(item)
        self.readings_count += len(item.readings)
        self.payload_bytes += len(item.message.payload)
        if item.readings and not self.staging_failed:
            if self.staged is None:
                self.staged = StagedReadings()
            try:
                self.staged.add(item.readings)
            except (TypeError, ValueError, OverflowError, struct.error):
                # Never expected of decoded readings; the writer then stores them as objects,
                # where the database's refusal isolates the offending row.
                self.staging_failed = True

    @property
    def messages(self) -> list[Inbound]:
        return [item.message for item in self.items]

    def readings(self) -> list[Reading]:
        return [reading for item in self.items for reading in item.readings]

    def staged_readings(self) -> StagedReadings | list[Reading]:
        """The readings encoded for COPY, or as objects when they could not be encoded here."""
        if self.staged is not None and self.staged.count == self.readings_count:
            return self.staged
        return self.readings()

    def rejected(self) -> list[RejectedPayload]:
        return [record for item in self.items for record in item.rejected]

    def __len__(self) -> int:
        return len(self.items)


class Batcher:
    """Accumulates decoded messages; says when the current batch is due."""

    def __init__(
        self, *, max_readings: int, max_age_s: float, max_messages: int, max_bytes: int
    ) -> None:
        if min(max_readings, max_messages, max_bytes) < 1 or max_age_s < 0:
            raise ValueError("batch limits must be positive")
        self.max_readings = max_readings
        self.max_age_s = max_age_s
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._batch = Batch()

    def __len__(self) -> int:
        return len(self._batch)

    def add(self, item: DecodedMessage) -> None:
        self._batch.add(item)

    def full(self) -> bool:
        """A size limit is reached (the age limit aside)."""
        batch = self._batch
        return (
            batch.readings_count >= self.max_readings
            or len(batch.items) >= self.max_messages
            or batch.payload_bytes >= self.max_bytes
        )

    def deadline(self) -> float | None:
        """Monotonic time at which the current batch is due by age; None when empty."""
        if not self._batch.items:
            return None
        return self._batch.opened_mono + self.max_age_s

    def due(self, now_mono: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and (self.full() or now_mono >= deadline)

    def take(self) -> Batch | None:
        """Hand over the current batch (None when empty) and start a new one."""
        if not self._batch.items:
            return None
        batch, self._batch = self._batch, Batch()
        return batch
