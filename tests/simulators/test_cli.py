from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pantau.settings import MqttSettings
from simulators.cli import app
from simulators.manifest import load_manifest
from tests.fixtures.simulator import Collector

MINI_CITY = str(Path(__file__).parent.parent / "data" / "mini-city.yaml")
runner = CliRunner()


def _broker(settings: MqttSettings) -> list[str]:
    return ["--mqtt-url", settings.url, "--topic-root", settings.topic_root, "--city", MINI_CITY]


def test_send_publishes_one_reading(mqtt_settings: MqttSettings, collector: Collector) -> None:
    result = runner.invoke(
        app,
        ["send", "fg-welang-2", "water_level=2.75", "rainfall=12",
         "--ts", "2026-01-12T14:30:00", *_broker(mqtt_settings)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [(topic, payload)] = collector.wait_for(1)
    assert topic == f"{mqtt_settings.topic_root}/up/fg-welang-2"
    body = json.loads(payload)
    assert body["values"] == {"water_level": 2.75, "rainfall": 12}
    # A time without an offset is WIB.
    assert datetime.fromisoformat(body["ts"]) == datetime(2026, 1, 12, 7, 30, tzinfo=UTC)


def test_send_through_pantau_command(mqtt_settings: MqttSettings, collector: Collector) -> None:
    pantau = Path(sys.executable).parent / "pantau"
    completed = subprocess.run(
        [str(pantau), "simulate", "send", "sn-bangil-1", "lamp_state=1", *_broker(mqtt_settings)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "sent to" in completed.stdout
    [(_, payload)] = collector.wait_for(1)
    assert json.loads(payload)["values"] == {"lamp_state": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fg-nowhere-9", "water_level=1"], "unknown sensor 'fg-nowhere-9'"),
        (["fg-welang-1", "speed=3"], "has no metric 'speed'"),
        (["fg-welang-1", "water_level"], "expected METRIC=VALUE"),
        (["fg-welang-1", "water_level=high"], "not a number"),
        (["fg-welang-1", "water_level=99"], "outside -2..15 m"),
        (["fg-welang-1", "water_level=1", "--ts", "noon"], "not an ISO 8601 time"),
    ],
)
def test_send_rejects_bad_input_with_exit_2(
    mqtt_settings: MqttSettings, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["send", *args, *_broker(mqtt_settings)])
    assert result.exit_code == 2
    assert message in result.output


def test_send_force_and_unreachable_broker(
    mqtt_settings: MqttSettings, collector: Collector
) -> None:
    forced = runner.invoke(
        app, ["send", "fg-welang-1", "water_level=99", "--force", *_broker(mqtt_settings)]
    )
    assert forced.exit_code == 0, forced.output
    assert json.loads(collector.wait_for(1)[0][1])["values"] == {"water_level": 99}
    down = runner.invoke(
        app,
        ["send", "fg-welang-1", "water_level=1", "--mqtt-url", "mqtt://127.0.0.1:1",
         "--city", MINI_CITY],
    )  # fmt: skip
    assert down.exit_code == 1
    assert "cannot reach the broker at 127.0.0.1:1" in down.output


def test_simulate_runs_a_scenario_with_a_summary(
    tmp_path: Path, mqtt_settings: MqttSettings, collector: Collector
) -> None:
    manifest = tmp_path / "run.jsonl"
    result = runner.invoke(
        app,
        ["--scenario", "rush-hour", "--backfill", "30m", "--seed", "4", "--shape", "senml",
         "--duplicates", "0.1", "--manifest", str(manifest), "--quiet", *_broker(mqtt_settings)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Simulation summary: rush-hour" in result.output
    assert "fault: duplicate" in result.output
    loaded = load_manifest(manifest)
    assert loaded.meta["scenario"] == "rush-hour" and loaded.seed == 4
    messages = int(
        next(ln for ln in result.output.splitlines() if "messages" in ln)
        .split()[-2]
        .replace(",", "")
    )
    assert len(collector.wait_for(messages)) == messages


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "tsunami"], "unknown scenario 'tsunami'"),
        (["--backfill", "lots"], "not a duration"),
        (["--shape", "xml"], "--shape must be one of"),
        (["--duplicates", "2"], "between 0 and 1"),
        (["--speed", "0"], "--speed must be positive"),
    ],
)
def test_simulate_rejects_bad_options(
    mqtt_settings: MqttSettings, args: list[str], message: str
) -> None:
    result = runner.invoke(app, [*args, *_broker(mqtt_settings)])
    assert result.exit_code == 2
    assert message in result.output


def test_per_device_credentials(tmp_path: Path, locked_broker: str) -> None:
    reader = MqttSettings(
        url=locked_broker, topic_root="locked", username="reader", password="secret-reader"
    )
    collector = Collector(reader)
    collector.client.username_pw_set("reader", "secret-reader")
    collector.start()
    try:
        base = ["--mqtt-url", locked_broker, "--topic-root", "locked", "--city", MINI_CITY]
        anonymous = runner.invoke(app, ["send", "fg-welang-1", "water_level=1", *base])
        assert anonymous.exit_code == 1
        assert "refused" in anonymous.output
        templated = runner.invoke(
            app,
            ["send", "fg-welang-1", "water_level=1.5", "--password-template", "secret-{device}", *base],
        )  # fmt: skip
        assert templated.exit_code == 0, templated.output
        credentials = tmp_path / "devices.yaml"
        credentials.write_text(
            "\n".join(f"{u}: secret-{u}" for u in
                      ("fg-welang-1", "fg-welang-2", "fg-welang-3", "tc-bangil-1", "tc-bangil-2",
                       "sn-bangil-1", "sn-bangil-2", "gw-purwosari", "gw-pohjentrek", "gw-bangil"))
        )  # fmt: skip
        for shape in ("single", "senml"):
            run = runner.invoke(
                app,
                ["--backfill", "10m", "--shape", shape, "--credentials", str(credentials),
                 "--quiet", *base],
            )  # fmt: skip
            assert run.exit_code == 0, run.output
        wrong = tmp_path / "wrong.csv"
        wrong.write_text("device,password\nfg-welang-1,nope\n")
        refused = runner.invoke(
            app, ["send", "fg-welang-1", "water_level=1", "--credentials", str(wrong), *base]
        )
        assert refused.exit_code == 1 and "refused" in refused.output
        topics = {t.rsplit("/", 1)[1] for t, _ in collector.wait_for(20)}
        assert {"fg-welang-1", "sn-bangil-1", "gw-bangil"} <= topics
    finally:
        collector.stop()
