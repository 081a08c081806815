"""Warning-post commands: each change is recorded, with the alerts that led to it, before it goes
out on the real broker; a repeat or a restart records nothing new."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from alerts.publisher import Publisher
from alerts.service import settle
from alerts.source import AlertSession
from alerts.store import AlertStore
from pantau.settings import MqttSettings
from pantau.tools.services import wait_until
from tests.alerts.test_store import WALL_US, _evaluator, _flood, _store
from tests.fixtures.alerts import AlertWatcher

GAUGES = ["fg-welang-1", "fg-welang-2", "fg-welang-3"]


@pytest.fixture
def session(mqtt_settings: MqttSettings) -> Iterator[AlertSession]:
    session = AlertSession(
        settings=mqtt_settings, client_id=f"publisher-{uuid.uuid4().hex[:8]}", receive_maximum=10
    )
    session.start()
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def store(city_db: str) -> Iterator[AlertStore]:
    store = _store(city_db)
    try:
        yield store
    finally:
        store.close()


def _recorded(url: str) -> list[tuple[str, str, list[int]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT gauge_id, command ->> 'light', alert_ids FROM warning_commands ORDER BY id"
        ).fetchall()
    return [(g, light, list(ids)) for g, light, ids in rows]


def test_changed_commands_are_recorded_before_they_are_sent(
    city_db: str,
    store: AlertStore,
    session: AlertSession,
    mqtt_settings: MqttSettings,
    alert_watcher: AlertWatcher,
) -> None:
    evaluator = _evaluator(store)
    publisher = Publisher(
        session=session,
        topic_root=mqtt_settings.topic_root,
        record=store.record_warnings,
        sent=store.last_warnings(),
    )
    publisher.sensors(evaluator, evaluator.sensors)
    assert _recorded(city_db) == [(g, "off", []) for g in GAUGES]
    publisher.sensors(evaluator, evaluator.sensors)  # the same commands again
    assert len(_recorded(city_db)) == 3

    # Waspada at the top of the river: its posts turn yellow, and the advisory downstream too.
    evaluator.observe(_flood([(0, 1.0), (1, 1.6)]), received_us=WALL_US, wall_us=WALL_US)
    causes = settle(evaluator, store.commit(evaluator.take(), published_event_id=0))
    assert causes and all(causes.values())
    publisher.sensors(evaluator, set(causes), causes)
    new = _recorded(city_db)[3:]
    assert [(g, light) for g, light, _ in new] == [(g, "yellow") for g in sorted(causes)]
    for gauge, _, alert_ids in new:
        assert alert_ids == sorted(causes[gauge])
    root = mqtt_settings.topic_root
    wait_until(
        lambda: (
            alert_watcher.snapshot()[1].get(f"{root}/warning/fg-welang-1", {}).get("light")
            == "yellow"
        ),
        timeout_s=5,
        what="the yellow command on the broker",
    )

    # A restart sends every command again and records none: nothing changed.
    again = Publisher(
        session=session,
        topic_root=root,
        record=store.record_warnings,
        sent=store.last_warnings(),
    )
    again.sensors(evaluator, evaluator.sensors)
    assert len(_recorded(city_db)) == 3 + len(new)


def test_the_commands_cannot_be_rewritten(city_db: str, store: AlertStore) -> None:
    store.record_warnings([("fg-welang-1", {"light": "red", "siren": True}, [7])])
    with psycopg.connect(city_db, autocommit=True) as conn:
        for statement in (
            "UPDATE warning_commands SET alert_ids = '{}'",
            "DELETE FROM warning_commands",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
    assert _recorded(city_db) == [("fg-welang-1", "red", [7])]
