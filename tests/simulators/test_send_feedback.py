"""`pantau simulate send` reports what became of the reading: stored, or rejected and why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from pantau.settings import MqttSettings
from pantau.tools.services import wait_until
from simulators.cli import app
from tests.fixtures.ingest import IngestFactory

MINI_CITY = str(Path(__file__).parent.parent / "data" / "mini-city.yaml")
runner = CliRunner()


def _send(mqtt_settings: MqttSettings, database: str | None, *args: str) -> tuple[int, str]:
    target = ["--mqtt-url", mqtt_settings.url, "--topic-root", mqtt_settings.topic_root]
    if database is not None:
        target += ["--database-url", database]
    result = runner.invoke(app, ["send", *args, *target, "--city", MINI_CITY, "--wait-s", "15"])
    return result.exit_code, result.output


def test_send_reports_stored_and_rejected(
    city_db: str, mqtt_settings: MqttSettings, ingest_factory: IngestFactory
) -> None:
    ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    code, output = _send(mqtt_settings, city_db, "fg-welang-3", "water_level=3.1", "rainfall=2")
    assert code == 0, output
    assert "sent to" in output and "stored" in output

    # Older than the retention of the test database: ingest refuses it and says so.
    code, output = _send(
        mqtt_settings, city_db, "fg-welang-3", "water_level=1", "--ts", "2020-01-01T07:00"
    )
    assert code == 1, output
    assert "rejected (too_old)" in output and "older than retention" in output
    assert "stored" not in output

    # Without a database to look in, the rejection still comes back over MQTT.
    code, output = _send(mqtt_settings, None, "fg-welang-1", "water_level=99", "--force")
    assert code == 1, output
    assert "rejected (out_of_range)" in output


def test_send_without_ingest_says_the_outcome_is_unknown(
    db_url: str, mqtt_settings: MqttSettings
) -> None:
    target = ["--mqtt-url", mqtt_settings.url, "--topic-root", mqtt_settings.topic_root]
    result = runner.invoke(
        app,
        ["send", "fg-welang-1", "water_level=1", *target, "--city", MINI_CITY,
         "--database-url", db_url, "--wait-s", "0.5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "outcome unknown: not stored within 0.5 s" in result.output


def test_devices_watch_prints_the_notices(
    tmp_path: Path, city_db: str, mqtt_settings: MqttSettings, ingest_factory: IngestFactory
) -> None:
    ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    target = ["--mqtt-url", mqtt_settings.url, "--topic-root", mqtt_settings.topic_root]
    errors = tmp_path / "watch.err"
    watch = subprocess.Popen(
        [sys.executable, "-m", "pantau", "devices", "watch", "fg-welang-2", *target,
         "--count", "1", "--timeout-s", "30"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=errors.open("w"), text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")},
    )  # fmt: skip
    try:
        wait_until(lambda: "watching" in errors.read_text(), timeout_s=30, what="the watcher")
        code, output = _send(mqtt_settings, None, "fg-welang-2", "water_level=-9", "--force")
        assert code == 1, output
        out, _ = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 0, errors.read_text()
    [line] = out.splitlines()
    assert f"{mqtt_settings.topic_root}/up/fg-welang-2" in line and "out_of_range" in line
