"""The ingest service end to end: a real `python -m ingest` process, the local broker and a
fresh database per test."""

from __future__ import annotations

import json
import time

import pytest

from pantau.settings import MqttSettings
from pantau.tools.services import wait_until
from tests.fixtures.ingest import IngestFactory
from tests.ingest.helpers import observations, publish_all, scalar


def _readings(url: str) -> int:
    value = scalar(url, "SELECT count(*) FROM readings")
    assert isinstance(value, int)
    return value


@pytest.mark.parametrize("mqtt_process", [True, False], ids=["mqtt-process", "mqtt-thread"])
def test_every_published_reading_is_stored_once(
    city_db: str, mqtt_settings: MqttSettings, ingest_factory: IngestFactory, mqtt_process: bool
) -> None:
    ingest = ingest_factory(database_url=city_db, mqtt=mqtt_settings, mqtt_process=mqtt_process)
    assert ingest.metric("pantau_ingest_first_message_timestamp_seconds") == 0
    root = mqtt_settings.topic_root
    before = time.time()
    messages = (
        observations(root, "fg-welang-1", 1500)
        + observations(root, "fg-welang-2", 1500)
        + observations(root, "tc-bangil-1", 500, metric="count_motorcycle")
    )
    publish_all(mqtt_settings, messages)
    wait_until(lambda: _readings(city_db) == 3500, timeout_s=60, what="3500 readings stored")
    wait_until(lambda: ingest.metric("pantau_ingest_inflight_messages") == 0, timeout_s=10,
               what="everything acknowledged")  # fmt: skip
    assert ingest.metric("pantau_ingest_messages_received_total") == 3500
    assert ingest.metric("pantau_ingest_readings_inserted_total") == 3500
    assert ingest.metric("pantau_ingest_publish_to_commit_seconds_count") == 3500
    # What the benchmark times a drain with: first receipt, then last commit.
    first = ingest.metric("pantau_ingest_first_message_timestamp_seconds")
    assert before <= first <= ingest.metric("pantau_ingest_last_commit_timestamp_seconds")
    assert scalar(city_db, "SELECT count(*) FROM latest_readings") == 3
    status, health = ingest.health()
    assert status == 200 and health["mqtt_connected"] and health["database_up"]
    assert health["last_commit_age_s"] is not None
    assert ingest.terminate() == 0


def test_sequence_gaps_are_counted_per_sensor(
    city_db: str, mqtt_settings: MqttSettings, ingest_factory: IngestFactory
) -> None:
    ingest = ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    root = mqtt_settings.topic_root
    sent = [m for i, m in enumerate(observations(root, "fg-welang-3", 50)) if i not in (10, 11, 30)]
    publish_all(mqtt_settings, sent)
    wait_until(lambda: _readings(city_db) == 47, timeout_s=30, what="readings stored")
    assert ingest.metric("pantau_ingest_sequence_gaps_total", sensor="fg-welang-3") == 3


def test_bad_payloads_are_rejected_acked_and_not_redelivered(
    city_db: str, mqtt_settings: MqttSettings, ingest_factory: IngestFactory
) -> None:
    ingest = ingest_factory(database_url=city_db, mqtt=mqtt_settings, max_payload_bytes=2048)
    root = mqtt_settings.topic_root
    good_ts = observations(root, "fg-welang-1", 1)[0][1]
    ts = json.loads(good_ts)["ts"]
    bad = {
        "malformed_json": (f"{root}/up/fg-welang-1", b'{"ts": '),
        "bad_shape": (f"{root}/up/fg-welang-1", b'"just a string"'),
        "unknown_sensor": (f"{root}/up/nobody-1", json.dumps({"ts": ts, "values": {"x": 1}}).encode()),
        "unknown_metric": (f"{root}/up/fg-welang-1", json.dumps({"ts": ts, "values": {"speed": 1}}).encode()),
        "out_of_range": (f"{root}/up/fg-welang-1", json.dumps({"ts": ts, "values": {"water_level": 99}}).encode()),
        "non_finite": (f"{root}/up/fg-welang-1", b'{"ts": "%s", "values": {"water_level": NaN}}' % ts.encode()),
        "future_time": (f"{root}/up/fg-welang-1", json.dumps({"ts": 4102444800, "values": {"water_level": 1}}).encode()),
        "too_old": (f"{root}/up/fg-welang-1", json.dumps({"ts": "2001-01-01T00:00:00+07:00", "values": {"water_level": 1}}).encode()),
        "oversized": (f"{root}/up/fg-welang-1", b"[" + b" " * 4096 + b"]"),
        "foreign_sensor": (f"{root}/up/sn-bangil-1", json.dumps({"sensor": "fg-welang-1", "ts": ts, "values": {"water_level": 4.3}}).encode()),
    }  # fmt: skip
    partly_good = (
        f"{root}/up/fg-welang-2",
        json.dumps({"ts": ts, "values": {"water_level": 1.25, "rainfall": -5}}).encode(),
    )
    publish_all(mqtt_settings, [*bad.values(), partly_good])
    wait_until(
        lambda: scalar(city_db, "SELECT count(*) FROM rejected_payloads") == len(bad) + 1,
        timeout_s=30,
        what="every rejection recorded",
    )
    with_reasons = scalar(
        city_db,
        "SELECT json_object_agg(reason, convert_from(substr(payload, 1, 20), 'SQL_ASCII')) "
        "FROM rejected_payloads",
    )
    assert isinstance(with_reasons, dict)
    assert set(with_reasons) == set(bad)  # partly_good's negative rainfall is out_of_range too
    assert _readings(city_db) == 1  # the good half of the partly bad payload
    for reason in bad:
        assert ingest.metric("pantau_ingest_rejected_total", reason=reason) >= 1

    # They were acknowledged: after a restart the broker has nothing to send again.
    assert ingest.terminate() == 0
    ingest.start()
    publish_all(mqtt_settings, observations(root, "fg-welang-3", 1))
    wait_until(lambda: _readings(city_db) == 2, timeout_s=30, what="sentinel stored")
    assert ingest.metric("pantau_ingest_messages_received_total") == 1
    assert scalar(city_db, "SELECT max(times_seen) FROM rejected_payloads") == 1


