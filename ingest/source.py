"""The MQTT source: a persistent MQTT v5 session whose messages are acknowledged only on request.

paho's network thread calls ``on_message``; all it does here is hand the message to the
pipeline. Acknowledgements come later, from the writer, once the message's readings (or its
rejection) are committed. The broker sends at most Receive Maximum unacknowledged messages, so
holding acknowledgements is what bounds ingest's memory.

Every connection has a generation number (:class:`pantau.mqtt.ManualAckSession`, the session
the alert service subscribes with too): a message received on an earlier connection is never
acknowledged; the broker sends it again after the reconnect, and that copy is acknowledged.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

from pantau.logs import get_logger
from pantau.mqtt import ManualAckSession, SessionError, message_topic
from pantau.settings import MqttSettings
from pantau.topics import shared_filter

log = get_logger(__name__)


class Inbound(NamedTuple):
    """One received MQTT message, as the pipeline sees it.

    A named tuple: one is built per message on paho's network thread, and cheaply.
    """

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    # Wall clock (for readings without a time) and monotonic clock (for batch age).
    received_at: float
    received_mono: float


# The broker could not be reached or refused the session.
SourceError = SessionError


def subscription_filter(settings: MqttSettings) -> str:
    """The topic filter ingest subscribes to: shared when a group is configured."""
    if settings.shared_group:
        return shared_filter(settings.shared_group, settings.uplink_filter)
    return settings.uplink_filter


class SourceBase(ABC):
    """What every MQTT source keeps: its settings, where messages go, and the connection count.

    Subclasses: :class:`MqttSource` (a thread of this process) and
    :class:`ingest.receiver.ProcessSource` (a process of its own).
    """

    def __init__(
        self,
        *,
        settings: MqttSettings,
        receive_maximum: int,
        deliver: Callable[[Inbound], None],
        on_state: Callable[[bool], None] | None = None,
        first_generation: int = 0,
    ) -> None:
        self._settings = settings
        self._receive_maximum = receive_maximum
        self._deliver = deliver
        self._on_state = on_state
        self._lock = threading.Lock()
        # Connections are numbered from here: a source that replaces another (a restarted MQTT
        # process) starts above the numbers the old one used.
        self._generation = first_generation
        self._inflight = 0

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def inflight(self) -> int:
        """Messages received on the current connection and not acknowledged yet."""
        return self._inflight

    @property
    @abstractmethod
    def connected(self) -> bool: ...

    @abstractmethod
    def start(self) -> None:
        """Connect, subscribe and start receiving; raise SourceError on failure."""

    @abstractmethod
    def stop(self) -> None:
        """Send the acknowledgements given so far, disconnect (keeping the session), stop."""

    @abstractmethod
    def ack(self, messages: list[Inbound]) -> int:
        """Acknowledge committed messages of the current connection; returns how many were."""

    def _acknowledgeable(self, messages: list[Inbound]) -> list[int]:
        """Packet ids of the messages that belong to the current connection (lock held)."""
        generation = self._generation
        return [m.mid for m in messages if m.generation == generation and m.qos == 1]


class MqttSource(ManualAckSession, SourceBase):
    """A persistent-session subscriber with manual acknowledgement (:class:`ManualAckSession`)."""

    _log = log

    def __init__(
        self,
        *,
        settings: MqttSettings,
        receive_maximum: int,
        deliver: Callable[[Inbound], None],
        on_state: Callable[[bool], None] | None = None,
        first_generation: int = 0,
    ) -> None:
        # The session keeps the settings, the lock and the connection numbers SourceBase
        # describes; what is left of SourceBase's state is set here.
        ManualAckSession.__init__(
            self, settings=settings, client_id=settings.client_id,
            receive_maximum=receive_maximum, topic_filter=subscription_filter(settings),
            on_state=on_state, first_generation=first_generation,
        )  # fmt: skip
        self._deliver = deliver
        self._inflight = 0

    def ack(self, messages: list[Inbound]) -> int:
        """Acknowledge committed messages of the current connection; returns how many were."""
        with self._lock:
            done = self._acknowledge(messages)
            self._inflight = max(0, self._inflight - done)
        return done

    def _new_connection(self) -> None:
        super()._new_connection()
        self._inflight = 0

    # -- paho callbacks (network thread) --------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            generation = self._generation
            if message.qos > 0:
                self._inflight += 1
        self._deliver(
            Inbound(
                topic=message_topic(message),
                payload=bytes(message.payload),
                mid=message.mid,
                qos=message.qos,
                generation=generation,
                received_at=time.time(),
                received_mono=time.monotonic(),
            )
        )
