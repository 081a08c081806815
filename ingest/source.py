"""The MQTT source: a persistent MQTT v5 session whose messages are acknowledged only on request.

paho's network thread calls ``on_message``; all it does here is hand the message to the
pipeline. Acknowledgements come later, from the writer, once the message's readings (or its
rejection) are committed. The broker sends at most Receive Maximum unacknowledged messages, so
holding acknowledgements is what bounds ingest's memory.

Every connection has a generation number. A message that was received on an earlier connection
is never acknowledged: the broker sends it again after the reconnect (with the same content),
and that copy is the one acknowledged, so a packet id is never acknowledged on a connection it
does not belong to.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
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


class SourceError(RuntimeError):
    """The broker could not be reached or refused the session."""


def subscription_filter(settings: MqttSettings) -> str:
    """The topic filter ingest subscribes to: shared when a group is configured."""
    if settings.shared_group:
        return f"$share/{settings.shared_group}/{settings.uplink_filter}"
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


class MqttSource(SourceBase):
    """A persistent-session subscriber with manual acknowledgement."""

    def __init__(
        self,
        *,
        settings: MqttSettings,
        receive_maximum: int,
        deliver: Callable[[Inbound], None],
        on_state: Callable[[bool], None] | None = None,
        first_generation: int = 0,
    ) -> None:
        super().__init__(
            settings=settings, receive_maximum=receive_maximum, deliver=deliver,
            on_state=on_state, first_generation=first_generation,
        )  # fmt: skip
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._closing = False
        self._refused: str | None = None
        client = mqtt_client(settings, client_id=settings.client_id, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client

    # -- state ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, subscribe and start the network thread; raise SourceError on failure."""
        try:
            self._client.connect(
                self._settings.host,
                self._settings.port,
                keepalive=self._settings.keepalive_s,
                clean_start=False,
                properties=persistent_session(
                    self._settings, receive_maximum=self._receive_maximum
                ),
            )
        except OSError as error:
            raise SourceError(f"cannot reach the broker at {self._settings.url}: {error}") from None
        self._client.loop_start()
        deadline = time.monotonic() + self._settings.connect_timeout_s
        while not self._subscribed.wait(0.05):
            if self._refused is not None or time.monotonic() > deadline:
                self._client.loop_stop()
                raise SourceError(
                    self._refused
                    or f"no session with the broker at {self._settings.url} after "
                    f"{self._settings.connect_timeout_s:g} s"
                )

    def stop(self) -> None:
        """Disconnect normally, so that the broker keeps the session, and stop the thread.

        Acknowledgements queued before this call are sent first: paho writes packets in order.
        """
        with self._lock:
            self._closing = True
            self._generation += 1
        if self._connected.is_set():
            self._client.disconnect(
                reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection")
            )
        self._client.loop_stop()
        self._connected.clear()

    # -- acknowledgement -----------------------------------------------------------------------

    def ack(self, messages: list[Inbound]) -> int:
        """Acknowledge committed messages of the current connection; returns how many were."""
        with self._lock:
            mids = self._acknowledgeable(messages)
            send_pubacks(self._client, mids)
            self._inflight = max(0, self._inflight - len(mids))
        return len(mids)

    # -- paho callbacks (network thread) --------------------------------------------------------

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
            log.error("mqtt connection refused", reason=str(reason))
            return
        with self._lock:
            self._generation += 1
            self._inflight = 0
        self._connected.set()
        log.info(
            "mqtt connected",
            session_present=flags.session_present,
            client_id=self._settings.client_id,
            receive_maximum=self._receive_maximum,
        )
        # Subscribing again to a resumed session is harmless and covers a session the broker
        # expired while ingest was away.
        result, _ = client.subscribe(
            subscription_filter(self._settings), options=SubscribeOptions(qos=1)
        )
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("mqtt subscribe failed", code=str(result))
        if self._on_state is not None:
            self._on_state(True)

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
            log.error("mqtt subscription refused", reasons=failed)
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
            self._inflight = 0
        self._connected.clear()
        if not self._closing:
            log.warning("mqtt disconnected; reconnecting", reason=str(reason))
        if self._on_state is not None:
            self._on_state(False)

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