@pytest.mark.parametrize("mqtt_process", [True, False], ids=["mqtt-process", "mqtt-thread"])
def test_sigterm_flushes_commits_acks_and_keeps_the_session(
    city_db: str, mqtt_settings: MqttSettings, ingest_factory: IngestFactory, mqtt_process: bool
) -> None:
    # Batches never flush on their own: only the shutdown can commit these.
    ingest = ingest_factory(
        database_url=city_db,
        mqtt=mqtt_settings,
        mqtt_process=mqtt_process,
        batch_max_age_ms=3_600_000,
        batch_max_readings=1_000_000,
    )
    root = mqtt_settings.topic_root
    publish_all(mqtt_settings, observations(root, "fg-welang-1", 300))
    wait_until(lambda: ingest.metric("pantau_ingest_messages_received_total") == 300,
               timeout_s=30, what="messages received")  # fmt: skip
    assert _readings(city_db) == 0
    assert ingest.terminate() == 0
    assert _readings(city_db) == 300
    assert "stopped cleanly" in ingest.log()

    # The session outlives the process: what is published meanwhile waits at the broker.
    publish_all(mqtt_settings, observations(root, "fg-welang-1", 200, start=300))
    ingest.env["PANTAU_INGEST__BATCH_MAX_AGE_MS"] = "50"
    ingest.start()
    wait_until(lambda: _readings(city_db) == 500, timeout_s=30, what="queued messages stored")
    # None of the first 300 came back: they were acknowledged before the disconnect.
    assert ingest.metric("pantau_ingest_messages_received_total") == 200
    assert ingest.terminate() == 0


def test_two_processes_in_a_shared_group_split_the_load(
    city_db: str, mqtt_settings: MqttSettings, ingest_factory: IngestFactory
) -> None:
    first = ingest_factory(
        database_url=city_db, mqtt=mqtt_settings, client_id="a-" + mqtt_settings.client_id
    )
    second = ingest_factory(
        database_url=city_db, mqtt=mqtt_settings, client_id="b-" + mqtt_settings.client_id
    )
    root = mqtt_settings.topic_root
    messages = [
        m
        for sensor in ("fg-welang-1", "fg-welang-2", "fg-welang-3")
        for m in observations(root, sensor, 1000)
    ]
    publish_all(mqtt_settings, messages)
    wait_until(lambda: _readings(city_db) == 3000, timeout_s=60, what="3000 readings stored")
    received = [p.metric("pantau_ingest_messages_received_total") for p in (first, second)]
    assert sum(received) == 3000, "each message went to exactly one member"
    assert min(received) > 0, f"both members got a share: {received}"
    assert sum(p.metric("pantau_ingest_duplicates_dropped_total") for p in (first, second)) == 0
    assert first.terminate() == 0 and second.terminate() == 0


def test_rollups_are_materialised_while_ingest_runs(
    city_db: str, mqtt_settings: MqttSettings, ingest_factory: IngestFactory
) -> None:
    if scalar(city_db, "SELECT to_regclass('readings_1m_mat')") is None:
        pytest.skip("TimescaleDB: its refresh policies materialise the continuous aggregates")
    ingest = ingest_factory(database_url=city_db, mqtt=mqtt_settings, start=False)
    ingest.env["PANTAU_STORAGE__REFRESH_SCHEDULE"] = "PT0.2S"
    ingest.start()
    # Three minutes of readings from two hours ago: older than the watermark of the refresh
    # ingest ran at start, so only a refresh after they are stored can materialise them.
    publish_all(mqtt_settings, observations(mqtt_settings.topic_root, "fg-welang-1", 180))
    wait_until(
        lambda: scalar(city_db, "SELECT sum(value_count) FROM readings_1m_mat") == 180,
        timeout_s=30,
        what="the 1-minute rollup materialised",
    )
    assert scalar(city_db, "SELECT count(*) FROM readings_1m_mat") in (3, 4)
    assert scalar(city_db, "SELECT sum(value_count) FROM readings_1h_mat") == 180
    assert ingest.terminate() == 0
