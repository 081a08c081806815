"""Private servers: Mosquitto and PostgreSQL on free ports, stopped and restarted."""

from __future__ import annotations

import os
import pwd
import queue
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pantau.tools.services import (
    PrivateMosquitto,
    PrivatePostgres,
    free_port,
    port_open,
    running,
    wait_until,
)


def test_free_port_is_free() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    assert not port_open("127.0.0.1", port)


def test_wait_until_polls_until_ready() -> None:
    calls = []

    def probe() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return len(calls) >= 4

    wait_until(probe, timeout_s=5, what="the probe")
    assert len(calls) == 4


def test_wait_until_names_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the unicorn not ready after 0 s"):
        wait_until(lambda: False, timeout_s=0.1, what="the unicorn")


def _retained(url: str, topic: str) -> bytes:
    """The retained message on ``topic``, read by a fresh subscriber."""
    port = int(url.rsplit(":", 1)[1])
    got: queue.Queue[bytes] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, message: got.put(bytes(message.payload))
    client.on_connect = lambda c, u, flags, reason, props: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        return got.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def _publish_retained(url: str, topic: str, payload: bytes) -> None:
    port = int(url.rsplit(":", 1)[1])
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="pantau-mqtt-test-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_private_mosquitto_starts_stops_and_keeps_messages(broker_dir: Path) -> None:
    broker = PrivateMosquitto(directory=broker_dir)
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert not port_open("127.0.0.1", broker.port)
    with running(broker) as url:
        assert url == broker.url
        assert port_open("127.0.0.1", broker.port)
        _publish_retained(url, "test/services/retained", b"kept")
        assert _retained(url, "test/services/retained") == b"kept"
    assert broker.process is None
    wait_until(lambda: not port_open("127.0.0.1", broker.port), timeout_s=10, what="port to close")
    # Persistence is on: a restart on the same port still has the retained message.
    broker.start()
    try:
        assert _retained(broker.url, "test/services/retained") == b"kept"
    finally:
        broker.stop()


def test_private_mosquitto_refuses_a_taken_port(broker_dir: Path) -> None:
    with running(PrivateMosquitto(directory=broker_dir / "a")) as url:
        taken = int(url.rsplit(":", 1)[1])
        second = PrivateMosquitto(directory=broker_dir / "b", port=taken, start_timeout_s=5)
        with pytest.raises(RuntimeError, match="already in use"):
            second.start()
        second.stop()


def _owner_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_private_postgres_starts_restarts_and_keeps_data(
    private_postgres: PrivatePostgres,
) -> None:
    server = private_postgres
    port = server.port
    assert server.running()
    pid = int((server.data / "postmaster.pid").read_text().splitlines()[0])
    if os.geteuid() == 0:
        # PostgreSQL refuses root: the cluster runs as the service account.
        assert server.account is not None
        assert server.account.pw_name in {"postgres", "nobody"}
        assert (
            _owner_uid(pid) == server.account.pw_uid == pwd.getpwnam(server.account.pw_name).pw_uid
        )
        assert server.data.stat().st_uid == server.account.pw_uid
    else:
        assert _owner_uid(pid) == os.geteuid()
    url = server.create_database("pantau_keep")
    assert server.create_database("pantau_keep") == url  # idempotent
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")

    server.stop()
    assert not server.running()
    assert not port_open("127.0.0.1", port)

    server.start()
    assert server.port == port
    assert server.running()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT value FROM kept").fetchall() == [("still here",)]
