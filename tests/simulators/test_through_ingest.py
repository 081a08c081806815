"""A clean run through the real ingest service verifies; readings removed on purpose are found."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from pantau.city import City
from pantau.settings import MqttSettings
from pantau.tools.services import wait_until
from simulators.config import RunConfig
from simulators.faults import FaultConfig
from simulators.manifest import load_manifest
from simulators.runner import Simulation
from simulators.send import send_reading
from simulators.verify import verify

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ingest") is None, reason="the ingest service is not installed"
)


@pytest.fixture
def ingest_process(
    tmp_path: Path, city_db: str, mqtt_settings: MqttSettings, mini_city: City
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m ingest` on this test's database and topics, once it stores readings."""
    env = {
        **os.environ,
        "PANTAU_DATABASE_URL": city_db,
        "PANTAU_MQTT__URL": mqtt_settings.url,
        "PANTAU_MQTT__TOPIC_ROOT": mqtt_settings.topic_root,
        "PANTAU_MQTT__CLIENT_ID": mqtt_settings.client_id,
        "PANTAU_MQTT__SHARED_GROUP": mqtt_settings.shared_group or "",
        "PANTAU_INGEST__METRICS_PORT": "0",
    }
    log = (tmp_path / "ingest.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "ingest"], env=env, cwd=tmp_path, stdout=log, stderr=log
    )
    # Probe: a reading from a day ago (outside any run's time range) until ingest stores one.
    probe_time = [datetime.now(UTC) - timedelta(days=1)]

    def stored() -> bool:
        assert process.poll() is None, (tmp_path / "ingest.log").read_text()[-2000:]
        probe_time[0] += timedelta(seconds=1)
        send_reading(
            mqtt=mqtt_settings,
            city=mini_city,
            sensor_id="fg-welang-1",
            values={"battery": 12.5},
            ts=probe_time[0],
        )
        with psycopg.connect(city_db) as conn:
            row = conn.execute(
                "SELECT count(*) FROM readings WHERE sensor_id = 'fg-welang-1' "
                "AND metric = 'battery' AND time < now() - interval '12 hours'"
            ).fetchone()
        return bool(row and row[0])

    try:
        wait_until(stored, timeout_s=60, what="ingest storing readings")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _count(conninfo: str, sql: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def test_clean_run_through_ingest_verifies_and_deletions_are_found(
    tmp_path: Path,
    city_db: str,
    mqtt_settings: MqttSettings,
    mini_city: City,
    ingest_process: subprocess.Popen[bytes],
) -> None:
    faults = FaultConfig(duplicates=0.05, malformed=0.02, out_of_range=0.02, out_of_order=0.02)
    config = RunConfig(
        backfill=timedelta(hours=2), seed=8, shape="list", faults=faults, manifest=tmp_path / "m"
    )
    stats = Simulation(city=mini_city, mqtt=mqtt_settings, config=config).run()
    assert stats.errors == 0 and stats.faults["duplicate"] > 0
    manifest = load_manifest(tmp_path / "m")
    first, _ = manifest.time_range()  # type: ignore[misc]
    rejected = {f.payload for f in manifest.faults if f.expect_rejected}
    wait_until(
        lambda: (
            _count(city_db, f"SELECT count(*) FROM readings WHERE time >= '{first.isoformat()}'")
            >= len(manifest.valid)
            and _count(city_db, "SELECT count(DISTINCT payload) FROM rejected_payloads")
            >= len(rejected)
        ),
        timeout_s=60,
        what="ingest to store the run",
    )
    report = verify(city_db, manifest)
    assert report.lost == [] and report.duplicated == 0
    assert report.ok, report
    assert report.expected == report.stored == len(manifest.valid)

    # Remove some readings on purpose: verify names exactly those.
    removed = sorted(manifest.valid)[10:17]
    with psycopg.connect(city_db, autocommit=True) as conn:
        for sensor, metric, time in removed:
            conn.execute(
                "DELETE FROM readings WHERE sensor_id = %s AND metric = %s AND time = %s",
                [sensor, metric, time],
            )
    after = verify(city_db, manifest)
    assert after.lost == removed
    assert after.stored == len(manifest.valid) - len(removed)
    assert after.duplicated == 0 and not after.ok
