"""The MQTT source in a process of its own: same behaviour as in-process, and it survives its
child's death."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from ingest.receiver import ProcessSource
from ingest.source import Inbound, SourceError
from pantau.settings import MqttSettings
from pantau.tools.services import free_port, wait_until
from tests.ingest.helpers import publish_all


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Inbound] = []
        self.lock = threading.Lock()

    def put(self, message: Inbound) -> None:
        with self.lock:
            self.messages.append(message)

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [m.payload for m in self.messages]


def _source(settings: MqttSettings, inbox: _Inbox) -> ProcessSource:
    return ProcessSource(
        settings=settings, receive_maximum=100, deliver=inbox.put, restart_delay_s=0.1
    )


def test_a_killed_mqtt_process_is_restarted_and_what_it_held_comes_again(
    mqtt_settings: MqttSettings,
) -> None:
    settings = mqtt_settings.model_copy(update={"shared_group": None})
    topic = settings.uplink_topic("dev-1")
    sent = [f"m{i}".encode() for i in range(5)]
    inbox = _Inbox()
    source = _source(settings, inbox)
    source.start()
    try:
        publish_all(settings, [(topic, p) for p in sent])
        wait_until(lambda: len(inbox.messages) == 5, timeout_s=20, what="5 messages")
        first = list(inbox.messages)
        assert source.inflight == 5
        pid = source.pid
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(inbox.messages) == 10, timeout_s=30, what="the same 5 again")
        again = inbox.messages[5:]
        assert [m.payload for m in again] == sent
        assert all(m.generation > first[0].generation for m in again)
        assert source.connected and source.pid not in (None, pid)
        assert source.ack(first) == 0, "messages of a lost connection are never acknowledged"
        assert source.ack(again) == 5
    finally:
        source.stop()
    assert not source.connected

    # Acknowledged through the pipe: a new session start sees nothing but what is new.
    inbox = _Inbox()
    source = _source(settings, inbox)
    source.start()
    try:
        publish_all(settings, [(topic, b"marker")])
        wait_until(lambda: b"marker" in inbox.payloads(), timeout_s=20, what="the marker")
        assert inbox.payloads() == [b"marker"]
    finally:
        source.stop()


def test_start_fails_clearly_when_the_broker_is_unreachable() -> None:
    settings = MqttSettings(url=f"mqtt://127.0.0.1:{free_port()}", connect_timeout_s=2)
    source = _source(settings, _Inbox())
    with pytest.raises(SourceError, match="broker"):
        source.start()
    assert source.pid is None


def test_messages_cross_the_pipe_in_order_and_a_lone_one_is_not_held(
    mqtt_settings: MqttSettings,
) -> None:
    settings = mqtt_settings.model_copy(update={"shared_group": None})
    topic = settings.uplink_topic("dev-1")
    # Fewer than the window plus a stock broker's queue (1,000 messages a client).
    sent = [f"m{i}".encode() for i in range(1500)]
    inbox = _Inbox()
    source = ProcessSource(
        settings=settings, receive_maximum=1000, deliver=inbox.put, restart_delay_s=0.1
    )
    source.start()
    acked = 0

    def received(count: int) -> bool:
        nonlocal acked
        with inbox.lock:
            new = inbox.messages[acked:]
        acked += source.ack(new)  # as ingest does, so that the broker sends the rest
        return len(inbox.messages) == count

    try:
        publish_all(settings, [(topic, p) for p in sent])
        wait_until(lambda: received(len(sent)), timeout_s=60, what="every message")
        # Batches forwarded by either of the child's threads keep the order of the messages.
        assert inbox.payloads() == sent
        # A message arriving alone is forwarded without waiting for others to fill a batch.
        publish_all(settings, [(topic, b"alone")])
        wait_until(lambda: received(len(sent) + 1), timeout_s=5, what="the lone message")
        assert inbox.payloads()[-1] == b"alone"
    finally:
        source.stop()
