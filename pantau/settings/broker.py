"""`PANTAU_BROKER__*`: the production broker's accounts, password file and reload."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import (
    BaseModel,
    Field,
    PositiveInt,
    SecretStr,
    field_validator,
)

_ACCOUNT = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # no `/`, `+`, `#`: names go into ACL topics


class BrokerSettings(BaseModel):
    """The production broker: its accounts, ACL and limits (`pantau broker`, `pantau devices`)."""

    password_file: Path | None = Field(
        default=None,
        description="Mosquitto password file kept by `pantau devices` and `pantau broker "
        "accounts` (hashed as `mosquitto_passwd` writes it).",
    )
    reload_command: str | None = Field(
        default=None,
        description="Command that makes the broker re-read its password and ACL files after "
        "a change, e.g. `docker compose kill -s HUP mosquitto`.",
    )
    pid_file: Path | None = Field(
        default=None,
        description="Without a reload command: the broker's pid file, to send it SIGHUP.",
    )
    ingest_user: str = Field(
        default="pantau-ingest",
        pattern=_ACCOUNT,
        description="Account of the ingest processes: reads every uplink, writes device feedback.",
    )
    ingest_password: SecretStr | None = Field(
        default=None, description="Its password (`pantau broker accounts` sets it)."
    )
    alerts_user: str = Field(
        default="pantau-alerts",
        pattern=_ACCOUNT,
        description="Account of the alert service: reads every uplink, writes status, alerts "
        "and warning-post commands.",
    )
    alerts_password: SecretStr | None = Field(default=None, description="Its password.")
    public_user: str = Field(
        default="pantau-public",
        pattern=_ACCOUNT,
        description="Public read-only account: reads sensor status and alert events only.",
    )
    public_password: SecretStr | None = Field(default=None, description="Its password.")
    warning_users: list[str] = Field(
        default=["pantau-warning"],
        description="Accounts of village early-warning posts: read the warning commands only.",
    )
    tls_port: int = Field(
        default=8883, ge=1, le=65535, description="TLS listener for devices in the field."
    )
    autosave_interval_s: PositiveInt = Field(
        default=5,
        description="How often the broker saves its sessions and queued messages to disk.",
    )
    session_expiration_h: PositiveInt = Field(
        default=168,
        description="Sessions of clients that stay away longer are dropped with their queues "
        "(`persistent_client_expiration`); never shorter than PANTAU_MQTT__SESSION_EXPIRY_S.",
    )
    max_queued_messages: PositiveInt = Field(
        default=1_000_000,
        description="Messages queued per session (offline ingest included) before the broker "
        "drops new ones; at least ten times PANTAU_INGEST__MAX_UNDELIVERED_MESSAGES.",
    )
    max_queued_bytes: PositiveInt = Field(
        default=1024**3, description="Bytes queued per session before the broker drops new ones."
    )
    max_packet_size_bytes: PositiveInt = Field(
        default=1024**2,
        description="Larger packets are refused by the broker; above "
        "PANTAU_INGEST__MAX_PAYLOAD_BYTES so that ingest records oversized payloads itself.",
    )

    @field_validator("warning_users")
    @classmethod
    def _account_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(_ACCOUNT, name):
                raise ValueError(f"{name!r} is not a valid account name")
        return value
