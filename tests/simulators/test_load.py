from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pantau.city import City
from pantau.payload import decode
from pantau.settings import MqttSettings
from simulators.load import LoadError, load_gateway_id, run_load
from simulators.manifest import load_manifest
from simulators.verify import verify
from tests.fixtures.simulator import Collector, store_messages

MINI_CITY = Path(__file__).parent.parent / "data" / "mini-city.yaml"


def _decoded_keys(
    messages: list[tuple[str, bytes]], city: City, root: str
) -> list[tuple[str, str, datetime]]:
    families = {s.id: s.family for s in city.sensors}
    # The load's gateways, registered for every sensor as whoever runs a load does.
    gateways = {load_gateway_id(i): frozenset(families) for i in range(8)}
    keys = []
    for topic, payload in messages:
        out = decode(
            payload,
            topic=topic,
            topic_root=root,
            sensors=families,
            received_at=datetime.now(UTC),
            gateways=gateways,
        )
        assert not out.rejections, out.rejections
        keys += [(r.sensor_id, r.metric, r.time) for r in out.readings]
    return keys


@pytest.mark.parametrize(("shape", "per_message"), [("single", 3), ("list", 4), ("senml", 10)])
def test_publishes_exactly_the_manifest(
    tmp_path: Path,
    mqtt_settings: MqttSettings,
    mini_city: City,
    collector: Collector,
    shape: str,
    per_message: int,
) -> None:
    result = run_load(
        mqtt=mqtt_settings,
        city=mini_city,
        messages=1_201,
        processes=2,
        shape=shape,  # type: ignore[arg-type]
        readings_per_message=per_message,
        manifest=tmp_path / "load.jsonl",
        seed=3,
    )
    assert result.messages == 1_201 and result.errors == 0
    assert result.manifests == [tmp_path / "load.jsonl.0", tmp_path / "load.jsonl.1"]
    received = collector.wait_for(1_201)
    manifest = load_manifest(result.manifests)
    keys = _decoded_keys(received, mini_city, mqtt_settings.topic_root)
    # Every key is unique across processes, and the manifest lists exactly what arrived.
    assert len(keys) == len(set(keys)) == result.readings == len(manifest.valid)
    assert set(keys) == set(manifest.valid)
    if shape == "senml":
        assert {t for t, _ in received} == {
            f"{mqtt_settings.topic_root}/up/{load_gateway_id(i)}" for i in (0, 1)
        }
    if shape == "single":
        # Each device numbers its own messages without gaps, so ingest counts no lost ones.
        numbers: dict[str, list[int]] = {}
        for topic, payload in received:
            numbers.setdefault(topic, []).append(json.loads(payload)["seq"])
        for seqs in numbers.values():
            assert sorted(seqs) == list(range(len(seqs)))
    # Each process owns its own sensors.
    by_part = [load_manifest(p).sensors for p in result.manifests]
    assert by_part[0] and by_part[1] and not by_part[0] & by_part[1]


def test_load_run_verifies_after_storing(
    tmp_path: Path, mqtt_settings: MqttSettings, mini_city: City, collector: Collector, city_db: str
) -> None:
    result = run_load(
        mqtt=mqtt_settings, city=mini_city, messages=500, processes=2, manifest=tmp_path / "m"
    )
    received = collector.wait_for(500)
    store_messages(city_db, received, topic_root=mqtt_settings.topic_root)
    report = verify(city_db, load_manifest(result.manifests))
    assert report.ok, report
    assert report.expected == result.readings == 500


def test_paced_rate_and_cli_json(
    tmp_path: Path, mqtt_settings: MqttSettings, collector: Collector
) -> None:
    completed = subprocess.run(
        [
            sys.executable, "-m", "simulators", "load",
            "--messages", "200", "--processes", "2", "--rate", "400",
            "--mqtt-url", mqtt_settings.url, "--topic-root", mqtt_settings.topic_root,
            "--city", str(MINI_CITY), "--json",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["messages"] == 200 and result["errors"] == 0
    # 200 messages at 400/s cannot take less than about half a second.
    assert result["elapsed_s"] >= 0.45
    assert len(collector.wait_for(200)) == 200


def test_unreachable_broker_and_bad_arguments(mini_city: City) -> None:
    nowhere = MqttSettings(url="mqtt://127.0.0.1:1", topic_root="x", connect_timeout_s=2)
    with pytest.raises(LoadError, match=r"cannot reach the broker at 127\.0\.0\.1:1"):
        run_load(mqtt=nowhere, city=mini_city, messages=10, processes=1)
    with pytest.raises(LoadError, match="at least as many sensors"):
        run_load(mqtt=nowhere, city=mini_city, messages=10, processes=8)
    with pytest.raises(LoadError, match="shape"):
        run_load(mqtt=nowhere, city=mini_city, messages=10, shape="xml")  # type: ignore[arg-type]
