"""Every MQTT topic of Pantau, and the rejection notice ingest sends a device.

Under a topic root (``PANTAU_MQTT__TOPIC_ROOT``):

- ``ROOT/up/DEVICE_ID``: a device's (or gateway's) readings, the only topics devices write;
- ``ROOT/down/DEVICE_ID/rejected``: ingest's rejection notices to that device (:class:`Notice`);
- ``ROOT/alerts/events``, ``ROOT/status/SENSOR_ID`` and ``ROOT/warning/GAUGE_ID``: what the
  alert service publishes (alert changes, each sensor's alert status, the warning posts'
  commands).

Ingest subscribes to every uplink, as ``$share/GROUP/ROOT/up/+`` when its processes share the
load. The broker's ACL (``pantau broker config``) is written from the same names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

UP = "up"
DOWN = "down"
ALERTS = "alerts"
STATUS = "status"
WARNING = "warning"


def uplink_topic(root: str, device_id: str) -> str:
    """The topic a device publishes its readings to."""
    return f"{root}/{UP}/{device_id}"


def uplink_filter(root: str) -> str:
    """The topic filter covering every device's uplink."""
    return f"{root}/{UP}/+"


def shared_filter(group: str, topic_filter: str) -> str:
    """``topic_filter`` as a shared subscription of ``group``: each message goes to one member."""
    return f"$share/{group}/{topic_filter}"


def branch_filter(root: str, branch: str) -> str:
    """The topic filter covering one branch of the tree (``ROOT/BRANCH/#``), as the ACL grants it."""
    return f"{root}/{branch}/#"


def downlink_filter(root: str, device_id: str) -> str:
    """The topic filter covering everything sent down to one device."""
    return f"{root}/{DOWN}/{device_id}/#"


def uplink_device(topic: str, root: str) -> str | None:
    """The device id in ``ROOT/up/DEVICE_ID``, or None when the topic is not an uplink."""
    prefix = f"{root}/{UP}/"
    if not topic.startswith(prefix):
        return None
    device = topic[len(prefix) :]
    return device if device and "/" not in device else None


def feedback_topic(root: str, device_id: str) -> str:
    """The topic ingest publishes ``device_id``'s rejection notices to."""
    return f"{root}/{DOWN}/{device_id}/rejected"


def events_topic(root: str) -> str:
    """The alert service's stream of alert changes."""
    return f"{root}/{ALERTS}/events"


def status_topic(root: str, sensor_id: str) -> str:
    """A sensor's current alert status (retained)."""
    return f"{root}/{STATUS}/{sensor_id}"


def warning_topic(root: str, gauge_id: str) -> str:
    """The command to the warning posts that follow a gauge (retained)."""
    return f"{root}/{WARNING}/{gauge_id}"


def payload_digest(payload: bytes) -> str:
    """SHA-256 of a payload, in hex: lets a sender tell its own message's notice apart."""
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class Notice:
    """One rejection, as published on a device's feedback topic."""

    device: str
    reason: str
    detail: str
    topic: str
    time: datetime
    payload_sha256: str
    payload_bytes: int

    def to_json(self) -> bytes:
        body = {
            "device": self.device,
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "time": self.time.isoformat(),
            "payload_sha256": self.payload_sha256,
            "payload_bytes": self.payload_bytes,
        }
        return json.dumps(body, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Notice:
        """Parse a notice; raises ValueError for anything else."""
        try:
            body = json.loads(raw)
            return cls(
                device=str(body["device"]),
                reason=str(body["reason"]),
                detail=str(body["detail"]),
                topic=str(body["topic"]),
                time=datetime.fromisoformat(body["time"]),
                payload_sha256=str(body.get("payload_sha256", "")),
                payload_bytes=int(body.get("payload_bytes", 0)),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a rejection notice: {error}") from None

    def describe(self) -> str:
        return f"rejected ({self.reason}): {self.detail}"
