"""`PANTAU_MQTT__*`: how Pantau reaches the MQTT broker."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
)

from pantau import topics


class MqttSettings(BaseModel):
    """How Pantau reaches the MQTT broker."""

    url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="Broker address, `mqtt://host:port` (or `mqtts://` for TLS).",
    )
    username: str | None = Field(default=None, description="Broker user name, if it asks for one.")
    password: SecretStr | None = Field(default=None, description="Broker password.")
    topic_root: str = Field(
        default="pantau",
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        description="Root of every Pantau topic; devices publish to `ROOT/up/DEVICE_ID`.",
    )
    client_id: str = Field(
        default="pantau-ingest-1",
        min_length=1,
        max_length=64,
        description="Fixed client id of this ingest process: its persistent session is keyed on it.",
    )
    shared_group: str | None = Field(
        default=None,
        description="Shared-subscription group that splits messages across several ingest "
        "processes; unset for a plain subscription (one process). See docs/ingest.md: "
        "Mosquitto 2.0 does not restore shared subscriptions after a broker restart.",
    )
    session_expiry_s: PositiveInt = Field(
        default=86_400,
        description="How long the broker keeps an ingest session (and its queued messages) "
        "while the process is away.",
    )
    keepalive_s: PositiveInt = Field(default=30, description="MQTT keep-alive.")
    reconnect_max_delay_s: PositiveInt = Field(
        default=30, description="Longest wait between attempts to reconnect to the broker."
    )
    connect_timeout_s: PositiveFloat = Field(
        default=10.0, description="How long to wait for the broker before giving up at start-up."
    )

    @field_validator("url")
    @classmethod
    def _url_has_host(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"mqtt", "mqtts", "tcp"} or not parts.hostname:
            raise ValueError("expected mqtt://HOST:PORT")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def uplink_filter(self) -> str:
        """Topic filter covering every device's uplink."""
        return topics.uplink_filter(self.topic_root)

    def uplink_topic(self, device_id: str) -> str:
        """The topic a device publishes its readings to."""
        return topics.uplink_topic(self.topic_root, device_id)
