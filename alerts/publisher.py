"""Delivery over MQTT (docs/protocol.md): alert events, each sensor's retained status, and the
retained command of the warning posts following each flood gauge.

Publication follows the commit, so a crash between the two can leave events unsent: on start
the service sends every committed event after the last one it recorded as published, and may
thus send a few twice. Consumers dedupe by the event's ``id``.

A warning-post command that differs from the last one sent for its gauge is recorded (with the
alerts whose changes led to it) before it is published, so that an alert's history shows what
the posts were told; on start every command is sent again and only changed ones are recorded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from alerts.evaluator import Evaluator
from alerts.model import Rule
from alerts.source import AlertSession
from pantau.catalogue import Family
from pantau.payload import from_micros
from pantau.topics import events_topic, status_topic, warning_topic


def status(evaluator: Evaluator, sensor_id: str) -> dict[str, Any]:
    """A sensor's current alert status: its open alerts, worst first."""
    mine = sorted(
        ((rule, alert) for (sid, rule), alert in evaluator.open.items() if sid == sensor_id),
        key=lambda item: (-item[1].level, item[0]),
    )
    alerts = [
        {
            "alert_id": alert.alert_id,
            "rule": rule,
            "level": alert.level,
            "since": from_micros(alert.opened_us).isoformat(),
            "updated_at": from_micros(alert.updated_us).isoformat(),
            "message": alert.message,
            "message_en": alert.message_en,
        }
        for rule, alert in mine
    ]
    last = evaluator.last_seen_us(sensor_id)
    no_data = evaluator.no_data(sensor_id)
    out: dict[str, Any] = {
        "sensor_id": sensor_id,
        "level": max((alert.level for _, alert in mine), default=0),
        "alerts": alerts,
        "clock": from_micros(evaluator.clock_us).isoformat() if evaluator.clock_us else None,
        # Past its offline deadline the sensor's last values are history, not the state now.
        "no_data": no_data,
        "last_reading_at": None if last is None else from_micros(last).isoformat(),
    }
    flood = evaluator.open.get((sensor_id, Rule.FLOOD_LEVEL))
    sensor = evaluator.sensors.get(sensor_id)
    if sensor is not None and sensor.family is Family.FLOOD_GAUGE:
        out["flood_level"] = None if no_data else (flood.level if flood else 0)
    return out


# A gauge, its command, and the alerts whose changes led to it.
WarningCommand = tuple[str, dict[str, Any], list[int]]


class Publisher:
    """Sends what the store committed.

    ``record`` keeps each changed warning-post command before it is sent; ``sent``: the last
    command recorded for each gauge (so that a restart records only what changed).
    """

    def __init__(
        self,
        *,
        session: AlertSession,
        topic_root: str,
        record: Callable[[list[WarningCommand]], None] | None = None,
        sent: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self._session = session
        self._root = topic_root
        self._pending: deque[tuple[int, mqtt.MQTTMessageInfo]] = deque()
        self._record = record
        self._sent = dict(sent or {})

    def events(self, events: Iterable[dict[str, Any]]) -> None:
        """Publish event documents, in order."""
        for event in events:
            info = self._session.publish(events_topic(self._root), orjson.dumps(event))
            self._pending.append((int(event["id"]), info))

    def published_through(self) -> int | None:
        """The highest event id up to which the broker has acknowledged every event sent
        (None: nothing new). Only that is recorded as published: an event still in paho's
        queue when the process dies is sent again by the next instance."""
        newest = None
        while self._pending and self._pending[0][1].is_published():
            newest = self._pending.popleft()[0]
        return newest

    def sensors(
        self,
        evaluator: Evaluator,
        sensor_ids: Iterable[str],
        causes: Mapping[str, list[int]] | None = None,
    ) -> None:
        """Retained status of each sensor, and the warning command of each flood gauge;
        ``causes``: by sensor, the alerts whose changes led to this publication."""
        chosen = [s for s in sorted(set(sensor_ids)) if s in evaluator.sensors]
        commands = {
            s: evaluator.warning(s)
            for s in chosen
            if evaluator.sensors[s].family is Family.FLOOD_GAUGE
        }
        changed = [
            (gauge, command, list((causes or {}).get(gauge, ())))
            for gauge, command in commands.items()
            if self._sent.get(gauge) != command
        ]
        if changed and self._record is not None:
            self._record(changed)
        self._sent.update(commands)
        for sensor_id in chosen:
            self._session.publish(
                status_topic(self._root, sensor_id),
                orjson.dumps(status(evaluator, sensor_id)),
                retain=True,
            )
            if sensor_id in commands:
                self._session.publish(
                    warning_topic(self._root, sensor_id),
                    orjson.dumps(commands[sensor_id]),
                    retain=True,
                )
