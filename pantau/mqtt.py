"""MQTT helpers shared by the services and the benchmarks."""

from __future__ import annotations

import ssl
import struct
from collections.abc import Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pantau.settings import MqttSettings

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
