"""Operator keys: stored hashed, shown once, revocable; and `pantau keys`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import psycopg
import pytest
from typer.testing import CliRunner

from api.keys import check_key
from pantau.cli import keys
from pantau.cli.app import app
from pantau.settings import get_settings


def test_only_the_digest_is_stored(conn: psycopg.Connection) -> None:
    key = keys.add_key(conn, "ops-1")
    assert key.startswith("pantau_") and len(key) > 40
    stored = conn.execute("SELECT key_hash, key_prefix FROM pantau_private.api_keys").fetchall()
    assert stored == [(hashlib.sha256(key.encode()).digest(), key[:13])]
    dump = " ".join(
        str(v) for row in conn.execute("SELECT * FROM pantau_private.api_keys") for v in row
    )
    assert key not in dump


def test_check_add_list_revoke(conn: psycopg.Connection) -> None:
    key = keys.add_key(conn, "ops-1")
    other = keys.add_key(conn, "ops-2")
    assert key != other
    checked = check_key(conn, key)
    assert checked.operator is not None and checked.operator.name == "ops-1"
    assert check_key(conn, key + "x").operator is None
    assert not check_key(conn, "").revoked
    listed = {k.name: k for k in keys.list_keys(conn)}
    assert listed["ops-1"].last_used_at is not None
    assert listed["ops-2"].last_used_at is None
    with pytest.raises(keys.ApiKeyError, match="exists already"):
        keys.add_key(conn, "ops-1")
    with pytest.raises(keys.ApiKeyError, match="invalid name"):
        keys.add_key(conn, "no spaces please")
    assert keys.revoke_key(conn, "ops-1")
    assert not keys.revoke_key(conn, "ops-1")
    after = check_key(conn, key)
    assert after.operator is None and after.revoked
    assert check_key(conn, other).operator is not None


def test_the_read_only_role_cannot_read_keys(conn: psycopg.Connection) -> None:
    keys.add_key(conn, "ops-1")
    with conn.transaction():
        conn.execute("SET LOCAL ROLE pantau_readonly")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM pantau_private.api_keys")
        raise psycopg.Rollback()


@pytest.fixture
def keys_cli(city_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("PANTAU_DATABASE_URL", city_db)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_prints_the_key_once_and_revokes(keys_cli: CliRunner, conn: psycopg.Connection) -> None:
    added = keys_cli.invoke(app, ["keys", "add", "duty-officer"])
    assert added.exit_code == 0, added.output
    key = added.stdout.strip()
    assert check_key(conn, key).operator is not None
    listed = keys_cli.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0
    assert "duty-officer" in listed.stdout
    assert key not in listed.stdout
    assert keys_cli.invoke(app, ["keys", "add", "duty-officer"]).exit_code == 2
    assert keys_cli.invoke(app, ["keys", "revoke", "duty-officer"]).exit_code == 0
    assert keys_cli.invoke(app, ["keys", "revoke", "duty-officer"]).exit_code == 1
    assert check_key(conn, key).revoked
