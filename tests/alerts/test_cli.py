"""`pantau alerts` / `python -m alerts`: configured by PANTAU_* alone, clear about what is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    return subprocess.run(
        [sys.executable, "-m", "alerts", *args],
        env={**clean, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_prints_the_settings_from_the_environment(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        "--check",
        PANTAU_DATABASE_URL="postgresql://alerts:secret@db:5432/pantau",
        PANTAU_MQTT__URL="mqtt://broker:1883",
        PANTAU_ALERTS__OFFLINE_INTERVALS_K="4",
    )
    assert done.returncode == 0, done.stderr
    settings = json.loads(done.stdout)
    assert settings["mqtt"]["url"] == "mqtt://broker:1883"
    assert settings["alerts"]["offline_intervals_k"] == 4
    assert settings["alerts"]["client_id"] == "pantau-alerts-1"
    assert "secret" not in done.stdout


def test_a_missing_or_invalid_setting_is_named(tmp_path: Path) -> None:
    missing = _run(tmp_path, "--check")
    assert missing.returncode == 2 and "PANTAU_DATABASE_URL" in missing.stderr
    invalid = _run(
        tmp_path,
        "--check",
        PANTAU_DATABASE_URL="postgresql://db/pantau",
        PANTAU_ALERTS__UPSTREAM_MIN_LEVEL="7",
    )
    assert invalid.returncode == 2 and "PANTAU_ALERTS__UPSTREAM_MIN_LEVEL" in invalid.stderr
