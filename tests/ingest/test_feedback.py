"""Rejection notices: ingest tells a device, on its own feedback topic, what it refused and why."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from pantau.feedback import FeedbackError, FeedbackListener
from pantau.settings import MqttSettings
from pantau.tools.services import wait_until
from pantau.topics import feedback_topic, payload_digest
from tests.fixtures.ingest import IngestFactory
from tests.fixtures.production_broker import ProductionBroker


def publish(settings: MqttSettings, device: str, payload: bytes) -> None:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        client.publish(settings.uplink_topic(device), payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def rejected_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM rejected_payloads").fetchone()
    assert row is not None
    return int(row[0])


def test_rejections_reach_the_device_rate_limited(
    city_db: str, mqtt_settings: MqttSettings, ingest_factory: IngestFactory
) -> None:
    ingest_factory(database_url=city_db, mqtt=mqtt_settings, feedback_per_minute=2)
    listener = FeedbackListener(mqtt_settings=mqtt_settings, device_id="fg-welang-1")
    listener.start()
    other = FeedbackListener(mqtt_settings=mqtt_settings, device_id="fg-welang-2")
    other.start()
    try:
        old = (datetime.now(UTC) - timedelta(days=30)).isoformat()
        too_old = json.dumps({"ts": old, "values": {"water_level": 1.0}}).encode()
        publish(mqtt_settings, "fg-welang-1", too_old)
        notice = listener.get(15)
        assert notice is not None, "no rejection notice within 15 s"
        assert notice.reason == "too_old"
        assert notice.device == "fg-welang-1"
        assert notice.topic == mqtt_settings.uplink_topic("fg-welang-1")
        assert "older than retention" in notice.detail
        assert notice.payload_sha256 == payload_digest(too_old)
        assert abs((datetime.now(UTC) - notice.time).total_seconds()) < 60

        # A good reading gets no notice; three more bad ones only one (2 a minute).
        good = json.dumps({"values": {"water_level": 1.2}}).encode()
        publish(mqtt_settings, "fg-welang-1", good)
        for value in ("high", "low", "nan"):
            body = {"values": {"water_level": value}}
            publish(mqtt_settings, "fg-welang-1", json.dumps(body).encode())
        wait_until(lambda: rejected_count(city_db) == 4, timeout_s=20, what="4 rejections stored")
        second = listener.get(5)
        assert second is not None and second.reason == "bad_value"
        assert listener.get(1.5) is None, "the per-device limit let a third notice through"
        # Nothing went to another device's topic.
        assert other.get(0.1) is None
    finally:
        listener.stop()
        other.stop()


def test_notices_are_not_retained(
    city_db: str, mqtt_settings: MqttSettings, ingest_factory: IngestFactory
) -> None:
    ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    publish(mqtt_settings, "fg-welang-3", b"{not json")
    wait_until(lambda: rejected_count(city_db) == 1, timeout_s=20, what="the rejection stored")
    # A subscriber that comes later gets nothing: a notice is for whoever listens at the time.
    late = FeedbackListener(mqtt_settings=mqtt_settings, device_id="fg-welang-3")
    late.start()
    try:
        assert late.get(1.0) is None
        assert late.topic == feedback_topic(mqtt_settings.topic_root, "fg-welang-3")
    finally:
        late.stop()


def test_under_the_production_acl_only_the_device_reads_its_notices(
    city_db: str, production_broker: ProductionBroker, ingest_factory: IngestFactory
) -> None:
    broker = production_broker
    devices = {"fg-welang-1": "secret-1", "fg-welang-2": "secret-2"}
    broker.add_accounts(devices)
    mqtt_settings = broker.mqtt_settings("ingest-acl")
    ingest = ingest_factory(database_url=city_db, mqtt=mqtt_settings, start=False)
    ingest.env.update(broker.login_env("ingest"))
    ingest.start()

    own = FeedbackListener(
        mqtt_settings=mqtt_settings,
        device_id="fg-welang-1",
        username="fg-welang-1",
        password=devices["fg-welang-1"],
    )
    own.start()
    snooper: FeedbackListener | None = FeedbackListener(
        mqtt_settings=mqtt_settings,
        device_id="fg-welang-1",
        username="fg-welang-2",
        password=devices["fg-welang-2"],
    )
    try:
        snooper.start()
    except FeedbackError:
        snooper = None  # refused outright: as good as never delivered
    try:
        device, _ = broker.client("fg-welang-1", devices["fg-welang-1"])
        body = {"values": {"water_level": 99}}
        topic = mqtt_settings.uplink_topic("fg-welang-1")
        device.publish(topic, json.dumps(body), qos=1).wait_for_publish(10)
        device.disconnect()
        device.loop_stop()
        notice = own.get(15)
        assert notice is not None and notice.reason == "out_of_range", ingest.log()[-3000:]
        if snooper is not None:
            assert snooper.get(1.0) is None, "another device read fg-welang-1's notice"
    finally:
        own.stop()
        if snooper is not None:
            snooper.stop()
