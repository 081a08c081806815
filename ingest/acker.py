"""Acknowledgement stage: committed (or durably spooled) messages are acknowledged, and only
those.

It is the one place acknowledgements come from, always after the commit or the spool's fsync,
so a message is never acknowledged before it is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ingest.source import Inbound


class AckTarget(Protocol):
    """What can acknowledge messages: the MQTT source."""

    def ack(self, messages: list[Inbound]) -> int: ...

    @property
    def inflight(self) -> int: ...


class Acker:
    """Acknowledges safe messages and keeps count."""

    def __init__(self, target: AckTarget) -> None:
        self._target = target
        self.acked = 0
        self.skipped = 0

    def ack(self, messages: Sequence[Inbound]) -> int:
        """Acknowledge messages whose content is committed; returns how many were sent.

        Messages received on an earlier connection are skipped: the broker sends them again.
        """
        done = self._target.ack(list(messages))
        self.acked += done
        self.skipped += len(messages) - done
        return done

    @property
    def inflight(self) -> int:
        return self._target.inflight
