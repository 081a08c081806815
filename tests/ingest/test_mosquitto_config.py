"""The production broker keeps what an offline ingest session has not received yet.

A stock Mosquitto queues 1,000 messages for an offline session and silently drops the rest;
the production configuration (`pantau broker config`) queues far more, and its persistence
keeps them across a broker restart. Who may read and write what is in
tests/deploy/test_broker_security.py.
"""

from __future__ import annotations

import threading

from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from pantau.cli.mosquitto import editing_password_file, hash_password
from pantau.tools.services import wait_until
from tests.fixtures.production_broker import SERVICE_PASSWORDS, ProductionBroker

STOCK_QUEUE_LIMIT = 1_000


def _session() -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3_600
    properties.ReceiveMaximum = 100
    return properties


def test_an_offline_ingest_session_keeps_more_than_the_stock_queue_across_a_restart(
    production_broker: ProductionBroker,
) -> None:
    broker, root = production_broker, production_broker.root
    with editing_password_file(broker.password_file) as accounts:
        accounts["fg-queue-1"] = hash_password("device-secret")
    broker.restart()  # also re-reads the password file
    ingest_user = broker.settings.broker.ingest_user

    # Ingest subscribes with a persistent session, then goes away.
    ingest, reason = broker.client(
        ingest_user,
        SERVICE_PASSWORDS["ingest"],
        properties=_session(),
        clean_start=False,
        client_id="ingest-queue-test",
    )
    assert reason is not None and not reason.is_failure
    subscribed = threading.Event()
    ingest.on_subscribe = lambda *args: subscribed.set()
    ingest.subscribe(f"{root}/up/+", options=SubscribeOptions(qos=1))
    assert subscribed.wait(10)
    ingest.disconnect()
    ingest.loop_stop()

    count = STOCK_QUEUE_LIMIT + 500
    device, _ = broker.client("fg-queue-1", "device-secret")
    acked: list[int] = []
    device.on_publish = lambda c, u, mid, reason, p: acked.append(mid)
    for n in range(count):
        device.publish(f"{root}/up/fg-queue-1", str(n).encode(), qos=1)
    wait_until(lambda: len(acked) == count, timeout_s=30, what="PUBACKs")
    device.disconnect()
    device.loop_stop()

    broker.restart()  # SIGTERM saves the queue; the new process loads it

    received: list[int] = []
    done = threading.Event()

    def on_message(client: object, userdata: object, message: MQTTMessage) -> None:
        received.append(int(message.payload))
        if len(received) == count:
            done.set()

    # Same client id, clean_start False: the session and its queue come back.
    _, reason = broker.client(
        ingest_user,
        SERVICE_PASSWORDS["ingest"],
        properties=_session(),
        clean_start=False,
        client_id="ingest-queue-test",
        on_message=on_message,
    )
    assert reason is not None and not reason.is_failure
    assert done.wait(30) or len(received) == count, f"{len(received)} of {count} came back"
    assert sorted(received) == list(range(count))
