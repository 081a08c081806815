"""The `pantau db` and `pantau city` commands, against a real database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from pantau.cli.app import app
from pantau.db.migrate import LATEST_VERSION, MIGRATIONS
from pantau.settings import get_settings

MINI_CITY = Path(__file__).parents[2] / "data" / "mini-city.yaml"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No PANTAU_ setting or .env file from outside; settings rebuilt for each command."""
    for name in list(os.environ):
        if name.startswith("PANTAU_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PANTAU_STORAGE__RAW_RETENTION", "P7D")
    monkeypatch.setenv("PANTAU_STORAGE__PREMAKE_PARTITIONS", "2")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def invoke(*args: str) -> tuple[int, str, str]:
    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def table_rows(out: str) -> dict[str, str]:
    """The two-column rich table `db status` prints, as a mapping."""
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│|").split("│")]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def test_db_migrate_then_status(cli_env: pytest.MonkeyPatch, empty_db: str) -> None:
    cli_env.setenv("PANTAU_DATABASE_URL", empty_db)
    code, out, _ = invoke("db", "status")
    assert code == 1  # not migrated yet: not up to date
    assert "not migrated" in out
    assert f"0 of {LATEST_VERSION}" in out

    code, out, err = invoke("db", "migrate")
    assert code == 0, err
    assert f"version: {LATEST_VERSION}" in out
    assert "applied: " + ", ".join(f"{m.version:04d}" for m in MIGRATIONS) in out
    with psycopg.connect(empty_db) as conn:
        row = conn.execute("SELECT value FROM pantau_meta WHERE key = 'storage_mode'").fetchone()
    assert row is not None
    mode = row[0]
    assert f"mode: {mode}" in out

    code, out, _ = invoke("db", "migrate")
    assert code == 0
    assert "already up to date" in out

    code, out, err = invoke("db", "status")
    assert code == 0, err
    rows = table_rows(out)
    assert rows["mode"] == mode
    assert rows["migration version"] == f"{LATEST_VERSION} of {LATEST_VERSION}"
    # Plain mode: a week of retention plus today and two days ahead. TimescaleDB makes chunks
    # only as data arrives.
    assert int(rows["partitions/chunks"]) >= (10 if mode == "postgres" else 0)
    for table in ("sensors", "readings", "latest_readings", "readings_1m", "readings_1h",
                  "readings_1d", "rejected_payloads", "alerts"):  # fmt: skip
        assert rows[f"rows: {table}"] == "0"


def test_db_status_counts_after_city_load(cli_env: pytest.MonkeyPatch, db_url: str) -> None:
    cli_env.setenv("PANTAU_DATABASE_URL", db_url)
    code, _, err = invoke("city", "load", str(MINI_CITY))
    assert code == 0, err
    code, out, _ = invoke("db", "status")
    assert code == 0
    assert table_rows(out)["rows: sensors"] == "7"


def test_db_maintain(cli_env: pytest.MonkeyPatch, db_url: str) -> None:
    cli_env.setenv("PANTAU_DATABASE_URL", db_url)
    code, out, err = invoke("db", "maintain")
    assert code == 0, err
    assert "partitions_created" in out or "TimescaleDB" in out


def test_city_load_is_idempotent(cli_env: pytest.MonkeyPatch, db_url: str) -> None:
    cli_env.setenv("PANTAU_DATABASE_URL", db_url)
    code, out, err = invoke("city", "load", str(MINI_CITY))
    assert code == 0, err
    assert "Mini Pasuruan: 3 kecamatan, 7 sensors, 3 threshold version(s) added" in out
    code, out, _ = invoke("city", "load", str(MINI_CITY))
    assert code == 0
    assert "0 threshold version(s) added" in out
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM sensors").fetchone() == (7,)
        assert conn.execute("SELECT count(*) FROM flood_thresholds").fetchone() == (3,)


def test_city_load_uses_the_city_file_setting(cli_env: pytest.MonkeyPatch, db_url: str) -> None:
    cli_env.setenv("PANTAU_DATABASE_URL", db_url)
    cli_env.setenv("PANTAU_CITY_FILE", str(MINI_CITY))
    code, out, err = invoke("city", "load")
    assert code == 0, err
    assert "7 sensors" in out


def test_city_load_refuses_a_bad_file(
    cli_env: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    cli_env.setenv("PANTAU_DATABASE_URL", db_url)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        MINI_CITY.read_text(encoding="utf-8").replace("kecamatan: Bangil", "kecamatan: X")
    )
    code, _, err = invoke("city", "load", str(bad))
    assert code == 2
    assert "unknown kecamatan: X" in err
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM sensors").fetchone() == (0,)


def test_city_show(cli_env: pytest.MonkeyPatch) -> None:
    code, out, err = invoke("city", "show", str(MINI_CITY))
    assert code == 0, err
    assert "7 sensors in 3 kecamatan" in out
    assert "fg-welang-1" in out


def test_invalid_setting_exits_2_naming_it(cli_env: pytest.MonkeyPatch, empty_db: str) -> None:
    cli_env.setenv("PANTAU_DATABASE_URL", empty_db)
    cli_env.setenv("PANTAU_STORAGE__RAW_RETENTION", "P1D")
    code, _out, err = invoke("db", "migrate")
    assert code == 2
    assert "PANTAU_STORAGE__RAW_RETENTION" in err
    assert "at least 7 days" in err
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)


@pytest.mark.parametrize("command", [["db", "migrate"], ["db", "status"], ["city", "load"]])
def test_missing_database_url_is_explained(cli_env: pytest.MonkeyPatch, command: list[str]) -> None:
    code, _, err = invoke(*command)
    assert code == 2
    assert "PANTAU_DATABASE_URL is not set" in err


def test_unreachable_database_is_reported(cli_env: pytest.MonkeyPatch) -> None:
    from pantau.tools.services import free_port

    cli_env.setenv("PANTAU_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/pantau")
    code, _, err = invoke("db", "status")
    assert code == 1
    assert "cannot read the database" in err


def test_maintain_every_s_keeps_going_until_sigterm(
    cli_env: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    """The compose `maintain` service: the owner's loop, stopped cleanly by SIGTERM."""
    import signal
    import subprocess
    import sys

    from pantau.tools.services import wait_until

    env = {**os.environ, "PANTAU_DATABASE_URL": db_url, "PANTAU_LOG_LEVEL": "WARNING"}
    out = tmp_path / "maintain.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "pantau", "db", "maintain", "--every-s", "0.2"],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            # One line per round: a second one means it went round again.
            wait_until(lambda: len(out.read_text().splitlines()) >= 2, timeout_s=60,
                       what="two rounds of maintenance")  # fmt: skip
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    assert code == 0, out.read_text()
    assert "failed" not in out.read_text()
