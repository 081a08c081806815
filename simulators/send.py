"""Publishing one hand-made reading (to test a device path or trigger an alert)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pantau.catalogue import find_metric, metrics_of
from pantau.city import City
from pantau.settings import MqttSettings
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
    username = password = None
    if credentials is not None:
        username, password = sensor_id, credentials.password(sensor_id)
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
