"""`pantau up` from nothing: private servers, migration, city, services, the stack record that
every command finds, one stack per state directory, and a clean stop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from pantau import stack
from pantau.db.migrate import LATEST_VERSION
from pantau.settings import Settings
from pantau.tools import services
from pantau.tools.services import MissingProgramError, alertmanager_binary, port_open, wait_until
from pantau.tools.up import _alertmanager

MINI_CITY = Path(__file__).parents[2] / "data" / "mini-city.yaml"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    env.update(
        PANTAU_CITY_FILE=str(MINI_CITY),
        PANTAU_STORAGE__RAW_RETENTION="P7D",
        COLUMNS="200",
        **extra,
    )
    return env


@contextmanager
def _directory() -> Iterator[Path]:
    """A checkout-like directory; removed afterwards with everything the stack left in it."""
    top = Path(tempfile.mkdtemp(prefix="pantau-up-"))
    top.chmod(0o755)  # the private PostgreSQL runs as another account when we are root
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


class Up:
    """One `pantau up` process, its output collected as it comes."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.cwd = cwd
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pantau", "up", *args],
            cwd=cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_banner(self) -> stack.StackRecord:
        def banner() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"pantau up exited:\n{self.output}")
            return "export PANTAU_DATABASE_URL=" in self.output

        wait_until(banner, timeout_s=180, what=f"the banner of `pantau up`:\n{self.output}")
        record = stack.running(self.cwd / ".pantau")
        assert record is not None, "no stack record while the stack runs"
        return record

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self._reader.join(10)
        return code


