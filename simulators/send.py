"""Publishing one hand-made reading (to test a device path or trigger an alert)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from pantau.catalogue import find_metric, metrics_of
from pantau.city import City
from pantau.feedback import FeedbackError, FeedbackListener
from pantau.settings import MqttSettings
from pantau.topics import Notice, payload_digest
from simulators.publisher import Credentials, Publisher, PublishError, run_token


class SendError(ValueError):
    """The reading cannot be sent as asked; the message says why."""


def parse_values(pairs: list[str]) -> dict[str, float]:
    """``["water_level=2.7", "rainfall=12"]`` to a mapping; raises SendError on bad input."""
    if not pairs:
        raise SendError("give at least one METRIC=VALUE")
    values: dict[str, float] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip() or not raw.strip():
            raise SendError(f"expected METRIC=VALUE, got {pair!r}")
        try:
            values[name.strip()] = float(raw)
        except ValueError:
            raise SendError(f"{name.strip()}: not a number: {raw!r}") from None
    return values


def build_payload(
    city: City, sensor_id: str, values: dict[str, float], *, ts: datetime, check_range: bool = True
) -> bytes:
    """One observation of ``sensor_id``, validated against the city file and the catalogue."""
    try:
        sensor = city.sensor(sensor_id)
    except KeyError:
        raise SendError(
            f"unknown sensor {sensor_id!r}: not in the city file ({city.name})"
        ) from None
    body: dict[str, float | int] = {}
    for name, value in values.items():
        metric = find_metric(sensor.family, name)
        if metric is None:
            known = ", ".join(metrics_of(sensor.family))
            raise SendError(f"{sensor.family.value} {sensor_id} has no metric {name!r} ({known})")
        if check_range and not metric.in_range(value):
            raise SendError(
                f"{name}={value:g} is outside {metric.minimum:g}..{metric.maximum:g} "
                f"{metric.unit} (ingest would reject it; --force sends it anyway)"
            )
        if metric.integer and value.is_integer():
            body[name] = int(value)
        else:
            body[name] = value
    if ts.tzinfo is None:
        raise SendError("the time needs a UTC offset")
    return json.dumps({"ts": ts.isoformat(), "values": body}).encode()


def send_reading(
    *,
    mqtt: MqttSettings,
    city: City,
    sensor_id: str,
    values: dict[str, float],
    ts: datetime | None = None,
    credentials: Credentials | None = None,
    check_range: bool = True,
    timeout_s: float = 10.0,
) -> tuple[str, bytes]:
    """Publish one reading with QoS 1 and wait for the PUBACK; returns (topic, payload).

    Raises SendError for a bad sensor, metric or value, and PublishError when the broker is
    unreachable, refuses the login or the message, or does not answer in ``timeout_s``.
    """
    payload = build_payload(
        city, sensor_id, values, ts=ts or datetime.now(UTC), check_range=check_range
    )
    username, password = _login(credentials, sensor_id)
    publisher = Publisher(
        mqtt_settings=mqtt,
        client_id=f"pantau-send-{run_token()}",
        username=username,
        password=password,
        window=1,
    )
    publisher.connect()
    topic = mqtt.uplink_topic(sensor_id)
    try:
        publisher.publish(topic, payload, timeout_s=timeout_s)
        if not publisher.flush(timeout_s=timeout_s):
            raise PublishError(f"no PUBACK from {publisher.where} within {timeout_s:g} s")
        if publisher.errors:
            raise PublishError(f"broker refused the reading: {publisher.last_error}")
    finally:
        publisher.close()
    return topic, payload


def _login(credentials: Credentials | None, device_id: str) -> tuple[str | None, str | None]:
    """User name and password of a device (its id is its user name); none without credentials."""
    if credentials is None:
        return None, None
    return device_id, credentials.password(device_id)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a sent reading, as far as could be seen within the wait."""

    stored: bool = False
    rejections: tuple[Notice, ...] = ()
    # Why neither was seen, when neither was.
    unknown: str = ""

    @property
    def rejected(self) -> bool:
        return bool(self.rejections)


def send_and_confirm(
    *,
    mqtt: MqttSettings,
    city: City,
    sensor_id: str,
    values: dict[str, float],
    ts: datetime | None = None,
    credentials: Credentials | None = None,
    check_range: bool = True,
    timeout_s: float = 10.0,
    wait_s: float = 3.0,
    database_url: str | None = None,
) -> tuple[str, bytes, Outcome]:
    """Send one reading like :func:`send_reading`, then wait up to ``wait_s`` for its outcome.

    Rejected: ingest's notice on the device's feedback topic (subscribed before publishing).
    Stored: the reading's keys in ``readings``, where ``database_url`` is given and answers.
    """
    when = ts or datetime.now(UTC)
    listener: FeedbackListener | None = None
    unknown = ""
    if wait_s > 0:
        username, password = _login(credentials, sensor_id)
        listener = FeedbackListener(
            mqtt_settings=mqtt, device_id=sensor_id, username=username, password=password
        )
        try:
            listener.start(timeout_s=min(timeout_s, mqtt.connect_timeout_s))
        except FeedbackError as error:
            listener, unknown = None, f"no rejection notices: {error}"
    try:
        topic, payload = send_reading(
            mqtt=mqtt, city=city, sensor_id=sensor_id, values=values, ts=when,
            credentials=credentials, check_range=check_range, timeout_s=timeout_s,
        )  # fmt: skip
        if wait_s <= 0:
            return topic, payload, Outcome(unknown="not waited for")
        metrics = list(json.loads(payload)["values"])
        outcome = _await_outcome(
            listener, payload, sensor_id, metrics, when, database_url, wait_s, unknown
        )
    finally:
        if listener is not None:
            listener.stop()
    return topic, payload, outcome


def _await_outcome(
    listener: FeedbackListener | None,
    payload: bytes,
    sensor_id: str,
    metrics: list[str],
    when: datetime,
    database_url: str | None,
    wait_s: float,
    unknown: str,
) -> Outcome:
    deadline = time.monotonic() + wait_s
    digest = payload_digest(payload)
    conn: psycopg.Connection | None = None
    if database_url is not None:
        try:
            conn = psycopg.connect(database_url, autocommit=True, connect_timeout=2)
        except psycopg.Error as error:
            unknown = unknown or f"the database is not reachable to confirm storage ({error})"
    else:
        unknown = unknown or "no database configured to confirm storage"
    try:
        while (left := deadline - time.monotonic()) > 0:
            notice = listener.get(min(0.1, left)) if listener is not None else None
            if notice is not None and notice.payload_sha256 == digest:
                notices = [notice]
                # The other rejections of the same payload come right behind.
                while (more := listener.get(0.3) if listener is not None else None) is not None:
                    if more.payload_sha256 == digest:
                        notices.append(more)
                return Outcome(rejections=tuple(notices))
            if conn is not None:
                row = conn.execute(
                    "SELECT count(*) FROM readings WHERE sensor_id = %s AND metric = ANY(%s)"
                    " AND time = %s",
                    [sensor_id, metrics, when],
                ).fetchone()
                if row is not None and row[0] >= len(metrics):
                    return Outcome(stored=True)
            if listener is None:
                threading.Event().wait(min(0.1, left))
    except psycopg.Error as error:
        unknown = f"the database stopped answering ({error})"
    finally:
        if conn is not None:
            conn.close()
    return Outcome(unknown=unknown or f"not stored within {wait_s:g} s and no rejection notice")
