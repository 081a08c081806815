"""The stack record: written atomically, found by commands, stale when its process is gone."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pantau import stack
from pantau.settings import MqttSettings, Settings
from pantau.tools.up import Child, unreachable_by


def _record(state: Path, pid: int, started: str | None) -> stack.StackRecord:
    return stack.StackRecord(
        state_dir=str(state),
        pid=pid,
        pid_started=started,
        database_url="postgresql://postgres@127.0.0.1:6543/pantau",
        mqtt_url="mqtt://127.0.0.1:6544",
        topic_root="pantau",
        api_url="http://127.0.0.1:6545",
        metrics={"ingest": "http://127.0.0.1:6546/metrics"},
        processes={"ingest": (pid, started)},
    )


def _dead_pid() -> tuple[int, str | None]:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    started = stack.process_start(process.pid)
    process.wait()
    return process.pid, started


def test_record_round_trip_and_removal(tmp_path: Path) -> None:
    me = _record(tmp_path, os.getpid(), stack.process_start(os.getpid()))
    stack.write(me)
    assert stack.read(tmp_path) == me
    assert stack.running(tmp_path) == me
    assert [p.name for p in tmp_path.iterdir()] == ["stack.json"]  # no temporary file left
    stack.remove(tmp_path, pid=os.getpid() + 1)  # someone else's: kept
    assert stack.read(tmp_path) == me
    stack.remove(tmp_path, pid=os.getpid())
    assert stack.read(tmp_path) is None


def test_stale_and_garbled_records_are_ignored(tmp_path: Path) -> None:
    pid, started = _dead_pid()
    stack.write(_record(tmp_path, pid, started))
    assert stack.read(tmp_path) is not None
    assert stack.running(tmp_path) is None
    # A live pid whose start time differs is another process that got the same id.
    stack.write(_record(tmp_path, os.getpid(), "1"))
    assert stack.running(tmp_path) is None
    stack.record_path(tmp_path).write_text('{"pid": ')
    assert stack.read(tmp_path) is None


def test_commands_adopt_the_running_stack_only_where_nothing_is_configured(
    tmp_path: Path,
) -> None:
    record = _record(tmp_path, os.getpid(), stack.process_start(os.getpid()))
    stack.write(record)
    said: list[str] = []
    adopted = stack.adopt(Settings(state_dir=tmp_path), announce=said.append)
    assert adopted.require_database_url() == record.database_url
    assert adopted.mqtt.url == record.mqtt_url
    assert said == [record.describe()] and str(tmp_path) in said[0]

    configured = Settings(
        state_dir=tmp_path,
        database_url="postgresql://postgres@db:5432/x",  # type: ignore[arg-type]
        mqtt=MqttSettings(url="mqtt://broker:1883"),
    )
    assert stack.adopt(configured, announce=said.append) is configured
    assert len(said) == 1

    stack.remove(tmp_path, pid=os.getpid())
    plain = Settings(state_dir=tmp_path)
    assert stack.adopt(plain, announce=said.append) is plain


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another account")
def test_a_home_the_postgres_account_cannot_enter_is_named() -> None:
    account = pwd.getpwnam("postgres")
    top = Path(tempfile.mkdtemp(prefix="pantau-home-"))  # pytest's own tree is mode 700
    try:
        top.chmod(0o755)
        home = top / "home"
        (home / "checkout").mkdir(parents=True)
        home.chmod(0o700)
        assert unreachable_by(account, home / "checkout" / ".pantau" / "postgres") == home
        home.chmod(0o711)
        assert unreachable_by(account, home / "checkout" / ".pantau" / "postgres") is None
    finally:
        shutil.rmtree(top)


def test_a_crashing_child_is_restarted_with_growing_delays(tmp_path: Path) -> None:
    child = Child(
        name="alerts",
        argv=[sys.executable, "-c", "raise SystemExit(3)"],
        log=tmp_path / "alerts.log",
        env=dict(os.environ),
    )
    child.start()
    assert child.process is not None
    child.process.wait()
    delays = []
    now = child.started_at
    for _ in range(4):
        report = child.supervise(now)
        assert report is not None and "exited with 3" in report
        assert child.restart_at is not None
        delays.append(child.restart_at - now)
        assert child.supervise(now) is None  # waiting: no second report, no start
        now = child.restart_at
        assert child.supervise(now) is None  # started again
        assert child.process is not None
        child.process.wait()
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert child.restarts == 4
