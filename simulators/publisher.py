"""Publishing over MQTT v5 with QoS 1: connection, flow control and per-device credentials.

A :class:`Publisher` owns one paho client. ``publish`` blocks while ``window`` messages await
their PUBACK, so a fast producer (backfill, load) is paced by the broker instead of growing an
unbounded queue in memory; ``flush`` waits for every outstanding PUBACK.

When the broker requires per-device logins (ACL ``pattern write ROOT/up/%u``), a
:class:`PublisherPool` opens one connection per device, with the device id as user name.
"""

from __future__ import annotations

import csv
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pantau.mqtt import mqtt_client
from pantau.settings import MqttSettings


class PublishError(RuntimeError):
    """The broker cannot be reached, refused us, or did not acknowledge in time."""


class CredentialsError(ValueError):
    """A credentials file cannot be read; the message says where and why."""


def run_token() -> str:
    """A short random token that makes client ids unique per run."""
    return uuid.uuid4().hex[:8]


@dataclass(frozen=True, slots=True)
class Credentials:
    """Passwords of device (and gateway) accounts: from a file, or from a template.

    The template may use ``{device}``, e.g. ``secret-{device}``.
    """

    passwords: Mapping[str, str]
    template: str | None = None

    def password(self, device_id: str) -> str:
        if device_id in self.passwords:
            return self.passwords[device_id]
        if self.template is not None:
            return self.template.format(device=device_id)
        raise CredentialsError(f"no password for device {device_id!r}")

    @classmethod
    def from_template(cls, template: str) -> Credentials:
        if "{device}" not in template:
            raise CredentialsError("the password template must contain {device}")
        return cls(passwords={}, template=template)

    @classmethod
    def from_file(cls, path: Path) -> Credentials:
        """Read a YAML mapping (device: password) or a CSV file (device,password per line)."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise CredentialsError(f"{path}: {error.strerror or error}") from None
        passwords: dict[str, str] = {}
        if path.suffix.lower() == ".csv":
            for number, row in enumerate(csv.reader(text.splitlines()), start=1):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) != 2 or not row[0].strip():
                    raise CredentialsError(f"{path}:{number}: expected `device,password`")
                if row[0].strip() in {"device", "device_id"} and number == 1:
                    continue  # a header line
                passwords[row[0].strip()] = row[1].strip()
        else:
            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise CredentialsError(f"{path}: not valid YAML: {error}") from None
            if not isinstance(raw, dict) or not all(
                isinstance(k, str) and isinstance(v, str | int) for k, v in raw.items()
            ):
                raise CredentialsError(f"{path}: expected a mapping of device id to password")
            passwords = {k: str(v) for k, v in raw.items()}
        if not passwords:
            raise CredentialsError(f"{path}: no credentials in the file")
        return cls(passwords=passwords)


class Publisher:
    """One MQTT v5 connection that publishes with QoS 1 and bounded in-flight messages."""

    def __init__(
        self,
        *,
        mqtt_settings: MqttSettings,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        qos: int = 1,
        window: int = 500,
    ) -> None:
        self.settings = mqtt_settings
        self.client_id = client_id
        self.qos = qos
        self.window = max(1, window)
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.last_error: str | None = None
        self._submitted = 0
        self._completed = 0
        self._lock = threading.Condition()
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._client = mqtt_client(
            mqtt_settings, client_id=client_id, username=username, password=password
        )
        # The window is kept here (publish blocks), not by paho: with an in-flight limit set,
        # paho walks every outstanding message on each PUBACK, which made a fast producer spend
        # half its time on its own bookkeeping at a window of 1,000.
        self._client.max_inflight_messages_set(0)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._started = False

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def connect(self) -> None:
        """Connect and wait for the CONNACK; raises PublishError with the reason."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 0
        try:
            self._client.connect(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive_s,
                clean_start=True,
                properties=properties,
            )
        except (OSError, ssl.SSLError) as error:
            raise PublishError(f"cannot reach the broker at {self.where}: {error}") from None
        self._client.loop_start()
        self._started = True
        deadline = time.monotonic() + self.settings.connect_timeout_s
        while not self._connected.wait(0.05):
            if self._connect_error is not None or time.monotonic() > deadline:
                reason = self._connect_error or f"no answer in {self.settings.connect_timeout_s} s"
                self.close()
                raise PublishError(f"broker at {self.where} refused {self.client_id}: {reason}")

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._connect_error = str(reason_code)
            # Stop paho from retrying a login the broker refuses.
            client.disconnect()
        else:
            self._connect_error = None
            self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # Runs on paho's network thread while it holds its own message lock: never call into
        # the client from here, and never hold our lock while calling into the client.
        with self._lock:
            self._completed += 1
            if reason_code.is_failure:
                self.errors += 1
                self.last_error = str(reason_code)
            else:
                self.acked += 1
            self._lock.notify_all()

    def publish(self, topic: str, payload: bytes, *, timeout_s: float = 60.0) -> None:
        """Publish one message; blocks while ``window`` messages await their PUBACK."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._submitted - self._completed >= self.window:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PublishError(
                        f"broker at {self.where} acknowledged nothing for {timeout_s:g} s"
                    )
                self._lock.wait(min(left, 0.5))
            self._submitted += 1
        info = self._client.publish(topic, payload, qos=self.qos)
        with self._lock:
            if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                # NO_CONN keeps the message queued: paho sends it after reconnecting.
                self.sent += 1
            else:
                self._submitted -= 1
                self.errors += 1
                self.last_error = mqtt.error_string(info.rc)
                self._lock.notify_all()

    @property
    def outstanding(self) -> int:
        """Messages published and not yet acknowledged."""
        with self._lock:
            return self._submitted - self._completed

    def flush(self, *, timeout_s: float = 60.0) -> bool:
        """Wait until every published message is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._submitted > self._completed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False


