from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from simulators.manifest import Fault, ManifestError, ManifestWriter, from_us, load_manifest, to_us

T0 = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def test_round_trip_keeps_readings_faults_and_header(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    wib = timezone(timedelta(hours=7))
    with ManifestWriter(path, topic_root="t1", seed=7, meta={"scenario": "normal"}) as writer:
        writer.valid("fg-welang-1", "water_level", T0, 1.25)
        writer.valid("fg-welang-1", "water_level", T0, 1.25)  # a deliberate duplicate
        writer.valid(
            "fg-welang-1", "rainfall", (T0 + timedelta(microseconds=7)).astimezone(wib), 0.4
        )
        writer.fault("malformed", topic="t1/up/x", payload=b"\x00{not json", expect_rejected=True)
    manifest = load_manifest(path)
    assert manifest.topic_root == "t1"
    assert manifest.seed == 7
    assert manifest.meta == {"scenario": "normal"}
    assert manifest.valid == {
        ("fg-welang-1", "water_level", T0): 1.25,
        ("fg-welang-1", "rainfall", T0 + timedelta(microseconds=7)): 0.4,
    }
    assert all(time.tzinfo is not None for _, _, time in manifest.valid)
    assert manifest.faults == [
        Fault(kind="malformed", topic="t1/up/x", payload=b"\x00{not json", expect_rejected=True)
    ]
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "pantau-manifest"
    assert json.loads(lines[-1]) == {"kind": "end", "valid": 3, "faults": 1}


def test_parts_merge_and_must_share_a_topic_root(tmp_path: Path) -> None:
    for index in range(2):
        with ManifestWriter(tmp_path / f"m.{index}", topic_root="root") as writer:
            writer.valid(f"s-{index}", "noise", T0, 50.0 + index)
    merged = load_manifest([tmp_path / "m.0", tmp_path / "m.1"])
    assert merged.valid == {("s-0", "noise", T0): 50.0, ("s-1", "noise", T0): 51.0}
    with ManifestWriter(tmp_path / "other", topic_root="elsewhere") as writer:
        writer.valid("s-9", "noise", T0, 1.0)
    with pytest.raises(ManifestError, match="topic root"):
        load_manifest([tmp_path / "m.0", tmp_path / "other"])


def test_interrupted_run_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    with pytest.raises(RuntimeError), ManifestWriter(path, topic_root="r") as writer:
        writer.valid("s-1", "noise", T0, 40.0)
        raise RuntimeError("publisher crashed")
    with pytest.raises(ManifestError, match="incomplete"):
        load_manifest(path)
    assert len(load_manifest(path, allow_incomplete=True).valid) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "not a Pantau manifest"),
        ("[1, 2]\n", "not a Pantau manifest"),
        ('{"kind": "pantau-manifest", "version": 99, "topic_root": "r"}\n', "version"),
        ('{"kind": "pantau-manifest", "version": 1}\n', "topic_root"),
        ('{"kind": "pantau-manifest", "version": 1, "topic_root": "r"}\n{oops\n', ":2: malformed"),
        (
            '{"kind": "pantau-manifest", "version": 1, "topic_root": "r"}\n'
            '{"s": "a", "m": "b", "t": "yesterday", "v": 1}\n',
            ":2: malformed",
        ),
        (
            '{"kind": "pantau-manifest", "version": 1, "topic_root": "r"}\n'
            '{"f": "x", "topic": "t", "payload": "***", "expect_rejected": true}\n',
            ":2: malformed",
        ),
    ],
)
def test_malformed_manifest_gives_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ManifestError, match=message) as caught:
        load_manifest(path)
    assert str(path) in str(caught.value)


def test_missing_file_and_naive_times_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="No such file"):
        load_manifest(tmp_path / "absent.jsonl")
    with ManifestWriter(tmp_path / "m", topic_root="r") as writer, pytest.raises(ValueError):
        writer.valid("s-1", "noise", datetime(2026, 1, 1), 1.0)


def test_microsecond_conversion_is_exact() -> None:
    moment = datetime(2031, 5, 6, 7, 8, 9, 123457, tzinfo=UTC)
    assert from_us(to_us(moment)) == moment
    assert to_us(datetime(1970, 1, 1, tzinfo=UTC)) == 0
