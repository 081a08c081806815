"""`pantau devices` and `pantau broker` against a real Mosquitto (production config) and database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner, Result

from pantau.city import SENSOR_ID_PATTERN, load_city
from pantau.cli.accounts import city_accounts, gateway_id
from pantau.cli.app import app
from pantau.cli.mosquitto import read_password_file, set_service_accounts, verify_password
from pantau.db import registry
from pantau.settings import get_settings
from pantau.tools.services import wait_until
from simulators.publisher import Credentials
from tests.fixtures.production_broker import ProductionBroker

ROOT = Path(__file__).resolve().parents[3]
MINI_CITY = ROOT / "tests" / "data" / "mini-city.yaml"


@pytest.fixture
def devices_env(
    production_broker: ProductionBroker, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ProductionBroker]:
    """The `pantau` command pointed at the broker's password file and pid, and a database."""
    monkeypatch.setenv("PANTAU_BROKER__PASSWORD_FILE", str(production_broker.password_file))
    monkeypatch.setenv(
        "PANTAU_BROKER__PID_FILE", str(production_broker.directory / "mosquitto.pid")
    )
    monkeypatch.setenv("PANTAU_DATABASE_URL", db_url)
    monkeypatch.setenv("PANTAU_CITY_FILE", str(MINI_CITY))
    monkeypatch.setenv("PANTAU_MQTT__TOPIC_ROOT", production_broker.root)
    get_settings.cache_clear()
    yield production_broker
    get_settings.cache_clear()


def _pantau(*args: str) -> Result:
    get_settings.cache_clear()
    return CliRunner().invoke(app, list(args))


def _secret(result: Result) -> str:
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return lines[0]


def _can_publish(broker: ProductionBroker, device: str, password: str) -> bool:
    client, reason = broker.client(device, password)
    try:
        if reason is None or reason.is_failure:
            return False
        info = client.publish(f"{broker.root}/up/{device}", b"{}", qos=1)
        info.wait_for_publish(5)
        return info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def _refused(broker: ProductionBroker, device: str, password: str) -> bool:
    _, reason = broker.client(device, password)
    return reason is not None and reason.is_failure


def test_add_registers_the_sensor_and_the_account_works_at_once(
    devices_env: ProductionBroker, db_url: str
) -> None:
    secret = _secret(_pantau("devices", "add", "fg-welang-1"))
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT family, kecamatan FROM sensors WHERE id = 'fg-welang-1'"
        ).fetchone()
    assert row == ("flood_gauge", "Purwosari")
    # The broker got SIGHUP through the pid file; the reload is asynchronous.
    wait_until(lambda: _can_publish(devices_env, "fg-welang-1", secret), timeout_s=10,
               what="the new device publishes")  # fmt: skip
    assert verify_password(secret, read_password_file(devices_env.password_file)["fg-welang-1"])
    again = _pantau("devices", "add", "fg-welang-1")
    assert again.exit_code == 1 and "already has an account" in again.output


def test_rotate_refuses_the_old_secret(devices_env: ProductionBroker) -> None:
    old = _secret(_pantau("devices", "add", "tc-bangil-1"))
    wait_until(lambda: _can_publish(devices_env, "tc-bangil-1", old), timeout_s=10, what="add")
    new = _secret(_pantau("devices", "rotate", "tc-bangil-1"))
    assert new != old
    wait_until(lambda: _refused(devices_env, "tc-bangil-1", old), timeout_s=10,
               what="the old secret refused")  # fmt: skip
    assert _can_publish(devices_env, "tc-bangil-1", new)


def test_remove_revokes_access_and_keeps_the_registry(
    devices_env: ProductionBroker, db_url: str
) -> None:
    secret = _secret(_pantau("devices", "add", "sn-bangil-1"))
    wait_until(lambda: _can_publish(devices_env, "sn-bangil-1", secret), timeout_s=10, what="add")
    result = _pantau("devices", "remove", "sn-bangil-1")
    assert result.exit_code == 0, result.output
    wait_until(lambda: _refused(devices_env, "sn-bangil-1", secret), timeout_s=10, what="removal")
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT 1 FROM sensors WHERE id = 'sn-bangil-1'").fetchone()
    assert _pantau("devices", "remove", "sn-bangil-1").exit_code == 1


def test_refusals_leave_the_password_file_alone(devices_env: ProductionBroker) -> None:
    before = devices_env.password_file.read_bytes()
    cases = {
        ("devices", "add", "xx-not-in-the-city"): "neither in the city file nor",
        ("devices", "add", "Bad/Name"): "not a valid device id",
        ("devices", "add", devices_env.settings.broker.ingest_user): "service account",
        ("devices", "add", "ews-someone", "--warning-post"): "WARNING_USERS",
        ("devices", "rotate", "fg-welang-3"): "has no account",
    }
    for args, message in cases.items():
        result = _pantau(*args)
        assert result.exit_code == 1, args
        assert message in result.output, (args, result.output)
    assert devices_env.password_file.read_bytes() == before


