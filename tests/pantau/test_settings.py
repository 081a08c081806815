"""Settings: environment parsing, secrets, errors that name the option, injection."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from pantau.settings import (
    DEFAULT_CITY_FILE,
    MqttSettings,
    Settings,
    SettingsError,
    StorageSettings,
    describe_validation_error,
    get_settings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No PANTAU_ variable and no .env file from outside the test; a fresh settings cache."""
    import os

    for name in list(os.environ):
        if name.startswith("PANTAU_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults_need_no_environment() -> None:
    settings = Settings()
    assert settings.database_url is None
    assert settings.mqtt.url == "mqtt://127.0.0.1:1883"
    assert settings.storage.mode == "auto"
    assert settings.city_file == DEFAULT_CITY_FILE
    assert DEFAULT_CITY_FILE.exists()


def test_prefix_and_nested_delimiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_DATABASE_URL", "postgresql://pantau@db.example:5433/pantau")
    monkeypatch.setenv("PANTAU_MQTT__URL", "mqtts://broker.example:8883")
    monkeypatch.setenv("PANTAU_MQTT__TOPIC_ROOT", "pasuruan/prod")
    monkeypatch.setenv("PANTAU_STORAGE__RAW_RETENTION", "P30D")
    monkeypatch.setenv("PANTAU_STORAGE__MODE", "postgres")
    monkeypatch.setenv("PANTAU_LOG_LEVEL", "DEBUG")
    settings = get_settings()
    assert settings.require_database_url() == "postgresql://pantau@db.example:5433/pantau"
    assert settings.mqtt.host == "broker.example"
    assert settings.mqtt.port == 8883
    assert settings.mqtt.tls
    assert settings.mqtt.uplink_filter == "pasuruan/prod/up/+"
    assert settings.mqtt.uplink_topic("fg-welang-1") == "pasuruan/prod/up/fg-welang-1"
    assert settings.storage.raw_retention == timedelta(days=30)
    assert settings.storage.mode == "postgres"
    assert settings.log_level == "DEBUG"


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PANTAU_MQTT__CLIENT_ID=from-env-file\n")
    assert Settings().mqtt.client_id == "from-env-file"


def test_get_settings_builds_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_MQTT__CLIENT_ID", "first")
    first = get_settings()
    monkeypatch.setenv("PANTAU_MQTT__CLIENT_ID", "second")
    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().mqtt.client_id == "second"


def test_secrets_are_hidden_from_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_DATABASE_URL", "postgresql://pantau:db-s3cret@127.0.0.1/pantau")
    monkeypatch.setenv("PANTAU_MQTT__PASSWORD", "mqtt-s3cret")
    monkeypatch.setenv("PANTAU_READONLY_PASSWORD", "ro-s3cret")
    settings = Settings()
    assert isinstance(settings.database_url, SecretStr)
    assert isinstance(settings.mqtt.password, SecretStr)
    assert isinstance(settings.readonly_password, SecretStr)
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "s3cret" not in text
    assert settings.mqtt.password.get_secret_value() == "mqtt-s3cret"
    assert "db-s3cret" in settings.require_database_url()


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("PANTAU_STORAGE__RAW_RETENTION", "P1D", "at least 7 days"),
        ("PANTAU_STORAGE__RAW_RETENTION", "forever", "timedelta"),
        ("PANTAU_STORAGE__MODE", "sqlite", "auto"),
        ("PANTAU_STORAGE__CHUNK_INTERVAL", "PT1S", "at least one minute"),
        ("PANTAU_MQTT__URL", "http://broker", "mqtt://"),
        ("PANTAU_MQTT__TOPIC_ROOT", "a/#", "pattern"),
        ("PANTAU_MQTT__SESSION_EXPIRY_S", "-5", "greater than 0"),
        ("PANTAU_API__PORT", "70000", "65535"),
        ("PANTAU_DATABASE_URL", "mysql://x@y/z", "postgresql://"),
        ("PANTAU_LOG_LEVEL", "LOUD", "DEBUG"),
    ],
)
def test_invalid_value_names_the_option(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        get_settings()
    message = str(caught.value)
    assert f"{variable}:" in message
    assert words in message


def test_rollup_retention_must_outlive_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_STORAGE__RAW_RETENTION", "P400D")
    with pytest.raises(SettingsError) as caught:
        get_settings()
    message = str(caught.value)
    assert "PANTAU_STORAGE__RETENTION_1M" in message
    assert "PANTAU_STORAGE__RAW_RETENTION" in message


def test_describe_validation_error_lists_every_bad_option() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({"storage": {"raw_retention": "P1D", "premake_partitions": 0}})
    text = describe_validation_error(caught.value)
    assert text.startswith("invalid settings:")
    assert "PANTAU_STORAGE__RAW_RETENTION: " in text
    assert "PANTAU_STORAGE__PREMAKE_PARTITIONS: " in text


def test_settings_are_injectable_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTAU_MQTT__CLIENT_ID", "from-environment")
    settings = Settings(
        database_url=SecretStr("postgresql://postgres@127.0.0.1:5432/other"),
        mqtt=MqttSettings(url="mqtt://127.0.0.1:1999", client_id="injected"),
        storage=StorageSettings(raw_retention=timedelta(days=14), premake_partitions=1),
    )
    assert settings.mqtt.client_id == "injected"
    assert settings.mqtt.port == 1999
    assert settings.storage.raw_retention == timedelta(days=14)
    assert settings.require_database_url().endswith("/other")


def test_missing_database_url_is_a_clear_error() -> None:
    with pytest.raises(SettingsError, match="PANTAU_DATABASE_URL is not set"):
        Settings().require_database_url()
