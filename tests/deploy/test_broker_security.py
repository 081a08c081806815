"""The production broker configuration, run by a real Mosquitto: who may connect, publish, read."""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from pantau.cli.mosquitto import (
    BrokerConfigError,
    config_files,
    editing_password_file,
    hash_password,
    render_config,
    verify_password,
)
from pantau.settings import BrokerSettings, IngestSettings, MqttSettings, Settings
from pantau.tools.services import wait_until
from tests.fixtures.production_broker import (
    SERVICE_PASSWORDS,
    ProductionBroker,
    plain_mqtt_answer,
)

ROOT = Path(__file__).resolve().parents[2]
DEVICES = {f"fg-test-{n}": f"device-secret-{n}" for n in range(1, 6)}
NOT_AUTHORIZED = 0x87


def _add_devices(broker: ProductionBroker) -> None:
    with editing_password_file(broker.password_file) as accounts:
        for user, password in DEVICES.items():
            accounts[user] = hash_password(password)
    broker.process.send_signal(1)  # SIGHUP: re-read the password file
    user, password = next(iter(DEVICES.items()))
    wait_until(lambda: _connack(broker, user, password) == "Success", timeout_s=10, what="reload")


def _connack(broker: ProductionBroker, user: str | None, password: str | None) -> str | None:
    client, reason = broker.client(user, password)
    client.disconnect()
    client.loop_stop()
    return None if reason is None else reason.getName()


def _subscriber(
    broker: ProductionBroker, user: str, password: str, topic: str, **kwargs: object
) -> tuple[mqtt.Client, list[mqtt.MQTTMessage], list[ReasonCode]]:
    received: list[mqtt.MQTTMessage] = []
    granted: list[ReasonCode] = []
    subscribed = threading.Event()

    def on_subscribe(c: object, u: object, mid: int, reasons: list[ReasonCode], p: object) -> None:
        granted.extend(reasons)
        subscribed.set()

    client, reason = broker.client(user, password, **kwargs)  # type: ignore[arg-type]
    assert reason is not None and not reason.is_failure, reason
    client.on_message = lambda c, u, m: received.append(m)
    client.on_subscribe = on_subscribe
    client.subscribe(topic, options=SubscribeOptions(qos=1))
    assert subscribed.wait(10)
    return client, received, granted


def _publish_all(client: mqtt.Client, items: list[tuple[str, bytes]]) -> list[ReasonCode]:
    """Publish with QoS 1 and return each PUBACK's reason, in order."""
    acks: dict[int, ReasonCode] = {}
    client.on_publish = lambda c, u, mid, reason, p: acks.__setitem__(mid, reason)
    mids = [client.publish(topic, payload, qos=1).mid for topic, payload in items]
    wait_until(lambda: all(mid in acks for mid in mids), timeout_s=10, what="PUBACKs")
    return [acks[mid] for mid in mids]


# ----------------------------------------------------------------------- the committed files


