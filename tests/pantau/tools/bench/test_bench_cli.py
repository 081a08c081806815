"""`pantau bench ingest` finds the server to measure like every other command."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pantau.settings import get_settings
from pantau.tools.bench import cli as bench_cli
from pantau.tools.bench.ingest import BenchConfig, BenchError


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """The server each run would measure; the run stops before measuring anything."""
    for name in list(os.environ):
        if name.startswith("PANTAU_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env file from outside
    seen: list[str] = []

    def stop(config: BenchConfig) -> None:
        seen.append(config.admin_url)
        raise BenchError("stopped before measuring")

    monkeypatch.setattr(bench_cli, "run_bench", stop)
    get_settings.cache_clear()
    yield seen
    get_settings.cache_clear()


def _run(*args: str) -> int:
    get_settings.cache_clear()
    return CliRunner().invoke(bench_cli.app, ["ingest", "--quick", *args]).exit_code


def test_database_url_setting_is_the_default(
    measured: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run() == 1
    monkeypatch.setenv("PANTAU_DATABASE_URL", "postgresql://bench@db.example:5433/pantau")
    assert _run() == 1
    assert _run("--database-url", "postgresql://postgres@127.0.0.1:6543/postgres") == 1
    assert measured == [
        BenchConfig.admin_url,
        "postgresql://bench@db.example:5433/pantau",
        "postgresql://postgres@127.0.0.1:6543/postgres",
    ]


def test_a_broken_setting_is_reported(measured: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_DATABASE_URL", "mysql://nope")
    assert _run() == 2
    assert measured == []
