"""Device feedback: what ingest tells a device about payloads it refused, and how to listen.

Ingest publishes one JSON message per rejection to ``ROOT/down/DEVICE_ID/rejected`` (QoS 1, not
retained, at most ``PANTAU_INGEST__FEEDBACK_PER_MINUTE`` a minute per device). Under the
production ACL only the device itself (and ingest) may read its ``ROOT/down/DEVICE_ID/#``.
:class:`FeedbackListener` subscribes to one device's notices; ``pantau simulate send`` uses it to
report the outcome of a reading, and ``pantau devices watch DEVICE_ID`` prints them as they come.
"""

from __future__ import annotations

import queue
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from pantau.mqtt import mqtt_client
from pantau.settings import MqttSettings
from pantau.topics import Notice, feedback_topic

FEEDBACK_QOS = 1


class FeedbackError(RuntimeError):
    """The broker cannot be reached or refused the subscription; the message says why."""


class FeedbackListener:
    """A subscription to one device's rejection notices; ``get`` hands them out in order."""

    def __init__(
        self,
        *,
        mqtt_settings: MqttSettings,
        device_id: str,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.topic = feedback_topic(mqtt_settings.topic_root, device_id)
        self._settings = mqtt_settings
        self._notices: queue.SimpleQueue[Notice] = queue.SimpleQueue()
        self._subscribed = threading.Event()
        self._error: str | None = None
        self.ignored = 0  # messages on the topic that were not notices
        self._client = mqtt_client(
            mqtt_settings,
            client_id=f"pantau-watch-{uuid.uuid4().hex[:8]}",
            username=username,
            password=password,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; raises FeedbackError when that fails within ``timeout_s``."""
        where = f"{self._settings.host}:{self._settings.port}"
        try:
            self._client.connect(self._settings.host, self._settings.port, keepalive=30)
        except OSError as error:
            raise FeedbackError(f"cannot reach the broker at {where}: {error}") from None
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s) or self._error is not None:
            self.stop()
            raise FeedbackError(self._error or f"no answer from the broker at {where}")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def get(self, timeout_s: float) -> Notice | None:
        """The next notice, or None when none arrives within ``timeout_s``."""
        try:
            return self._notices.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None

    def __enter__(self) -> FeedbackListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._error = f"the broker refused the connection: {reason}"
            self._subscribed.set()
            return
        client.subscribe(self.topic, qos=FEEDBACK_QOS)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        if reasons and reasons[0].is_failure:
            self._error = f"the broker refused the subscription to {self.topic}: {reasons[0]}"
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._notices.put(Notice.from_json(bytes(message.payload)))
        except ValueError:
            self.ignored += 1
