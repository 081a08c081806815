"""MQTT shared by the services and the benchmarks: the client, the persistent session with manual
acknowledgement that ingest and the alert service subscribe with, and batched PUBACKs."""

from __future__ import annotations

import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from pantau.logs import get_logger
from pantau.settings import MqttSettings

log = get_logger(__name__)

_PUBACK = 0x40


def mqtt_client(
    settings: MqttSettings,
    *,
    client_id: str,
    manual_ack: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> mqtt.Client:
    """An MQTT v5 client for ``settings``: its login (or the one given), TLS for mqtts://, and
    its reconnect back-off. ``manual_ack``: QoS 1 messages are acknowledged only when the
    caller says so (``send_pubacks``)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )  # fmt: skip
    if username is None and settings.username is not None:
        username = settings.username
        if settings.password is not None:
            password = settings.password.get_secret_value()
    if username is not None:
        client.username_pw_set(username, password)
    if settings.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=settings.reconnect_max_delay_s)
    return client


def persistent_session(settings: MqttSettings, *, receive_maximum: int) -> Properties:
    """CONNECT properties of a session the broker keeps ``session_expiry_s`` after a disconnect
    (with what arrives meanwhile), sending at most ``receive_maximum`` messages unacknowledged.
    Connect with ``clean_start=False`` to resume it."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = settings.session_expiry_s
    properties.ReceiveMaximum = receive_maximum
    return properties


def message_topic(message: mqtt.MQTTMessage) -> str:
    """The message's topic. MQTT requires UTF-8; a topic that is not is decoded with
    replacement characters, so that its message is rejected downstream, not lost here."""
    try:
        return message.topic
    except UnicodeDecodeError:
        return message._topic.decode("utf-8", errors="replace")


def send_pubacks(client: mqtt.Client, mids: Sequence[int]) -> None:
    """Acknowledge QoS 1 messages (manual-ack mode) with one socket write for all of them.

    paho's ``ack()`` writes each PUBACK on its own and wakes its network thread for each; at
    thousands of messages a second that is a large share of a consumer's time. The packets are
    the 4-byte PUBACKs paho itself sends (MQTT 5, section 3.4.2.1: the success reason code is
    implied by the length), queued on paho's outgoing queue in one piece, so they keep their
    order with everything else the client sends. Without that internal, falls back to ``ack()``.
    """
    if not mids:
        return
    queue_packet = getattr(client, "_packet_queue", None)
    if queue_packet is None:
        for mid in mids:
            client.ack(mid, 1)
        return
    packets = struct.pack(f"!{len(mids)}I", *((_PUBACK << 24) | (2 << 16) | mid for mid in mids))
    queue_packet(_PUBACK, packets, 0, 1)


class Received(Protocol):
    """What acknowledging needs of a received message."""

    @property
    def mid(self) -> int: ...

    @property
    def qos(self) -> int: ...

    @property
    def generation(self) -> int: ...


class SessionError(RuntimeError):
    """The broker could not be reached or refused the session."""


class ManualAckSession:
    """A persistent MQTT v5 session subscribed to one filter, whose QoS 1 messages are
    acknowledged only on request (``_acknowledge``): what ingest and the alert service share.

    Every connection has a generation number. A message received on an earlier connection is
    never acknowledged: the broker sends it again after the reconnect, and that copy is the one
    acknowledged, so a packet id is never acknowledged on a connection it does not belong to.
    Subclasses receive on paho's network thread by defining ``_on_message`` (nothing stands
    between paho and it), and may extend ``_new_connection`` (called with the lock held).
    """

    _log = log

    def __init__(
        self,
        *,
        settings: MqttSettings,
        client_id: str,
        receive_maximum: int,
        topic_filter: str,
        on_state: Callable[[bool], None] | None = None,
        first_generation: int = 0,
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._receive_maximum = receive_maximum
        self._topic_filter = topic_filter
        self._on_state = on_state
        self._lock = threading.Lock()
        # Connections are numbered from here: a session that replaces another (a restarted
        # MQTT process) starts above the numbers the old one used.
        self._generation = first_generation
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._closing = False
        self._refused: str | None = None
        client = mqtt_client(settings, client_id=client_id, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect (resuming the session), subscribe and start the network thread; raise
        SessionError on failure."""
        self._connect(self._client, clean_start=False, properties=persistent_session(
            self._settings, receive_maximum=self._receive_maximum
        ))  # fmt: skip
        self._client.loop_start()
        deadline = time.monotonic() + self._settings.connect_timeout_s
        while not (self._subscribed.wait(0.05) and self._ready()):
            if self._refused is not None or time.monotonic() > deadline:
                self._abandon()
                raise SessionError(
                    self._refused
                    or f"no session with the broker at {self._settings.url} after "
                    f"{self._settings.connect_timeout_s:g} s"
                )

    def stop(self) -> None:
        """Disconnect normally, so that the broker keeps the session (and what is not
        acknowledged), and stop the network thread. Acknowledgements queued before this call
        are sent first: paho writes packets in order."""
        with self._lock:
            self._closing = True
            self._generation += 1
        if self._connected.is_set():
            self._client.disconnect(
                reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection")
            )
        self._client.loop_stop()
        self._connected.clear()

    def _connect(self, client: mqtt.Client, **options: Any) -> None:
        try:
            client.connect(
                self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s,
                **options,
            )  # fmt: skip
        except OSError as error:
            raise SessionError(
                f"cannot reach the broker at {self._settings.url}: {error}"
            ) from None

    def _ready(self) -> bool:
        """Whatever else ``start`` waits for, beside the subscription."""
        return True

    def _abandon(self) -> None:
        """Give up a start that failed."""
        self._client.loop_stop()

    def _acknowledge(self, messages: Iterable[Received]) -> int:
        """Acknowledge the messages of the current connection (lock held); how many were."""
        generation = self._generation
        mids = [m.mid for m in messages if m.generation == generation and m.qos == 1]
        send_pubacks(self._client, mids)
        return len(mids)

    def _new_connection(self) -> None:
        """A connection began or ended (lock held): messages of the last one are not acked."""
        self._generation += 1

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        raise NotImplementedError

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
            self._log.error("mqtt connection refused", reason=str(reason))
            return
        with self._lock:
            self._new_connection()
        self._connected.set()
        self._log.info(
            "mqtt connected",
            session_present=flags.session_present,
            client_id=self._client_id,
            receive_maximum=self._receive_maximum,
        )
        # Subscribing again to a resumed session is harmless and covers a session the broker
        # expired while the service was away.
        result, _ = client.subscribe(self._topic_filter, options=SubscribeOptions(qos=1))
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._log.error("mqtt subscribe failed", code=str(result))
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
            self._log.error("mqtt subscription refused", reasons=failed)
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
            self._new_connection()
        self._connected.clear()
        if not self._closing:
            self._log.warning("mqtt disconnected; reconnecting", reason=str(reason))
        if self._on_state is not None:
            self._on_state(False)
