"""Scenario (a): an MQTT v5 QoS 1 subscriber that only acknowledges (the broker's ceiling).

It acknowledges the way ingest does (manual acknowledgement, PUBACKs written in batches with
:func:`pantau.mqtt.send_pubacks`), as soon as it can: every ``ACK_BATCH`` messages, and what is
left every ``ACK_EVERY_S``. So the ceiling is that of the same client stack, minus the work.

`python -m pantau.tools.bench.passthrough --url mqtt://HOST:PORT --filter ROOT/up/+ --client-id ID
--expect N` keeps a persistent session (like ingest), receives until N messages arrived (or
``--idle-s`` passed without one), and prints one JSON line: messages, first/last receive time,
receive-minus-publish latency percentiles, peak memory. ``--create-session`` only subscribes and
leaves, so that messages published next wait in the session.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from pantau.mqtt import send_pubacks
from pantau.tools.bench._common import (
    announce_ready,
    emit,
    peak_rss_bytes,
    percentiles,
    publish_time,
)

ACK_BATCH = 256
ACK_EVERY_S = 0.005


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--filter", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--receive-maximum", type=int, default=10_000)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--create-session", action="store_true")
    args = parser.parse_args()

    subscribed = threading.Event()
    done = threading.Event()
    state: dict[str, Any] = {"count": 0, "first": None, "last": None}
    latencies: list[float] = []
    unacked: list[int] = []
    lock = threading.Lock()

    def flush(client: mqtt.Client) -> None:
        # Under the lock, so that PUBACKs leave in the order the messages came, as in ingest.
        with lock:
            send_pubacks(client, unacked)
            unacked.clear()

    def on_connect(client: mqtt.Client, *rest: Any) -> None:
        client.subscribe(args.filter, options=SubscribeOptions(qos=1))

    def on_subscribe(*rest: Any) -> None:
        subscribed.set()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        if state["first"] is None:
            state["first"] = now
        state["last"] = now
        state["count"] += 1
        sent = publish_time(bytes(message.payload))
        if sent is not None:
            latencies.append(now - sent)
        with lock:
            unacked.append(message.mid)
            full = len(unacked) >= ACK_BATCH
        if full:
            flush(client)
        if args.expect and state["count"] >= args.expect:
            done.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = args.receive_maximum
    parts = urlsplit(args.url)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, clean_start=False,
                   properties=properties)  # fmt: skip
    client.loop_start()
    subscribed.wait(30)
    stopped = threading.Event()

    def flusher() -> None:
        while not stopped.wait(ACK_EVERY_S):
            flush(client)

    acks = threading.Thread(target=flusher, daemon=True)
    acks.start()
    if not args.create_session:
        announce_ready()
        seen = -1
        while not done.wait(args.idle_s):
            if state["count"] == seen:
                break  # nothing for idle_s: report what arrived
            seen = state["count"]
    stopped.set()
    acks.join()
    flush(client)
    client.disconnect()
    client.loop_stop()
    p50, p99 = percentiles(latencies)
    emit(
        {
            "messages": state["count"],
            "first": state["first"],
            "last": state["last"],
            "p50_s": p50,
            "p99_s": p99,
            "peak_rss_bytes": peak_rss_bytes(),
        }
    )


if __name__ == "__main__":
    main()
