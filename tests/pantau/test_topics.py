"""Topic names (pantau.topics)."""

from __future__ import annotations

import pytest

from pantau.settings import MqttSettings
from pantau.topics import (
    events_topic,
    feedback_topic,
    shared_filter,
    status_topic,
    uplink_device,
    uplink_filter,
    uplink_topic,
    warning_topic,
)


def test_uplink_device() -> None:
    assert uplink_device("r/up/fg-1", "r") == "fg-1"
    assert uplink_device("r/down/fg-1", "r") is None
    assert uplink_device("r/up/fg-1/x", "r") is None
    assert uplink_device("r/up/", "r") is None
    assert uplink_device("other/up/fg-1", "r") is None


@pytest.mark.parametrize(
    ("topic", "device"),
    [("pantau/up/fg-1", "fg-1"), ("a/b/up/gw", "gw"), ("pantau/up/", None),
     ("pantau/up/x/y", None), ("other/up/fg-1", None), ("pantau/down/fg-1", None)],
)  # fmt: skip
def test_uplink_device_of_a_feedback_topic(topic: str, device: str | None) -> None:
    root = "a/b" if topic.startswith("a/b") else "pantau"
    assert uplink_device(topic, root) == device


def test_every_topic_under_the_root() -> None:
    assert uplink_topic("r", "fg-1") == "r/up/fg-1"
    assert uplink_filter("r") == "r/up/+"
    assert shared_filter("g", "r/up/+") == "$share/g/r/up/+"
    assert feedback_topic("r", "fg-1") == "r/down/fg-1/rejected"
    assert events_topic("r") == "r/alerts/events"
    assert status_topic("r", "fg-1") == "r/status/fg-1"
    assert warning_topic("r", "fg-1") == "r/warning/fg-1"
    settings = MqttSettings(topic_root="r")
    assert settings.uplink_topic("fg-1") == uplink_topic("r", "fg-1")
    assert settings.uplink_filter == uplink_filter("r")