class PublisherPool:
    """Publishers by device: one shared connection, or one per device with its own login."""

    def __init__(
        self,
        *,
        mqtt_settings: MqttSettings,
        client_prefix: str,
        credentials: Credentials | None = None,
        qos: int = 1,
        window: int = 500,
    ) -> None:
        self.settings = mqtt_settings
        self.client_prefix = client_prefix
        self.credentials = credentials
        self.qos = qos
        self.window = window
        self._publishers: dict[str, Publisher] = {}

    def _new(self, name: str, username: str | None, password: str | None) -> Publisher:
        publisher = Publisher(
            mqtt_settings=self.settings,
            client_id=f"{self.client_prefix}-{name}"[:64],
            username=username,
            password=password,
            qos=self.qos,
            window=self.window,
        )
        publisher.connect()
        return publisher

    def for_device(self, device_id: str) -> Publisher:
        """The connection a device publishes on (connecting it on first use)."""
        key = device_id if self.credentials is not None else ""
        publisher = self._publishers.get(key)
        if publisher is None:
            if self.credentials is None:
                publisher = self._new("shared", None, None)
            else:
                publisher = self._new(device_id, device_id, self.credentials.password(device_id))
            self._publishers[key] = publisher
        return publisher

    def publish(self, device_id: str, payload: bytes) -> None:
        """Publish on ``ROOT/up/DEVICE_ID`` over that device's connection."""
        self.for_device(device_id).publish(self.settings.uplink_topic(device_id), payload)

    @property
    def publishers(self) -> list[Publisher]:
        return list(self._publishers.values())

    @property
    def sent(self) -> int:
        return sum(p.sent for p in self._publishers.values())

    @property
    def acked(self) -> int:
        return sum(p.acked for p in self._publishers.values())

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self._publishers.values())

    def last_error(self) -> str | None:
        for publisher in self._publishers.values():
            if publisher.last_error:
                return publisher.last_error
        return None

    def flush(self, *, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        return all(
            p.flush(timeout_s=max(0.0, deadline - time.monotonic()))
            for p in self._publishers.values()
        )

    def close(self) -> None:
        for publisher in self._publishers.values():
            publisher.close()
        self._publishers.clear()
