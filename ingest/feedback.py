"""Rejection notices to devices: ``ROOT/down/DEVICE_ID/rejected``, rate-limited per device.

A second MQTT client of its own (client id ``CLIENT_ID-feedback``, no persistent session), so
that the uplink session and its acknowledgements never wait for it. Only rejections reach it:
accepted readings never pass through here. A device gets at most ``per_minute`` notices at
once, then ``per_minute`` a minute (a token bucket); the rest, and anything beyond a bounded
outgoing queue while the broker is away, are counted and dropped (every rejection is still
stored in ``rejected_payloads``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from pantau.db.store import RejectedPayload
from pantau.feedback import FEEDBACK_QOS
from pantau.logs import get_logger
from pantau.mqtt import mqtt_client
from pantau.ratelimit import TokenBuckets
from pantau.settings import MqttSettings
from pantau.topics import Notice, feedback_topic, payload_digest, uplink_device

log = get_logger(__name__)

# Notices held while the broker is away, at most; later ones are dropped.
_MAX_QUEUED = 1_000
# Devices the rate limit tracks at once; beyond them the one heard from least recently is
# forgotten (pantau.ratelimit).
_MAX_DEVICES = 10_000


class FeedbackPublisher:
    """Publishes rejection notices; ``rejected`` is called by the pipeline, never blocks."""

    def __init__(
        self,
        *,
        settings: MqttSettings,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        # `per_minute` at once, then as many a minute; 0: none at all.
        self._limiter = (
            TokenBuckets(
                rate_per_s=per_minute / 60, burst=per_minute, max_keys=_MAX_DEVICES, clock=clock
            )
            if per_minute > 0
            else None
        )
        self.published = 0
        self.limited = 0
        self.dropped = 0
        self._client = mqtt_client(settings, client_id=f"{settings.client_id}-feedback")
        self._client.max_queued_messages_set(_MAX_QUEUED)
        self._client.reconnect_delay_set(min_delay=1, max_delay=settings.reconnect_max_delay_s)
        self._client.on_connect = self._on_connect

    def start(self) -> None:
        """Connect in the background; notices wait (bounded) until the broker answers."""
        self._client.connect_async(
            self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def rejected(self, records: Sequence[RejectedPayload]) -> None:
        """Notify the devices whose payloads these rejections are of (rate-limited)."""
        root = self._settings.topic_root
        for record in records:
            device = uplink_device(record.topic, root)
            if device is None:
                continue  # no device to tell (e.g. bad_topic)
            if self._limiter is None or self._limiter.take(device) > 0:
                self.limited += 1
                continue
            notice = Notice(
                device=device,
                reason=record.rejection.reason.value,
                detail=record.rejection.detail,
                topic=record.topic,
                time=record.received_at,
                payload_sha256=payload_digest(record.payload),
                payload_bytes=len(record.payload),
            )
            info = self._client.publish(
                feedback_topic(root, device), notice.to_json(), qos=FEEDBACK_QOS, retain=False
            )
            # NO_CONN: queued for the reconnect; QUEUE_SIZE: the queue is full.
            if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                self.published += 1
            else:
                self.dropped += 1

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("feedback publisher refused by the broker", reason=str(reason))
