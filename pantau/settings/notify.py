"""`PANTAU_NOTIFY__*`: notifications through Alertmanager, and who receives what."""

from __future__ import annotations

import re
from typing import Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

# Rules whose alerts are flood warnings: what a receiver is sent unless it asks for others.
FLOOD_RULES = ("flood_level", "rising_fast", "upstream")
ALERT_RULES = (
    *FLOOD_RULES,
    "congestion",
    "lamp",
    "air_quality",
    "offline",
    "stuck",
    "rejected",
)
_RECEIVER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_PLACE = r"^[A-Za-z][A-Za-z .'-]{0,63}$"  # a kecamatan name, safe inside a matcher's regex


class Receiver(BaseModel):
    """A group of people notified alike: where their messages go and what they are sent."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_RECEIVER, description="Receiver name in Alertmanager.")
    emails: list[str] = Field(default=[], description="E-mail addresses.")
    telegram_chat_ids: list[int] = Field(default=[], description="Telegram chats (group ids).")
    webhook_urls: list[str] = Field(
        default=[], description="Webhooks (an SMS or WhatsApp gateway) sent Alertmanager's JSON."
    )
    min_level: int = Field(
        default=1,
        ge=1,
        le=3,
        description="Lowest level sent: 1 Waspada, 2 Siaga, 3 Awas (for forecasts, the level "
        "expected).",
    )
    kecamatan: list[str] = Field(default=[], description="Only alerts there (empty: anywhere).")
    rules: list[str] = Field(default=list(FLOOD_RULES), description="Only these rules' alerts.")

    @field_validator("kecamatan")
    @classmethod
    def _places(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(_PLACE, name):
                raise ValueError(f"{name!r} is not a kecamatan name")
        return value

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ALERT_RULES))
        if unknown or not value:
            raise ValueError(f"rules must be some of {', '.join(ALERT_RULES)}")
        return value

    @field_validator("emails")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        for address in value:
            if not re.fullmatch(r"[^@\s,<>\"]+@[^@\s,<>\"]+", address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            _http_url(url)
        return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{value!r}: expected http(s)://HOST[:PORT][/PATH]")
    return value.rstrip("/")


def _default_receivers() -> list[Receiver]:
    return [
        Receiver(name="duty-officer", min_level=1),
        Receiver(name="everyone", min_level=3),
    ]


class NotifySettings(BaseModel):
    """Notifications through Prometheus Alertmanager: what the alert service sends it, and the
    configuration `pantau alertmanager config` writes for it (docs/alerts.md)."""

    alertmanager_url: str | None = Field(
        default=None,
        description="Alertmanager the alert service sends every open alert to, e.g. "
        "`http://127.0.0.1:9093`; unset: no notifications. `pantau up` starts one where it is "
        "installed.",
    )
    alertmanager_external_url: str | None = Field(
        default=None,
        description="Alertmanager's address as operators reach it (its UI, silences): the "
        "control page links to it; unset hides the link.",
    )
    public_url: str | None = Field(
        default=None,
        description="Public address of the city page: notifications link to the sensor there; "
        "unset: no link.",
    )
    resend_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="Every open alert (and each recent end) is sent again this often, so that "
        "a restart of either side loses nothing; well within `RESOLVE_TIMEOUT_S`.",
    )
    request_timeout_s: float = Field(
        default=5.0, gt=0, description="Longest wait for Alertmanager to answer one request."
    )
    retry_initial_s: float = Field(
        default=0.5, gt=0, description="First wait before sending again after a failure ..."
    )
    retry_max_s: float = Field(
        default=30.0,
        gt=0,
        description="... doubling up to this (and never longer than `RESEND_INTERVAL_S`).",
    )
    resolved_resend_s: float = Field(
        default=300.0,
        ge=0,
        description="An alert's end is sent again for this long after Alertmanager took it: "
        "Alertmanager keeps alerts in memory only, and one restarted meanwhile still learns of "
        "it. At least twice `GROUP_INTERVAL_S`.",
    )
    resolve_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="Alertmanager (`resolve_timeout`): an alert not sent again for this long "
        "counts as ended.",
    )
    group_wait_s: float = Field(
        default=10.0,
        ge=0,
        description="Alertmanager (`group_wait`): how long a new warning waits before it is "
        "sent (a higher level arriving meanwhile silences the lower one).",
    )
    group_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="Alertmanager (`group_interval`): how often a warning's changes, its end "
        "included, are sent at most.",
    )
    repeat_interval_s: float = Field(
        default=7_200.0,
        gt=0,
        description="Alertmanager (`repeat_interval`): a warning still in force is sent again "
        "this often.",
    )
    smtp_smarthost: str | None = Field(
        default=None, description="SMTP server for e-mail, `host:port`."
    )
    smtp_from: str = Field(default="pantau@localhost", description="Sender of the e-mails.")
    smtp_username: str | None = Field(default=None, description="SMTP login, if it asks.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_require_tls: bool = Field(
        default=True, description="Refuse an SMTP server that does not offer STARTTLS."
    )
    telegram_bot_token: SecretStr | None = Field(
        default=None, description="Telegram bot token (from @BotFather) for the Telegram chats."
    )
    telegram_api_url: str = Field(
        default="https://api.telegram.org", description="Telegram Bot API address."
    )
    receivers: list[Receiver] = Field(
        default_factory=_default_receivers,
        description='Who is told what, as JSON: `[{"name": "everyone", "emails": [...], '
        '"telegram_chat_ids": [...], "webhook_urls": [...], "min_level": 3, '
        '"kecamatan": [...], "rules": [...]}]`; the defaults have no addresses yet.',
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: object) -> object:
        # A deployment passes every variable, empty where it has no value (compose does).
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and v == "")}
        return data

    @field_validator(
        "alertmanager_url", "alertmanager_external_url", "public_url", "telegram_api_url"
    )
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("smtp_smarthost")
    @classmethod
    def _smarthost(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^\s:]+:\d{1,5}", value):
            raise ValueError("expected host:port")
        return value

    @field_validator("receivers")
    @classmethod
    def _unique(cls, value: list[Receiver]) -> list[Receiver]:
        names = [r.name for r in value]
        if len(names) != len(set(names)):
            raise ValueError("receiver names must differ")
        return value

    @model_validator(mode="after")
    def _timing(self) -> Self:
        if self.resend_interval_s * 3 > self.resolve_timeout_s:
            raise ValueError(
                "PANTAU_NOTIFY__RESOLVE_TIMEOUT_S must be at least three times "
                "PANTAU_NOTIFY__RESEND_INTERVAL_S"
            )
        if self.resolved_resend_s < 2 * self.group_interval_s:
            raise ValueError(
                "PANTAU_NOTIFY__RESOLVED_RESEND_S must be at least twice "
                "PANTAU_NOTIFY__GROUP_INTERVAL_S"
            )
        if self.repeat_interval_s < self.group_interval_s:
            raise ValueError(
                "PANTAU_NOTIFY__REPEAT_INTERVAL_S must not be shorter than "
                "PANTAU_NOTIFY__GROUP_INTERVAL_S"
            )
        return self