def test_committed_files_are_the_output_of_broker_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pantau broker config` with the default settings writes exactly mosquitto/."""
    for key in [k for k in os.environ if k.startswith("PANTAU_")]:
        monkeypatch.delenv(key)
    for name, text in config_files(Settings(_env_file=None)).items():  # type: ignore[call-arg]
        committed = (ROOT / "mosquitto" / name).read_text(encoding="utf-8")
        assert committed == text, f"mosquitto/{name} is out of step: run `pantau broker config`"


def test_limits_follow_ingest_window() -> None:
    settings = Settings(_env_file=None, ingest=IngestSettings(max_undelivered_messages=20_000))  # type: ignore[call-arg]
    config = render_config(settings)
    assert "max_inflight_messages 20000\n" in config
    assert "max_queued_messages 1000000\n" in config
    assert "persistent_client_expiration 168h\n" in config
    assert "autosave_interval 5\n" in config
    small = Settings(
        _env_file=None,  # type: ignore[call-arg]
        ingest=IngestSettings(max_undelivered_messages=20_000),
        broker=BrokerSettings(max_queued_messages=1_000),
    )
    with pytest.raises(BrokerConfigError, match="MAX_QUEUED_MESSAGES"):
        render_config(small)
    short = Settings(
        _env_file=None,  # type: ignore[call-arg]
        mqtt=MqttSettings(session_expiry_s=30 * 86_400),
    )
    with pytest.raises(BrokerConfigError, match="SESSION_EXPIRATION_H"):
        render_config(short)


def test_hashes_agree_with_mosquitto_passwd(tmp_path: Path) -> None:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed")
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "alice", "s3cret"], check=True)
    hashed = passwd.read_text().strip().split(":", 1)[1]
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret!", hashed)
    # Same salt and rounds, same hash: byte for byte what mosquitto_passwd writes.
    _, _, rounds, salt, _ = hashed.split("$")
    assert hash_password("s3cret", salt=base64.b64decode(salt), iterations=int(rounds)) == hashed


# ------------------------------------------------------------------------- who may connect


def test_anonymous_and_wrong_passwords_are_refused(production_broker: ProductionBroker) -> None:
    _add_devices(production_broker)
    broker = production_broker
    # Mosquitto 2.0 answers a bad login with "Not authorized" (0x87); later versions may say
    # "Bad user name or password" (0x86). Either is a refusal.
    refused = {"Not authorized", "Bad user name or password"}
    assert _connack(broker, None, None) in refused
    assert _connack(broker, "fg-test-1", "wrong") in refused
    assert _connack(broker, "fg-test-1", DEVICES["fg-test-2"]) in refused
    assert _connack(broker, broker.settings.broker.ingest_user, "wrong") in refused
    assert _connack(broker, broker.settings.broker.public_user, "") in refused
    assert _connack(broker, "nobody", "anything") in refused
    # The control: the right passwords are accepted.
    assert _connack(broker, "fg-test-1", DEVICES["fg-test-1"]) == "Success"
    assert _connack(broker, broker.settings.broker.ingest_user, SERVICE_PASSWORDS["ingest"]) == (
        "Success"
    )


def test_tls_listener_accepts_clients_that_trust_the_ca(
    production_broker: ProductionBroker,
) -> None:
    _add_devices(production_broker)
    broker = production_broker
    _, received, _ = _subscriber(
        broker,
        broker.settings.broker.ingest_user,
        SERVICE_PASSWORDS["ingest"],
        f"{broker.root}/up/+",
    )
    device, reason = broker.client("fg-test-3", DEVICES["fg-test-3"], tls=True)
    assert reason is not None and reason.getName() == "Success", reason
    assert not any(
        a.is_failure for a in _publish_all(device, [(f"{broker.root}/up/fg-test-3", b"{}")])
    )
    wait_until(lambda: len(received) == 1, timeout_s=10, what="the TLS device's reading")
    # Plain MQTT on the TLS port gets no CONNACK: the broker expects a TLS handshake.
    answer = plain_mqtt_answer(broker.tls_port)
    assert not answer.startswith(b"\x20"), answer
    # ... while the plain port answers the very same bytes with a CONNACK (refusing anonymous).
    assert plain_mqtt_answer(broker.port).startswith(b"\x20")
    # A client that does not trust the pilot CA (system CAs only) fails the handshake.
    stranger = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5
    )
    stranger.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(ssl.SSLError):
        stranger.connect("127.0.0.1", broker.tls_port)


# ------------------------------------------------------------------------------ the ACL


def test_a_device_cannot_publish_for_another(production_broker: ProductionBroker) -> None:
    _add_devices(production_broker)
    broker, root = production_broker, production_broker.root
    group = f"$share/pantau-ingest/{root}/up/+"  # as ingest subscribes in the compose stack
    _, received, granted = _subscriber(
        broker, broker.settings.broker.ingest_user, SERVICE_PASSWORDS["ingest"], group
    )
    assert not any(g.is_failure for g in granted), granted
    device, _ = broker.client("fg-test-1", DEVICES["fg-test-1"])
    forged, own = _publish_all(
        device, [(f"{root}/up/fg-test-2", b"forged"), (f"{root}/up/fg-test-1", b"own")]
    )
    assert forged.is_failure and forged.value == NOT_AUTHORIZED, forged
    assert forged.getName() == "Not authorized"
    assert not own.is_failure
    # The broker handles a connection's packets in order: once "own" is delivered, "forged"
    # would have been delivered before it.
    wait_until(lambda: len(received) >= 1, timeout_s=10, what="the device's own reading")
    assert [(m.topic, m.payload) for m in received] == [(f"{root}/up/fg-test-1", b"own")]


def test_ingest_receives_every_devices_readings(production_broker: ProductionBroker) -> None:
    _add_devices(production_broker)
    broker, root = production_broker, production_broker.root
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = 1000
    properties.SessionExpiryInterval = 300
    _, received, _ = _subscriber(
        broker,
        broker.settings.broker.ingest_user,
        SERVICE_PASSWORDS["ingest"],
        f"{root}/up/+",
        properties=properties,
        manual_ack=True,
    )
    per_device = 40
    for user, password in DEVICES.items():
        device, _ = broker.client(user, password)
        reasons = _publish_all(device, [(f"{root}/up/{user}", b"{}")] * per_device)
        assert not any(r.is_failure for r in reasons), user
    # Nothing acknowledged by ingest, yet all arrive: the window is ingest's Receive Maximum,
    # not the stock in-flight limit of 20.
    total = per_device * len(DEVICES)
    wait_until(lambda: len(received) == total, timeout_s=15, what=f"{total} readings")
    assert {m.topic.rsplit("/", 1)[1] for m in received} == set(DEVICES)


def test_every_account_reaches_only_its_own_topics(production_broker: ProductionBroker) -> None:
    _add_devices(production_broker)
    broker, root = production_broker, production_broker.root
    names = broker.settings.broker
    # A reader subscribed to everything through each account; then every writer publishes
    # everywhere. What each reader gets, and which publishes the broker refused, is the ACL.
    readers = {
        "ingest": (names.ingest_user, SERVICE_PASSWORDS["ingest"]),
        "alerts": (names.alerts_user, SERVICE_PASSWORDS["alerts"]),
        "public": (names.public_user, SERVICE_PASSWORDS["public"]),
        "device": ("fg-test-1", DEVICES["fg-test-1"]),
    }
    got = {
        who: _subscriber(broker, user, password, f"{root}/#")[1]
        for who, (user, password) in readers.items()
    }
    topics = {
        "up": f"{root}/up/fg-test-2",
        "own-up": f"{root}/up/fg-test-1",
        "down-1": f"{root}/down/fg-test-1/rejected",
        "down-2": f"{root}/down/fg-test-2/rejected",
        "status": f"{root}/status/fg-test-2",
        "alerts": f"{root}/alerts/events",
        "warning": f"{root}/warning/fg-test-2",
    }
    writers = {
        "ingest": readers["ingest"],
        "alerts": readers["alerts"],
        "public": readers["public"],
        "device-1": readers["device"],
        "device-2": ("fg-test-2", DEVICES["fg-test-2"]),
    }
    allowed: dict[str, set[str]] = {}
    for who, (user, password) in writers.items():
        client, _ = broker.client(user, password)
        reasons = _publish_all(client, [(topic, who.encode()) for topic in topics.values()])
        allowed[who] = {name for name, r in zip(topics, reasons, strict=True) if not r.is_failure}
        client.disconnect()
    assert allowed["ingest"] == {"down-1", "down-2"}
    assert allowed["alerts"] == {"status", "alerts", "warning"}
    assert allowed["public"] == set()
    assert allowed["device-1"] == {"own-up"}
    assert allowed["device-2"] == {"up"}
    # Everything allowed has been published: wait until the readers that may see some have.
    wait_until(lambda: len(got["ingest"]) >= 2 and len(got["public"]) >= 2, timeout_s=10,
               what="deliveries")  # fmt: skip
    seen = {who: {m.topic for m in messages} for who, messages in got.items()}
    assert seen["ingest"] == {topics["own-up"], topics["up"]}
    assert seen["alerts"] >= {topics["own-up"], topics["up"]}
    assert seen["alerts"] <= {topics["own-up"], topics["up"]}
    assert seen["public"] == {topics["status"], topics["alerts"]}
    assert seen["device"] == {topics["down-1"]}


def test_pilot_ca_reuses_its_ca_for_a_new_server_certificate(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    script = ROOT / "scripts" / "pilot-ca.sh"
    certs = tmp_path / "certs"
    subprocess.run(["bash", str(script), str(certs), "mqtt.example.org"], check=True)
    ca = (certs / "ca.crt").read_bytes()
    assert (certs / "ca.key").stat().st_mode & 0o077 == 0, "the CA key is private"
    assert (certs / "server.key").stat().st_mode & 0o077 == 0
    subprocess.run(
        ["bash", str(script), str(certs), "broker.example.org", "203.0.113.7"], check=True
    )
    assert (certs / "ca.crt").read_bytes() == ca, "devices keep trusting the same CA"
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.crt")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    names = subprocess.run(
        ["openssl", "x509", "-in", str(certs / "server.crt"), "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "DNS:broker.example.org" in names and "IP Address:203.0.113.7" in names
    assert "mqtt.example.org" not in names
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "usage" in usage.stderr
