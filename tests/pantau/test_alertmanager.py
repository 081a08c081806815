"""`pantau alertmanager config`: the files it writes are what Alertmanager 0.25 accepts (checked
with its own `amtool check-config`), and its routes send each alert where the settings say
(checked with `amtool config routes test`)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

import pantau.cli.app as cli
from pantau.alertmanager import (
    CONFIG_FILE,
    TEMPLATES_FILE,
    AlertmanagerConfigError,
    alertname,
    duration,
    level_name,
    render_config,
    write_config,
)
from pantau.settings import NotifySettings, get_settings
from pantau.tools.services import alertmanager_binary

FULL = {
    "smtp_smarthost": "smtp.example.org:587",
    "smtp_username": "pantau",
    "smtp_password": "rahasia",
    "telegram_bot_token": "123:token",
    "receivers": [
        {"name": "duty-officer", "emails": ["piket@bpbd.example.org"], "min_level": 1},
        {
            "name": "everyone",
            "telegram_chat_ids": [-100123],
            "webhook_urls": ["http://sms-gateway.local/alertmanager"],
            "min_level": 3,
        },
        {
            "name": "camat-bangil",
            "emails": ["camat@bangil.example.org"],
            "kecamatan": ["Bangil", "Kraton"],
            "min_level": 2,
        },
        {"name": "technicians", "webhook_urls": ["http://wa.local/x"], "rules": ["offline"]},
    ],
}


@pytest.fixture(scope="module")
def amtool_installed() -> None:
    try:
        alertmanager_binary()
    except RuntimeError as error:
        pytest.skip(str(error))


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["amtool", *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize("fields", [{}, FULL], ids=["defaults", "every-receiver-kind"])
def test_alertmanager_accepts_the_generated_files(
    fields: dict[str, object], tmp_path: Path, amtool_installed: None
) -> None:
    write_config(NotifySettings.model_validate(fields), tmp_path)
    result = _amtool("check-config", str(tmp_path / CONFIG_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout and "SUCCESS" in result.stdout


def test_the_check_fails_on_a_broken_file(tmp_path: Path, amtool_installed: None) -> None:
    write_config(NotifySettings(), tmp_path)
    path = tmp_path / TEMPLATES_FILE
    path.write_text(path.read_text().replace("{{ end }}", "", 1))
    assert _amtool("check-config", str(tmp_path / CONFIG_FILE)).returncode != 0


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        # Awas to everyone (and to the duty officer, who is told every level).
        ({"rule": "flood_level", "level": "3", "kecamatan": "Beji"}, "duty-officer,everyone"),
        # Waspada to the duty officer only.
        ({"rule": "flood_level", "level": "1", "kecamatan": "Beji"}, "duty-officer"),
        # The camat of Bangil from Siaga, for his own kecamatan.
        ({"rule": "flood_level", "level": "2", "kecamatan": "Bangil"}, "duty-officer,camat-bangil"),
        ({"rule": "upstream", "level": "3", "kecamatan": "Kraton"},
         "duty-officer,everyone,camat-bangil"),
        ({"rule": "flood_level", "level": "1", "kecamatan": "Bangil"}, "duty-officer"),
        # Other rules only where a receiver asks for them.
        ({"rule": "offline", "level": "2", "kecamatan": "Bangil"}, "technicians"),
        ({"rule": "lamp", "level": "1", "kecamatan": "Bangil"}, "pantau-nobody"),
    ],
)  # fmt: skip
def test_routes_by_level_kecamatan_and_rule(
    labels: dict[str, str], receivers: str, tmp_path: Path, amtool_installed: None
) -> None:
    write_config(NotifySettings.model_validate(FULL), tmp_path)
    pairs = [f"{k}={v}" for k, v in labels.items()]
    result = _amtool("config", "routes", "test", f"--config.file={tmp_path / CONFIG_FILE}", *pairs)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receivers


def test_receivers_integrations_and_inhibition() -> None:
    document = yaml.safe_load(render_config(NotifySettings.model_validate(FULL)))
    receivers = {r["name"]: r for r in document["receivers"]}
    duty = receivers["duty-officer"]["email_configs"][0]
    assert duty["to"] == "piket@bpbd.example.org" and duty["send_resolved"] is True
    assert "pantau.subject" in duty["headers"]["Subject"]
    telegram = receivers["everyone"]["telegram_configs"][0]
    assert telegram["chat_id"] == -100123 and telegram["bot_token"] == "123:token"
    assert telegram["api_url"] == "https://api.telegram.org"
    hook = receivers["everyone"]["webhook_configs"][0]
    assert hook == {"url": "http://sms-gateway.local/alertmanager", "send_resolved": True}
    assert document["global"]["smtp_auth_password"] == "rahasia"
    inhibit = document["inhibit_rules"]
    # A gauge's Awas silences its own forecasts; an alert's higher level its lower ones.
    assert {
        "source_matchers": ['rule="flood_level"', 'level="3"'],
        "target_matchers": ['rule=~"rising_fast|upstream"'],
        "equal": ["sensor"],
    } in inhibit
    assert {r["equal"][0] for r in inhibit} == {"alert_id", "sensor"}
    route = document["route"]
    assert route["group_by"] == ["alertname", "sensor", "level"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "10s",
        "60s",
        "7200s",
    )


def test_names_and_durations() -> None:
    assert alertname("flood_level") == "PantauFloodLevel"
    assert level_name("flood_level", 3) == ("Awas", "Awas (danger)")
    assert level_name("rising_fast", 2) == ("Naik cepat, menuju Siaga", "Rising fast towards Siaga")
    assert level_name("air_quality", 3) == ("Berbahaya", "Hazardous")
    assert level_name("offline", 2) == ("Luring", "Offline")
    assert [duration(s) for s in (0, 0.2, 1, 90, 7200)] == ["0s", "200ms", "1s", "90s", "7200s"]


def test_an_address_without_its_server_is_a_clear_error(tmp_path: Path) -> None:
    for fields, setting in (
        ({"receivers": [{"name": "x", "emails": ["a@b.org"]}]}, "SMTP_SMARTHOST"),
        ({"receivers": [{"name": "x", "telegram_chat_ids": [1]}]}, "TELEGRAM_BOT_TOKEN"),
    ):
        with pytest.raises(AlertmanagerConfigError, match=setting):
            render_config(NotifySettings.model_validate(fields))
    bad = [
        {"receivers": [{"name": "a"}, {"name": "a"}]},
        {"receivers": [{"name": "a", "kecamatan": ['Bangil"|.*']}]},
        {"receivers": [{"name": "a", "rules": ["floods"]}]},
        {"receivers": [{"name": "a", "emails": ["not-an-address"]}]},
        {"receivers": [{"name": "a", "webhook_urls": ["ftp://x"]}]},
        {"resend_interval_s": 600, "resolve_timeout_s": 900},
        {"resolved_resend_s": 10, "group_interval_s": 60},
        {"smtp_smarthost": "no-port"},
    ]
    for fields in bad:
        with pytest.raises(ValidationError):
            NotifySettings.model_validate(fields)


def test_the_command_writes_the_files_secrets_private_and_checks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PANTAU_NOTIFY__TELEGRAM_BOT_TOKEN", "123:token")
    monkeypatch.setenv(
        "PANTAU_NOTIFY__RECEIVERS", '[{"name": "everyone", "telegram_chat_ids": [5]}]'
    )
    get_settings.cache_clear()
    runner = CliRunner()
    out = tmp_path / "am"
    try:
        assert runner.invoke(cli.app, ["alertmanager", "config", "--out", str(out)]).exit_code == 0
        config = out / CONFIG_FILE
        assert stat.S_IMODE(config.stat().st_mode) == 0o600  # it holds the bot token
        assert "123:token" in config.read_text()
        assert (out / TEMPLATES_FILE).is_file()
        check = ["alertmanager", "config", "--out", str(out), "--check"]
        assert runner.invoke(cli.app, check).exit_code == 0
        config.write_text(config.read_text() + "# edited\n")
        assert runner.invoke(cli.app, check).exit_code == 1
        monkeypatch.setenv("PANTAU_NOTIFY__RECEIVERS", '[{"name": "x", "emails": ["a@b.org"]}]')
        get_settings.cache_clear()
        failed = runner.invoke(cli.app, ["alertmanager", "config", "--out", str(out)])
        assert failed.exit_code == 2 and "SMTP_SMARTHOST" in failed.output
    finally:
        get_settings.cache_clear()
