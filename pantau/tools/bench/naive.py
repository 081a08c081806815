"""Scenario (c): the naive baseline, one INSERT per message with autocommit.

`python -m pantau.tools.bench.naive --url mqtt://... --filter ROOT/up/+ --client-id ID --database URL
--expect N` parses each single-observation message and inserts its readings with one INSERT
statement in autocommit mode, acknowledging each message on receipt (paho's default), as many
home-grown bridges do. Prints one JSON line like the pass-through subscriber, latency being
commit time minus publish time.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from pantau.tools.bench._common import announce_ready, emit, peak_rss_bytes, percentiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--filter", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--create-session", action="store_true")
    args = parser.parse_args()

    inbox: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    subscribed = threading.Event()

    def on_connect(client: mqtt.Client, *rest: Any) -> None:
        client.subscribe(args.filter, options=SubscribeOptions(qos=1))

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=mqtt.MQTTv5,
    )
    client.on_connect = on_connect
    client.on_subscribe = lambda *rest: subscribed.set()
    client.on_message = lambda c, u, m: inbox.put((m.topic, bytes(m.payload)))
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    # The broker's default window: a naive bridge does not tune it.
    parts = urlsplit(args.url)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, clean_start=False,
                   properties=properties)  # fmt: skip
    client.loop_start()
    subscribed.wait(30)
    count, first, last = 0, None, None
    latencies: list[float] = []
    if not args.create_session:
        with psycopg.connect(args.database, autocommit=True) as conn:
            announce_ready()
            while not args.expect or count < args.expect:
                try:
                    topic, payload = inbox.get(timeout=args.idle_s)
                except queue.Empty:
                    break
                now = time.time()
                first = first or now
                try:
                    doc = json.loads(payload)
                    when = (
                        datetime.fromisoformat(doc["ts"])
                        if isinstance(doc["ts"], str)
                        else datetime.fromtimestamp(doc["ts"]).astimezone()
                    )
                    sensor = topic.rsplit("/", 1)[1]
                    rows = [(when, sensor, name, float(v)) for name, v in doc["values"].items()]
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
                placeholders = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
                conn.execute(
                    "INSERT INTO readings (time, sensor_id, metric, value) VALUES "
                    + placeholders
                    + " ON CONFLICT DO NOTHING",
                    [field for row in rows for field in row],
                )
                last = time.time()
                latencies.append(last - when.timestamp())
                count += 1
    client.disconnect()
    client.loop_stop()
    p50, p99 = percentiles(latencies)
    emit(
        {
            "messages": count,
            "first": first,
            "last": last,
            "p50_s": p50,
            "p99_s": p99,
            "peak_rss_bytes": peak_rss_bytes(),
        }
    )


if __name__ == "__main__":
    main()
