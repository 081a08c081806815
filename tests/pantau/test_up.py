"""`pantau up` from nothing: private servers, migration, city, services, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from pantau.db.migrate import LATEST_VERSION
from pantau.services import free_port, port_open, wait_until

MINI_CITY = Path(__file__).parent.parent / "data" / "mini-city.yaml"


@pytest.mark.slow
def test_up_runs_the_platform_and_stops_cleanly() -> None:
    state = Path(tempfile.mkdtemp(prefix="pantau-up-"))
    state.chmod(0o755)  # the private PostgreSQL runs as another account when we are root
    api_port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    env.update(
        PANTAU_STATE_DIR=str(state),
        PANTAU_CITY_FILE=str(MINI_CITY),
        PANTAU_API__PORT=str(api_port),
        PANTAU_INGEST__METRICS_PORT=str(metrics_port),
        PANTAU_STORAGE__RAW_RETENTION="P7D",
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "pantau", "up", "--speed", "600"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    api = f"http://127.0.0.1:{api_port}"
    try:
        wait_until(
            lambda: httpx.get(f"{api}/health", timeout=2).json()["status"] == "ok",
            timeout_s=120,
            what="the API of `pantau up`",
        )

        def readings_arrive() -> bool:
            sensors = httpx.get(f"{api}/sensors", timeout=5).json()
            return sum(bool(s["latest"]) for s in sensors) >= 5

        # Simulator → private broker → ingest → private database → API.
        wait_until(readings_arrive, timeout_s=120, what="simulated readings through ingest")

        pg_port = int((state / "postgres.port").read_text())
        status = subprocess.run(
            [sys.executable, "-m", "pantau", "db", "status"],
            check=False,
            env={**env, "PANTAU_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_port}/pantau"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"{LATEST_VERSION} of {LATEST_VERSION}" in status.stdout
        assert "postgres" in status.stdout or "timescaledb" in status.stdout
        assert "rows: readings" in status.stdout
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=90)
    assert up.returncode == 0, output
    assert "Pantau is up" in output
    assert not port_open("127.0.0.1", pg_port), "private PostgreSQL still running after Ctrl-C"
