"""The alert service's own MQTT session: every uplink, acknowledged only once what it caused is
committed, and the client its alerts are published through.

A fixed client id with ``clean_start=False`` and a session expiry makes the broker keep what
arrives while the service is down (or a standby is taking over), so a reading is evaluated even
if it came during a restart. Redelivered messages are harmless: rule state only moves forward in
observation time. A message received on an earlier connection is never acknowledged on a later
one (the broker sends it again and that copy is acknowledged): :class:`pantau.mqtt.ManualAckSession`,
the session ingest subscribes with too.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

from pantau.logs import get_logger
from pantau.mqtt import ManualAckSession, SessionError, message_topic, mqtt_client
from pantau.settings import MqttSettings

log = get_logger(__name__)


class Message(NamedTuple):
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at: float  # wall clock, epoch seconds


# The broker could not be reached or refused the session.
SourceError = SessionError


class AlertSession(ManualAckSession):
    """Subscribes to ``ROOT/up/+`` (manual acknowledgement) and publishes the service's topics."""

    _log = log

    def __init__(self, *, settings: MqttSettings, client_id: str, receive_maximum: int) -> None:
        super().__init__(
            settings=settings,
            client_id=client_id,
            receive_maximum=receive_maximum,
            topic_filter=settings.uplink_filter,
        )
        self.settings = settings
        self.client_id = client_id
        self.receive_maximum = receive_maximum
        self.inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._client.max_inflight_messages_set(1_000)
        # Alerts go out on a connection of their own: its network thread never waits behind
        # the thousands of uplink messages a second the subscribing one is busy receiving.
        self._out = mqtt_client(settings, client_id=f"{client_id}-out"[:64])
        self._out.max_inflight_messages_set(1_000)
        self._out_connected = threading.Event()
        self._out.on_connect = lambda client, *args: self._out_connected.set()

    def start(self) -> None:
        """Connect (resuming the session), subscribe, start the network threads."""
        self._connect(self._out)
        self._out.loop_start()
        try:
            super().start()
        except SessionError:
            self._out.loop_stop()
            raise

    def stop(self) -> None:
        """Disconnect normally (the broker keeps the session and what is unacknowledged)."""
        super().stop()
        self._out.disconnect()
        self._out.loop_stop()

    def ack(self, messages: list[Message]) -> None:
        """Acknowledge messages whose outcome is committed (those of the current connection)."""
        with self._lock:
            self._acknowledge(messages)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1 (queued by paho while disconnected); ``is_published()`` of the
        result turns true once the broker has acknowledged it."""
        return self._out.publish(topic, payload, qos=1, retain=retain)

    def _ready(self) -> bool:
        return self._out_connected.is_set()

    # -- paho callbacks (network thread) --------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            generation = self._generation
        self.inbox.put(
            Message(
                message_topic(message), bytes(message.payload), message.mid, message.qos,
                generation, time.time(),
            )
        )  # fmt: skip
