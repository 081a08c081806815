"""Small builders shared by the ingest tests."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from ingest.source import Inbound
from pantau.settings import MqttSettings

_mids = itertools.count(1)


def inbound(
    topic: str, payload: bytes | dict[str, object] | list[object], *, generation: int = 1
) -> Inbound:
    """An MQTT message as the source hands it to the pipeline."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Inbound(
        topic=topic,
        payload=raw,
        mid=next(_mids) % 65535 + 1,
        qos=1,
        generation=generation,
        received_at=time.time(),
        received_mono=time.monotonic(),
    )


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def publish_all(
    settings: MqttSettings, messages: list[tuple[str, bytes]], *, timeout_s: float = 60
) -> None:
    """Publish at QoS 1 and return once the broker acknowledged every message."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "broker did not acknowledge a publish"
    finally:
        client.disconnect()
        client.loop_stop()


def observations(
    root: str, sensor: str, count: int, *, start: int = 0, metric: str = "water_level"
) -> list[tuple[str, bytes]]:
    """``count`` single observations of one sensor, one second apart, numbered from ``start``."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    return [
        (
            f"{root}/up/{sensor}",
            json.dumps(
                {
                    "ts": iso(base + timedelta(seconds=i)),
                    "seq": i,
                    "values": {
                        metric: i % 100 if metric.startswith("count_") else 1 + (i % 500) / 100
                    },
                }
            ).encode(),
        )
        for i in range(start, start + count)
    ]


def scalar(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        return None if row is None else row[0]
