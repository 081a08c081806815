"""`migrate` where TimescaleDB is installed but not preloaded: a clean fall-back, saying why.

Needs PostgreSQL binaries that come with the extension (found on PATH, or in the directory
named by PANTAU_TEST_PG_BINDIR); skipped, with the reason, where there are none.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pantau.db.migrate import LATEST_VERSION, MigrationError, Mode, current_mode, migrate
from pantau.settings import StorageSettings
from pantau.tools.services import PrivatePostgres

pytestmark = pytest.mark.timescaledb


def _candidates() -> list[Path]:
    found = (
        [Path(os.environ["PANTAU_TEST_PG_BINDIR"])]
        if os.environ.get("PANTAU_TEST_PG_BINDIR")
        else []
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        found.append(Path(on_path).parent)
    return found


@pytest.fixture
def unloaded_timescaledb() -> Iterator[str]:
    """URL of a database on a private cluster whose binaries have TimescaleDB, not preloaded."""
    # Not pytest's tmp_path: the server's account must be able to reach the directory.
    directory = Path(tempfile.mkdtemp(prefix="pantau-pg-"))
    for binaries in _candidates():
        server = PrivatePostgres(directory=directory, binaries=binaries, preload_timescaledb=False)
        if server.timescaledb_installed:
            break
    else:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.skip(
            "no PostgreSQL binaries with the timescaledb extension on PATH or in "
            "PANTAU_TEST_PG_BINDIR"
        )
    try:
        server.start()
        yield server.create_database("fallback")
    finally:
        server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def test_auto_mode_falls_back_on_a_new_connection(
    unloaded_timescaledb: str, storage: StorageSettings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pantau.db.migrate"):
        result = migrate(unloaded_timescaledb, storage)
    assert result.mode is Mode.POSTGRES
    assert result.version == LATEST_VERSION
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "unusable" in warning and "preload" in warning, warning
    with psycopg.connect(unloaded_timescaledb) as conn:
        assert current_mode(conn) is Mode.POSTGRES
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone() == (0,)
    # Plain mode works there as anywhere: a second migrate finds nothing to do.
    assert migrate(unloaded_timescaledb, storage).applied == ()


def test_timescaledb_mode_says_why_it_cannot(
    unloaded_timescaledb: str, storage: StorageSettings
) -> None:
    wanted = storage.model_copy(update={"mode": "timescaledb"})
    with pytest.raises(MigrationError, match="preload"):
        migrate(unloaded_timescaledb, wanted)
    with psycopg.connect(unloaded_timescaledb) as conn:
        assert current_mode(conn) is None
