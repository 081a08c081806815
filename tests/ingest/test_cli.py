"""`pantau ingest`: settings come from the environment; bad ones stop it with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _run(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    return subprocess.run(
        [sys.executable, "-m", "pantau", "ingest", *args],
        env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_check_prints_the_effective_settings(tmp_path: Path) -> None:
    done = _run(
        {
            "PANTAU_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/x",
            "PANTAU_INGEST__BATCH_MAX_READINGS": "123",
            "PANTAU_MQTT__PASSWORD": "hunter2",
        },
        "--check",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["ingest"]["batch_max_readings"] == 123
    assert "hunter2" not in done.stdout


def test_invalid_setting_is_named(tmp_path: Path) -> None:
    done = _run(
        {
            "PANTAU_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/x",
            "PANTAU_INGEST__MAX_UNDELIVERED_MESSAGES": "100000",
        },
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "PANTAU_INGEST__MAX_UNDELIVERED_MESSAGES" in done.stderr


def test_missing_database_url_is_named(tmp_path: Path) -> None:
    done = _run({}, cwd=tmp_path)
    assert done.returncode == 2
    assert "PANTAU_DATABASE_URL" in done.stderr
