"""The production broker configuration (mosquitto/) parses, and its ACL keeps each device to
its own uplink topic while ingest reads them all."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from pantau.services import free_port, mosquitto_binary, port_open, wait_until

CONFIG_DIR = Path(__file__).resolve().parents[2] / "mosquitto"
INGEST_USER, INGEST_PASSWORD = "pantau-ingest", "ingest-secret"
DEVICES = {"fg-welang-1": "secret-1", "fg-welang-2": "secret-2"}


@dataclass
class Broker:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]


def test_copy(directory: Path, port: int) -> Path:
    """The production config with this test's port and paths substituted, nothing else."""
    text = (CONFIG_DIR / "mosquitto.conf").read_text()
    text, listeners = re.subn(r"(?m)^listener 1883$", f"listener {port} 127.0.0.1", text)
    assert listeners == 1, "expected one `listener 1883` line"
    for production, local in {
        "/mosquitto/secrets/passwd": directory / "passwd",
        "/mosquitto/config/acl": directory / "acl",
        "/mosquitto/data/": f"{directory}/data/",
    }.items():
        assert production in text, production
        text = text.replace(production, str(local))
    text = text.replace("log_dest stdout", f"log_dest file {directory}/mosquitto.log")
    if os.geteuid() == 0:
        text += "\nuser root\n"  # keep access to the test's files
    config = directory / "mosquitto.conf"
    config.write_text(text)
    return config


test_copy.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    (tmp_path / "data").mkdir()
    (tmp_path / "acl").write_text((CONFIG_DIR / "acl").read_text())
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), INGEST_USER, INGEST_PASSWORD], check=True
    )
    for user, password in DEVICES.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    passwd.chmod(0o600)
    port = free_port()
    config = test_copy(tmp_path, port)
    process = subprocess.Popen(
        [mosquitto_binary(), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr.log").open("wb"),
    )

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                "mosquitto refused the production config: "
                + (tmp_path / "stderr.log").read_text()
                + (tmp_path / "mosquitto.log").read_text(errors="replace")
            )
        return port_open("127.0.0.1", port)

    try:
        wait_until(up, timeout_s=20, what="mosquitto with the production config")
        yield Broker(port=port, directory=tmp_path, process=process)
    finally:
        process.terminate()
        process.wait(10)


def _client(
    broker: Broker, user: str | None, password: str | None, **kwargs: object
) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"test-{user}",
        protocol=mqtt.MQTTv5,
        **kwargs,  # type: ignore[arg-type]
    )
    if user is not None:
        client.username_pw_set(user, password)
    return client


def _connect(
    client: mqtt.Client, broker: Broker, properties: Properties | None = None
) -> ReasonCode:
    result: list[ReasonCode] = []
    done = threading.Event()

    def on_connect(c: mqtt.Client, u: object, f: object, reason: ReasonCode, p: object) -> None:
        result.append(reason)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", broker.port, properties=properties)
    client.loop_start()
    assert done.wait(10), "no CONNACK"
    return result[0]


def test_config_parses_and_refuses_anonymous(broker: Broker) -> None:
    client = _client(broker, None, None)
    try:
        reason = _connect(client, broker)
        assert reason.is_failure, "anonymous clients must be refused"
    finally:
        client.loop_stop()


def test_acl_keeps_devices_to_their_own_topic_and_ingest_reads_all(broker: Broker) -> None:
    received: list[str] = []
    ingest = _client(broker, INGEST_USER, INGEST_PASSWORD, manual_ack=True)
    ingest.on_message = lambda c, u, m: received.append(m.topic)
    subscribed = threading.Event()
    granted: list[ReasonCode] = []

    def on_subscribe(
        c: mqtt.Client, u: object, mid: int, reasons: list[ReasonCode], p: object
    ) -> None:
        granted.extend(reasons)
        subscribed.set()

    ingest.on_subscribe = on_subscribe
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = 500
    properties.SessionExpiryInterval = 300
    assert not _connect(ingest, broker, properties).is_failure
    ingest.subscribe("$share/pantau-ingest/pantau/up/+", options=SubscribeOptions(qos=1))
    assert subscribed.wait(10) and not any(r.is_failure for r in granted), granted

    device = _client(broker, "fg-welang-1", DEVICES["fg-welang-1"])
    acks: dict[int, ReasonCode] = {}
    device.on_publish = lambda c, u, mid, reason, p: acks.__setitem__(mid, reason)
    assert not _connect(device, broker).is_failure
    own = [device.publish("pantau/up/fg-welang-1", b'{"values": {"water_level": 1}}', qos=1)
           for _ in range(50)]  # fmt: skip
    other = device.publish("pantau/up/fg-welang-2", b'{"values": {"water_level": 9}}', qos=1)
    wait_until(lambda: len(acks) == 51, timeout_s=10, what="PUBACKs")
    assert all(not acks[info.mid].is_failure for info in own)
    assert acks[other.mid].is_failure
    assert acks[other.mid].getName() == "Not authorized"

    # Nothing acknowledged, yet all 50 arrived: the v5 Receive Maximum (500) governs the window,
    # not the config's max_inflight_messages (20).
    wait_until(lambda: len(received) == 50, timeout_s=10, what="50 unacknowledged deliveries")
    assert set(received) == {"pantau/up/fg-welang-1"}
    for client in (device, ingest):
        client.disconnect()
        client.loop_stop()


def test_a_device_cannot_read_the_uplinks(broker: Broker) -> None:
    device = _client(broker, "fg-welang-2", DEVICES["fg-welang-2"])
    granted: list[ReasonCode] = []
    done = threading.Event()

    def on_subscribe(
        c: mqtt.Client, u: object, mid: int, reasons: list[ReasonCode], p: object
    ) -> None:
        granted.extend(reasons)
        done.set()

    device.on_subscribe = on_subscribe
    received: list[str] = []
    device.on_message = lambda c, u, m: received.append(m.topic)
    assert not _connect(device, broker).is_failure
    device.subscribe("pantau/up/+", qos=1)
    assert done.wait(10)
    # A reader that is allowed, subscribed after the device: once it has the message, the
    # device would have it too if the ACL let it read.
    control = _client(broker, INGEST_USER, INGEST_PASSWORD)
    control_received: list[str] = []
    control.on_message = lambda c, u, m: control_received.append(m.topic)
    assert not _connect(control, broker).is_failure
    control.subscribe("pantau/up/+", qos=1)
    other = _client(broker, "fg-welang-1", DEVICES["fg-welang-1"])
    assert not _connect(other, broker).is_failure
    wait_until(lambda: bool(other.publish("pantau/up/fg-welang-1", b"{}", qos=1) and control_received),
               timeout_s=10, what="control subscriber receives")  # fmt: skip
    for client in (other, control, device):
        client.disconnect()
        client.loop_stop()
    # Mosquitto grants the subscription but delivers nothing the ACL does not allow to be read.
    assert received == []
