"""The alert service's own MQTT session: every uplink, acknowledged only once what it caused is
committed, and the client its alerts are published through.

A fixed client id with ``clean_start=False`` and a session expiry makes the broker keep what
arrives while the service is down (or a standby is taking over), so a reading is evaluated even
if it came during a restart. Redelivered messages are harmless: rule state only moves forward in
observation time. A message received on an earlier connection is never acknowledged on a later
one (the broker sends it again and that copy is acknowledged).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from pantau.logs import get_logger
from pantau.mqtt import message_topic, mqtt_client, persistent_session, send_pubacks
from pantau.settings import MqttSettings

log = get_logger(__name__)


class Message(NamedTuple):
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at: float  # wall clock, epoch seconds


class SourceError(RuntimeError):
    """The broker could not be reached or refused the session."""


class AlertSession:
    """Subscribes to ``ROOT/up/+`` (manual acknowledgement) and publishes the service's topics."""

    def __init__(self, *, settings: MqttSettings, client_id: str, receive_maximum: int) -> None:
        self.settings = settings
        self.client_id = client_id
        self.receive_maximum = receive_maximum
        self.inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._generation = 0
        self._subscribed = threading.Event()
        self._connected = threading.Event()
        self._refused: str | None = None
        client = self._new_client(client_id, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        # Alerts go out on a connection of their own: its network thread never waits behind
        # the thousands of uplink messages a second the subscribing one is busy receiving.
        self._out = self._new_client(f"{client_id}-out"[:64], manual_ack=False)
        self._out_connected = threading.Event()
        self._out.on_connect = lambda client, *args: self._out_connected.set()

    def _new_client(self, client_id: str, *, manual_ack: bool) -> mqtt.Client:
        client = mqtt_client(self.settings, client_id=client_id, manual_ack=manual_ack)
        client.max_inflight_messages_set(1_000)
        return client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect (resuming the session), subscribe, start the network thread."""
        try:
            self._out.connect(
                self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s
            )
            self._client.connect(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive_s,
                clean_start=False,
                properties=persistent_session(self.settings, receive_maximum=self.receive_maximum),
            )
        except OSError as error:
            raise SourceError(f"cannot reach the broker at {self.settings.url}: {error}") from None
        self._out.loop_start()
        self._client.loop_start()
        deadline = time.monotonic() + self.settings.connect_timeout_s
        while not (self._subscribed.wait(0.05) and self._out_connected.is_set()):
            if self._refused is not None or time.monotonic() > deadline:
                self._client.loop_stop()
                self._out.loop_stop()
                raise SourceError(self._refused or f"no session with {self.settings.url}")

    def stop(self) -> None:
        """Disconnect normally (the broker keeps the session and what is unacknowledged)."""
        with self._lock:
            self._generation += 1
        if self._connected.is_set():
            self._client.disconnect(
                reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection")
            )
        self._client.loop_stop()
        self._out.disconnect()
        self._out.loop_stop()

    def ack(self, messages: list[Message]) -> None:
        """Acknowledge messages whose outcome is committed (those of the current connection)."""
        with self._lock:
            current = self._generation
            send_pubacks(
                self._client, [m.mid for m in messages if m.qos and m.generation == current]
            )

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1 (queued by paho while disconnected); ``is_published()`` of the
        result turns true once the broker has acknowledged it."""
        return self._out.publish(topic, payload, qos=1, retain=retain)

    # -- paho callbacks (network thread) --------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refused = f"broker refused the connection: {reason}"
            return
        with self._lock:
            self._generation += 1
        self._connected.set()
        log.info("mqtt connected", client_id=self.client_id, session_present=flags.session_present)
        result, _ = client.subscribe(self.settings.uplink_filter, options=SubscribeOptions(qos=1))
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("mqtt subscribe failed", code=str(result))

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self._refused = f"broker refused the subscription: {', '.join(failed)}"
            return
        self._subscribed.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._generation += 1
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            generation = self._generation
        self.inbox.put(
            Message(
                message_topic(message), bytes(message.payload), message.mid, message.qos,
                generation, time.time(),
            )
        )  # fmt: skip
