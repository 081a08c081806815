"""The load generator's own MQTT publisher, against real brokers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pantau.settings import MqttSettings
from pantau.tools.services import PrivateMosquitto, free_port, wait_until
from simulators.publisher import PublishError
from simulators.wire import WirePublisher, _varint
from tests.fixtures.simulator import Collector


def _payloads(count: int) -> list[bytes]:
    # Sizes on both sides of the one-, two- and three-byte remaining lengths.
    sizes = [0, 1, 100, 127, 128, 16_383, 16_384, 40_000]
    return [b"%06d:" % n + b"x" * sizes[n % len(sizes)] for n in range(count)]


@pytest.mark.parametrize("qos", [0, 1])
def test_every_message_arrives_intact_and_in_order(
    private_broker: PrivateMosquitto, test_id: str, qos: int
) -> None:
    # A private broker: its queues are unlimited, where the shared one drops messages beyond
    # 1,000 queued for a subscriber slower than this publisher.
    settings = MqttSettings(url=private_broker.url, topic_root=f"wire-{test_id}")
    collector = Collector(settings)
    collector.start()
    publisher = WirePublisher(mqtt_settings=settings, client_id=f"wire-{qos}", qos=qos)
    publisher.connect()
    topics = [settings.uplink_topic(f"dev-{k}") for k in range(3)]
    payloads = _payloads(2_000)
    try:
        for number, payload in enumerate(payloads):
            publisher.publish(topics[number % 3], payload)
        assert publisher.flush(timeout_s=30)
    finally:
        publisher.close()
    received = collector.wait_for(len(payloads))
    collector.stop()
    assert received == [(topics[n % 3], p) for n, p in enumerate(payloads)]
    assert publisher.sent == len(payloads)
    assert publisher.acked == (len(payloads) if qos else 0)
    assert publisher.errors == publisher.outstanding == 0


def test_window_never_exceeds_the_brokers_receive_maximum(mqtt_settings: MqttSettings) -> None:
    # The shared broker runs with max_inflight_messages 20, which it announces in its CONNACK.
    publisher = WirePublisher(mqtt_settings=mqtt_settings, client_id="wire-window", window=5_000)
    publisher.connect()
    try:
        assert publisher.window == 20
        for _ in range(500):
            publisher.publish(mqtt_settings.uplink_topic("dev"), b"{}")
            assert publisher.outstanding <= 20
        assert publisher.flush(timeout_s=30)
    finally:
        publisher.close()
    assert publisher.acked == 500


def test_broker_restart_loses_nothing(private_broker: PrivateMosquitto, test_id: str) -> None:
    settings = MqttSettings(url=private_broker.url, topic_root=f"restart-{test_id}")
    collector = Collector(settings, session_expiry_s=300)
    collector.start()
    publisher = WirePublisher(
        mqtt_settings=settings, client_id=f"wire-{test_id}", reconnect_timeout_s=30
    )
    publisher.connect()
    payloads = [b"%06d" % n for n in range(6_000)]
    try:
        for number, payload in enumerate(payloads):
            publisher.publish(settings.uplink_topic("dev"), payload)
            if number == 3_000:
                private_broker.stop()  # SIGTERM: the broker saves sessions and queues
                private_broker.start()
        assert publisher.flush(timeout_s=60)
    finally:
        publisher.close()
    assert publisher.reconnects >= 1
    assert publisher.errors == 0
    wait_until(
        lambda: {p for _, p in collector.messages} >= set(payloads),
        timeout_s=60,
        what="every message after the restart",
    )
    collector.stop()


def test_refusals_and_unreachable_brokers_raise_with_the_reason(locked_broker: str) -> None:
    wrong = MqttSettings(url=locked_broker, username="fg-welang-1", password="nope")
    with pytest.raises(PublishError, match="refused"):
        WirePublisher(mqtt_settings=wrong, client_id="wire-wrong").connect()
    nowhere = MqttSettings(url=f"mqtt://127.0.0.1:{free_port()}")
    with pytest.raises(PublishError, match="cannot reach"):
        WirePublisher(mqtt_settings=nowhere, client_id="wire-nowhere").connect()


def test_a_refused_message_counts_as_an_error(locked_broker: str) -> None:
    device = MqttSettings(
        url=locked_broker,
        topic_root="locked",
        username="fg-welang-1",
        password="secret-fg-welang-1",
    )
    publisher = WirePublisher(mqtt_settings=device, client_id="wire-acl")
    publisher.connect()
    try:
        publisher.publish(device.uplink_topic("fg-welang-1"), b"{}")
        # The ACL lets a device write only its own uplink.
        publisher.publish(device.uplink_topic("fg-welang-2"), b"{}")
        assert publisher.flush(timeout_s=10)
    finally:
        publisher.close()
    assert (publisher.acked, publisher.errors) == (1, 1)
    assert publisher.last_error is not None and "authori" in publisher.last_error.lower()


def test_not_connected_is_an_error(mqtt_settings: MqttSettings) -> None:
    publisher = WirePublisher(mqtt_settings=mqtt_settings, client_id="wire-idle")
    with pytest.raises(PublishError, match="not connected"):
        publisher.publish(mqtt_settings.uplink_topic("dev"), b"{}")


@given(
    bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=40),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_packets_split_anywhere_are_reassembled(bodies: list[bytes], seed: int) -> None:
    stream = b"".join(bytes([0x40]) + _varint(len(b)) + b for b in bodies)
    chooser = random.Random(seed)
    cuts = sorted(chooser.sample(range(len(stream) + 1), k=min(5, len(stream) + 1)))
    publisher = WirePublisher(mqtt_settings=MqttSettings(), client_id="parse")
    got: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        publisher._rx += stream[start:end]
        got += [body for kind, body in publisher._take_packets() if kind == 0x40]
    assert got == bodies
    assert not publisher._rx