def test_a_gateway_is_registered_with_the_sensors_it_reports_for(
    devices_env: ProductionBroker, db_url: str
) -> None:
    secret = _secret(_pantau("devices", "add", "gw-bangil", "--gateway"))
    wait_until(lambda: _can_publish(devices_env, "gw-bangil", secret), timeout_s=10, what="add")
    city_entry = next(g for g in load_city(MINI_CITY).gateways if g.id == "gw-bangil")
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT 1 FROM sensors WHERE id = 'gw-bangil'").fetchone() is None
        assert registry.gateway_sensors(conn) == {"gw-bangil": frozenset(city_entry.sensors)}
    listed = _pantau("devices", "list")
    assert listed.exit_code == 0, listed.output
    line = next(row for row in listed.stdout.splitlines() if "gw-bangil" in row)
    assert "gateway" in line
    assert f"gw-bangil reports for: {', '.join(sorted(city_entry.sensors))}" in listed.stdout

    # More sensors later, and revoked again: the registry follows, the account stays.
    linked = _pantau("devices", "link", "gw-bangil", "fg-welang-2")
    assert linked.exit_code == 0, linked.output
    assert "fg-welang-2" in linked.output
    unlinked = _pantau("devices", "unlink", "gw-bangil", "fg-welang-3", "fg-welang-2")
    assert unlinked.exit_code == 0, unlinked.output
    with psycopg.connect(db_url) as conn:
        assert registry.gateway_sensors(conn)["gw-bangil"] == frozenset(city_entry.sensors) - {
            "fg-welang-3"
        }


def test_a_gateway_outside_the_city_file_names_its_sensors(
    devices_env: ProductionBroker, db_url: str
) -> None:
    before = devices_env.password_file.read_bytes()
    refusals = {
        ("devices", "add", "gw-tosari", "--gateway"): "name the sensors it reports for",
        ("devices", "add", "gw-tosari", "--gateway", "--sensor", "fg-nowhere-1"): "fg-nowhere-1",
        ("devices", "add", "fg-welang-1", "--gateway", "--sensor", "fg-welang-2"): "is a sensor",
        ("devices", "add", "fg-welang-1", "--sensor", "fg-welang-2"): "is for a gateway",
        ("devices", "unlink", "gw-nowhere", "fg-welang-1"): "not a registered gateway",
    }
    for args, message in refusals.items():
        result = _pantau(*args)
        assert result.exit_code == 1, args
        assert message in result.output, (args, result.output)
    assert devices_env.password_file.read_bytes() == before
    added = _pantau("devices", "add", "gw-tosari", "--gateway", "--sensor", "fg-welang-1")
    _secret(added)
    with psycopg.connect(db_url) as conn:
        assert registry.gateway_sensors(conn)["gw-tosari"] == {"fg-welang-1"}
        # The sensor came from the city file into the registry with it.
        assert conn.execute("SELECT 1 FROM sensors WHERE id = 'fg-welang-1'").fetchone()


def test_import_city_gives_the_simulator_working_credentials(
    devices_env: ProductionBroker, tmp_path: Path, db_url: str
) -> None:
    credentials = tmp_path / "demo" / "credentials.yaml"
    result = _pantau("devices", "import-city", str(MINI_CITY), "--credentials", str(credentials))
    assert result.exit_code == 0, result.output
    city = load_city(MINI_CITY)
    expected = city_accounts(city, gateways=True)
    passwords = Credentials.from_file(credentials)
    assert set(passwords.passwords) == set(expected)
    assert credentials.stat().st_mode & 0o077 == 0, "secrets readable by others"
    with psycopg.connect(db_url) as conn:
        (count,) = conn.execute("SELECT count(*) FROM sensors").fetchone() or (0,)
    assert count == len(city.sensors)
    for device in expected:
        wait_until(lambda d=device: _can_publish(devices_env, d, passwords.password(d)),  # type: ignore[misc]
                   timeout_s=10, what=f"{device} publishes")  # fmt: skip
    # Idempotent: nothing new, the file and the accounts unchanged.
    text, accounts = credentials.read_text(), read_password_file(devices_env.password_file)
    again = _pantau("devices", "import-city", str(MINI_CITY), "--credentials", str(credentials))
    assert again.exit_code == 0, again.output
    assert "0 accounts created" in again.output
    assert credentials.read_text() == text
    assert read_password_file(devices_env.password_file) == accounts


def test_service_accounts_from_the_settings_are_idempotent(
    production_broker: ProductionBroker,
) -> None:
    path = production_broker.password_file
    before = path.read_bytes()
    assert set_service_accounts(production_broker.settings, path) == []
    assert path.read_bytes() == before


def test_every_kecamatan_gets_its_own_valid_gateway_account() -> None:
    city = load_city(ROOT / "pantau" / "cities" / "pasuruan.yaml")
    names = [k.name for k in city.kecamatan]
    ids = {gateway_id(name) for name in names}
    assert len(ids) == len(names)
    assert all(re.fullmatch(SENSOR_ID_PATTERN, gateway) for gateway in ids), ids
    # The city file's gateways: one per kecamatan with sensors, for exactly its sensors.
    expected: dict[str, set[str]] = {}
    for sensor in city.sensors:
        expected.setdefault(gateway_id(sensor.kecamatan), set()).add(sensor.id)
    assert {g.id: set(g.sensors) for g in city.gateways} == expected


def test_broker_config_check_finds_the_committed_files_in_step(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(ROOT)
    for key in [k for k in __import__("os").environ if k.startswith("PANTAU_")]:
        monkeypatch.delenv(key)
    assert _pantau("broker", "config", "--check").exit_code == 0
    out = tmp_path / "conf"
    assert _pantau("broker", "config", "--out", str(out)).exit_code == 0
    (out / "acl").write_text((out / "acl").read_text().replace("pattern write", "pattern read"))
    assert _pantau("broker", "config", "--out", str(out), "--check").exit_code == 1


def test_a_damaged_password_file_is_reported_and_left_alone(devices_env: ProductionBroker) -> None:
    damaged = devices_env.password_file.read_text() + "this line has no colon\n"
    devices_env.password_file.write_text(damaged)
    for args in (("devices", "list"), ("devices", "add", "fg-welang-2"), ("broker", "accounts")):
        result = _pantau(*args)
        assert result.exit_code == 1, args
        assert "expected `user:hash`" in result.output, result.output
    assert devices_env.password_file.read_text() == damaged
