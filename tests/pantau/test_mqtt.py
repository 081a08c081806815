"""Batched acknowledgements, against the real broker: what was acknowledged is never sent again."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from pantau.mqtt import message_topic, mqtt_client, persistent_session, send_pubacks
from pantau.settings import MqttSettings
from pantau.tools.services import wait_until
from tests.ingest.helpers import publish_all


class _Session:
    """A persistent manual-ack session that records what it receives."""

    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        self.received: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt_client(settings, client_id=client_id, manual_ack=True)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe(
            settings.uplink_filter, options=SubscribeOptions(qos=1)
        )
        self.client.connect(
            settings.host, settings.port, clean_start=False,
            properties=persistent_session(settings, receive_maximum=1000),
        )  # fmt: skip
        self.client.loop_start()
        assert self._subscribed.wait(20), "no subscription"

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.mid, bytes(message.payload)))

    def barrier(self) -> None:
        """Return once the broker has read everything this client sent before: it answers a
        SUBSCRIBE only after the packets ahead of it on the connection."""
        self._subscribed.clear()
        self.client.subscribe(f"barrier/{uuid.uuid4().hex}", options=SubscribeOptions(qos=0))
        assert self._subscribed.wait(20), "the broker did not answer"

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [payload for _, payload in self.received]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_batched_pubacks_settle_exactly_the_messages_acknowledged(
    mqtt_settings: MqttSettings,
) -> None:
    client_id = f"acks-{uuid.uuid4().hex[:8]}"
    _Session(mqtt_settings, client_id).close()  # the session now holds what is published next
    topic = mqtt_settings.uplink_topic("dev-1")
    sent = [f"m{i}".encode() for i in range(300)]
    publish_all(mqtt_settings, [(topic, payload) for payload in sent])

    first = _Session(mqtt_settings, client_id)
    wait_until(lambda: len(first.received) >= 300, timeout_s=30, what="300 messages")
    assert first.payloads() == sent
    send_pubacks(first.client, [mid for mid, _ in first.received[:200]])
    # Without this, a broker busy enough to see the next CONNECT (same client id) before the
    # bytes left on this connection drops those bytes with the connection it takes over.
    first.barrier()
    first.close()

    second = _Session(mqtt_settings, client_id)
    marker = b"marker"
    publish_all(mqtt_settings, [(topic, marker)])
    # The session delivers its unacknowledged messages first, so once the marker is in,
    # every redelivery is in too.
    wait_until(lambda: marker in second.payloads(), timeout_s=30, what="the marker")
    assert [p for p in second.payloads() if p != marker] == sent[200:]
    send_pubacks(second.client, [mid for mid, _ in second.received])
    send_pubacks(second.client, [])  # nothing to acknowledge is not an error
    second.close()


def test_a_topic_that_is_not_utf8_is_read_with_replacement_characters() -> None:
    # MQTT requires UTF-8 topics; such a message must still reach the decoder to be rejected.
    assert message_topic(mqtt.MQTTMessage(topic=b"pantau/up/fg-\xff")) == "pantau/up/fg-\ufffd"
    assert message_topic(mqtt.MQTTMessage(topic=b"pantau/up/fg-1")) == "pantau/up/fg-1"