def _pantau(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pantau", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _ports(record: stack.StackRecord) -> set[int | None]:
    """Database, broker, API, ingest and alerts metrics (the API serves its own metrics)."""
    urls = [record.database_url, record.mqtt_url, record.api_url, *record.metrics.values()]
    return {urlsplit(url).port for url in urls}


@pytest.mark.slow
def test_up_runs_the_platform_and_the_cli_finds_it() -> None:
    with _directory() as top:
        up = Up(top, "--speed", "600")
        try:
            record = up.wait_banner()
            api = record.api_url
            assert httpx.get(f"{api}/health", timeout=5).status_code == 200
            for shown in (f"{api}/", f"{api}/docs", "/metrics", record.database_url):
                assert shown in up.output
            assert f"PANTAU_MQTT__URL={record.mqtt_url}" in up.output

            def readings_arrive() -> bool:
                sensors = httpx.get(f"{api}/sensors", timeout=5).json()
                return sum(bool(s["latest"]) for s in sensors) >= 5

            # Simulator → private broker → ingest → private database → API.
            wait_until(readings_arrive, timeout_s=120, what="simulated readings through ingest")

            # Commands started in the checkout talk to the stack, and say so.
            status = _pantau(top, "db", "status")
            assert status.returncode == 0, status.stdout + status.stderr
            assert f"{LATEST_VERSION} of {LATEST_VERSION}" in status.stdout
            assert "rows: readings" in status.stdout
            assert f"using the Pantau stack of {top / '.pantau'}" in status.stderr

            sent = _pantau(top, "simulate", "send", "fg-welang-3", "water_level=3.1")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert "stored" in sent.stdout
            old = _pantau(
                top, "simulate", "send", "fg-welang-3", "water_level=1", "--ts", "2020-01-01T07:00"
            )
            assert old.returncode == 1, old.stdout + old.stderr
            assert "rejected (too_old)" in old.stdout

            # A second stack from the same directory refuses, saying why.
            second = _pantau(top, "up")
            assert second.returncode == 1
            assert "already running" in second.stdout and str(record.pid) in second.stdout
            assert "Traceback" not in second.stdout + second.stderr
        finally:
            code = up.stop()
        assert code == 0, up.output
        assert stack.read(top / ".pantau") is None, "stack record left after a clean stop"
        # The simulator, run --quiet, still logs how it started and how it ended.
        simulator_log = (top / ".pantau" / "logs" / "simulator.log").read_text()
        assert "simulation starting" in simulator_log and "simulation ended" in simulator_log
        pg_port = urlsplit(record.database_url).port
        assert pg_port is not None
        assert not port_open("127.0.0.1", pg_port), "private PostgreSQL still running after Ctrl-C"


@pytest.mark.slow
def test_two_stacks_with_their_own_state_run_side_by_side() -> None:
    with _directory() as first_dir, _directory() as second_dir:
        first = Up(first_dir, "--no-simulate")
        second: Up | None = None
        try:
            one = first.wait_banner()
            second = Up(second_dir, "--no-simulate")
            two = second.wait_banner()
            ports_one, ports_two = _ports(one), _ports(two)
            assert len(ports_one) == 5 and len(ports_two) == 5
            assert not ports_one & ports_two, (one, two)
            for record in (one, two):
                assert httpx.get(f"{record.api_url}/health", timeout=5).status_code == 200
            # Each checkout's commands find their own stack.
            status = _pantau(second_dir, "db", "status")
            assert f"using the Pantau stack of {second_dir / '.pantau'}" in status.stderr
        finally:
            codes = [up.stop() for up in (second, first) if up is not None]
        assert codes == [0, 0], first.output + (second.output if second else "")


@pytest.mark.slow
def test_a_stack_that_was_killed_is_stale_and_the_next_up_cleans_up() -> None:
    with _directory() as top:
        crashed = Up(top, "--no-simulate")
        try:
            record = crashed.wait_banner()
        finally:
            crashed.process.kill()  # no chance to stop its servers and services
            crashed.process.wait()
        assert stack.read(top / ".pantau") == record
        assert stack.running(top / ".pantau") is None  # its writer is gone: stale

        # Commands no longer talk to it.
        status = _pantau(top, "db", "status")
        assert status.returncode == 2 and "using the Pantau stack" not in status.stderr

        # The next `pantau up` stops what the killed one left running, then starts afresh.
        again = Up(top, "--no-simulate")
        try:
            fresh = again.wait_banner()
            assert fresh.pid != record.pid
            # Its own ports again: the addresses stay the same from run to run.
            assert (fresh.database_url, fresh.mqtt_url) == (record.database_url, record.mqtt_url)
            for name, (pid, started) in record.processes.items():
                assert not stack.alive(pid, started), f"{name} of the killed stack still runs"
            assert httpx.get(f"{fresh.api_url}/health", timeout=5).status_code == 200
        finally:
            code = again.stop()
        assert code == 0, again.output


def test_up_runs_alertmanager_where_it_is_installed(tmp_path: Path) -> None:
    try:
        alertmanager_binary()
    except MissingProgramError as error:
        pytest.skip(str(error))
    processes: dict[str, tuple[int, str | None]] = {}
    with ExitStack() as exits:
        line, env = _alertmanager(
            Settings(), tmp_path, exits, processes, public_url="http://127.0.0.1:8000"
        )
        url = env["PANTAU_NOTIFY__ALERTMANAGER_URL"]
        assert line.startswith(f"{url} (Alertmanager; receivers: duty-officer, everyone")
        assert httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
        assert env["PANTAU_NOTIFY__ALERTMANAGER_EXTERNAL_URL"] == url
        assert env["PANTAU_NOTIFY__PUBLIC_URL"] == "http://127.0.0.1:8000"
        assert "alertmanager" in processes
        assert (tmp_path / "alertmanager" / "alertmanager.yml").is_file()
    port = urlsplit(url).port
    assert port is not None and not port_open("127.0.0.1", port), "still running after the stop"


def test_up_says_so_when_alertmanager_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    with ExitStack() as exits:
        line, env = _alertmanager(Settings(), tmp_path, exits, {}, public_url="http://x:1")
    assert line.startswith("off: Alertmanager not found: apt-get install prometheus-alertmanager")
    assert "PANTAU_NOTIFY__ALERTMANAGER_URL" not in env
