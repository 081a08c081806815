from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from pantau.db.migrate import refresh_rollups
from simulators.cli import app
from simulators.manifest import ManifestWriter, load_manifest
from simulators.verify import verify
from tests.fixtures.simulator import store_messages

ROOT = "verify-test"


def _run(tmp_path: Path, city_db: str, *, now: datetime) -> Path:
    """Publish-equivalent: write a manifest and store the same payloads as ingest would."""
    path = tmp_path / "run.jsonl"
    messages: list[tuple[str, bytes]] = []
    with ManifestWriter(path, topic_root=ROOT, seed=1) as writer:
        for minute in range(30):
            time = now - timedelta(minutes=30 - minute)
            for sensor in ("fg-welang-1", "fg-welang-2"):
                level = round(1.0 + minute / 100, 3)
                payload = {
                    "ts": time.isoformat(),
                    "values": {"water_level": level, "rainfall": 0.0},
                }
                messages.append((f"{ROOT}/up/{sensor}", json.dumps(payload).encode()))
                writer.valid(sensor, "water_level", time, level)
                writer.valid(sensor, "rainfall", time, 0.0)
        bad = (f"{ROOT}/up/fg-welang-3", b'{"ts": 1, "values": ')
        writer.fault("malformed", topic=bad[0], payload=bad[1], expect_rejected=True)
        messages.append(bad)
        messages.append(messages[0])  # a duplicate: the same key again
        writer.valid("fg-welang-1", "water_level", now - timedelta(minutes=30), 1.0)
    stored, rejected = store_messages(city_db, messages, topic_root=ROOT)
    assert stored == 122 and rejected == 1
    return path


def test_clean_database_verifies(tmp_path: Path, city_db: str) -> None:
    manifest = load_manifest(_run(tmp_path, city_db, now=datetime.now(UTC)))
    report = verify(city_db, manifest)
    assert report.ok, report
    assert report.expected == report.stored == 120
    assert report.duplicated == 0 and report.rollup_missing == 0
    assert report.faults_expected_rejected == 1


def test_finds_lost_changed_unexpected_and_unrejected(tmp_path: Path, city_db: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    manifest = load_manifest(_run(tmp_path, city_db, now=now))
    lost = sorted(manifest.valid)[3:8]
    changed = sorted(manifest.valid)[20]
    extra_time = now - timedelta(minutes=10, seconds=30)
    with psycopg.connect(city_db, autocommit=True) as conn:
        for sensor, metric, time in lost:
            conn.execute(
                "DELETE FROM readings WHERE sensor_id = %s AND metric = %s AND time = %s",
                [sensor, metric, time],
            )
        conn.execute(
            "UPDATE readings SET value = value + 0.5 "
            "WHERE sensor_id = %s AND metric = %s AND time = %s",
            list(changed),
        )
        conn.execute(
            "INSERT INTO readings (time, sensor_id, metric, value) VALUES (%s, %s, %s, %s)",
            [extra_time, "fg-welang-2", "battery", 12.5],
        )
        conn.execute("DELETE FROM rejected_payloads")
    report = verify(city_db, manifest)
    assert not report.ok
    assert report.lost == lost
    assert report.stored == report.expected - 5
    assert report.value_mismatch == [changed]
    assert report.unexpected == [("fg-welang-2", "battery", extra_time)]
    assert [f.kind for f in report.rejected_missing] == ["malformed"]
    # Rows deleted after the rollup counted them are lost, not double counted.
    assert report.duplicated == 0


def test_rollup_double_counting_is_reported(tmp_path: Path, city_db: str) -> None:
    now = datetime.now(UTC)
    manifest = load_manifest(_run(tmp_path, city_db, now=now))
    with psycopg.connect(city_db, autocommit=True) as conn:
        table = conn.execute("SELECT to_regclass('readings_1m_mat')").fetchone()
        if table is None or table[0] is None:
            pytest.skip(
                "TimescaleDB: the continuous aggregate is recomputed from raw rows on refresh, "
                "so its counts cannot be corrupted from a test"
            )
        # Materialised first: refreshing again leaves these buckets alone.
        refresh_rollups(city_db)
        changed = conn.execute(
            "UPDATE readings_1m_mat SET value_count = value_count + 2 "
            "WHERE sensor_id = 'fg-welang-1' AND metric = 'rainfall' AND bucket = "
            "(SELECT min(bucket) FROM readings_1m_mat WHERE sensor_id = 'fg-welang-1')"
        )
        assert changed.rowcount == 1
    report = verify(city_db, manifest)
    assert report.duplicated == 2 and report.rollup_excess == 2
    assert not report.ok


def test_cli_prints_a_table_and_exits_1_when_not_ok(tmp_path: Path, city_db: str) -> None:
    path = _run(tmp_path, city_db, now=datetime.now(UTC))
    runner = CliRunner()
    good = runner.invoke(app, ["verify", str(path), "--database-url", city_db])
    assert good.exit_code == 0, good.output
    assert "lost" in good.output and "OK" in good.output
    with psycopg.connect(city_db, autocommit=True) as conn:
        conn.execute("DELETE FROM readings WHERE sensor_id = 'fg-welang-2'")
    bad = runner.invoke(app, ["verify", str(path), "--database-url", city_db])
    assert bad.exit_code == 1, bad.output
    assert "60" in bad.output  # the 60 readings of fg-welang-2 are lost
    as_json = runner.invoke(app, ["verify", str(path), "--database-url", city_db, "--json"])
    assert as_json.exit_code == 1, as_json.output
    counts = json.loads(as_json.output.strip().splitlines()[-1])
    assert counts["lost"] == 60 and counts["duplicated"] == 0 and counts["ok"] is False
    assert counts["stored"] == counts["expected"] - 60
    missing = runner.invoke(app, ["verify", str(tmp_path / "nope"), "--database-url", city_db])
    assert missing.exit_code == 2
    assert "nope" in missing.output
