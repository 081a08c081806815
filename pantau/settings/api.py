"""`PANTAU_API__*`: the API's server, pools, caches and limits."""

from __future__ import annotations

import ipaddress

from pydantic import (
    BaseModel,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
)


class ApiSettings(BaseModel):
    """The open-data and operator API."""

    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="API port.")
    pool_max_size: PositiveInt = Field(
        default=8,
        description="Database connections at most in each of the API's two pools (history "
        "pages on the event loop; the other routes in worker threads).",
    )
    pool_timeout_s: PositiveFloat = Field(
        default=10.0,
        description="How long a request waits for a free database connection before a 503.",
    )
    statement_timeout_ms: int = Field(
        default=15_000,
        ge=0,
        description="Longest a query of a JSON request may run (0: no limit); streamed CSV "
        "exports are not cut.",
    )
    cache_ttl_s: float = Field(
        default=2.0,
        ge=0,
        description="How long answers (the sensor registry, latest values, city status, "
        "history pages, SensorThings) are served from memory before being read again "
        "(0: always read).",
    )
    cache_ttl_coarse_s: float = Field(
        default=30.0,
        ge=0,
        description="How long history pages of hourly and daily buckets are served from "
        "memory (and may be kept by shared caches): their newest bucket moves by minutes. "
        "Never shorter than `CACHE_TTL_S`; no caching when that is 0.",
    )
    rate_limit_per_s: float = Field(
        default=20.0,
        ge=0,
        description="Requests per second each client address may make on average to each API "
        "process (0: no limit); beyond it the API answers 429 with `Retry-After`.",
    )
    rate_limit_burst: PositiveInt = Field(
        default=200, description="Requests a client may make at once before the rate applies."
    )
    rate_limit_clients_max: PositiveInt = Field(
        default=50_000,
        description="Client addresses the rate limit tracks at once in each API process (about "
        "400 bytes each); beyond them the one seen least recently is forgotten.",
    )
    trusted_proxies: list[str] = Field(
        default=["127.0.0.1", "::1"],
        description="Addresses or networks (CIDR) of the reverse proxies in front of the API. "
        "Only a request whose peer is one of them has its `X-Forwarded-For` and "
        "`X-Forwarded-Proto` believed: the client is the right-most forwarded address that is "
        "not a trusted proxy, and the rate limit counts it. `[]`: believe no proxy.",
    )
    page_rows_max: PositiveInt = Field(
        default=10_000, description="Largest `limit` of one page of readings."
    )
    cors_origins: list[str] = Field(
        default=["*"], description="Origins allowed to read the API from a browser (CORS)."
    )
    access_log: bool = Field(default=True, description="Log one line per request.")
    export_connections: PositiveInt = Field(
        default=2,
        description="CSV exports served at once by each API process, each on a database "
        "connection of their own pool (never one of the other routes'); one more is answered "
        "503 with `Retry-After`.",
    )
    export_send_timeout_s: PositiveFloat = Field(
        default=30.0,
        description="A CSV export whose client does not take the next part within this long is "
        "cut off, and its database connection freed.",
    )
    workers: PositiveInt = Field(
        default=1,
        description="API processes; more use more cores, each with its own database pools "
        "(up to `POOL_MAX_SIZE` connections each) and cache.",
    )
    stream_poll_ms: int = Field(
        default=500,
        ge=1,
        description="How often the live stream (`/stream`) looks for new readings and alert "
        "changes; one poller per API process serves every client.",
    )
    stream_overlap_ms: int = Field(
        default=5_000,
        ge=0,
        description="How far back each poll of the latest values looks again, so that a batch "
        "committed after a later one is still seen (duplicates are dropped).",
    )
    stream_keepalive_s: PositiveFloat = Field(
        default=15.0, description="Keep-alive comment sent on an idle live stream."
    )
    stream_client_queue_max: PositiveInt = Field(
        default=1_000,
        description="Events held for one live-stream client at most; a client that falls "
        "further behind is disconnected (it resumes with `Last-Event-ID`).",
    )
    stream_send_timeout_s: PositiveFloat = Field(
        default=30.0,
        description="A live-stream client that takes longer than this to accept one event is "
        "disconnected.",
    )
    stream_clients_max: PositiveInt = Field(
        default=500,
        description="Live-stream clients at once in each API process; one more is answered 503 "
        "with `Retry-After`.",
    )
    cap_sender: str = Field(
        default="pantau",
        pattern=r"^[^\s,<&]+$",
        description="CAP `sender` of the flood warnings: a globally unique name of the "
        "publishing agency, such as a domain or an address it controls.",
    )
    cap_area_radius_km: PositiveFloat = Field(
        default=2.0, description="Radius of the circle around a gauge that its CAP warnings cover."
    )
    cap_sender_name: str = Field(
        default="Pantau",
        min_length=1,
        max_length=200,
        description="CAP `senderName`: the agency people know, e.g. `BPBD Kabupaten Pasuruan`.",
    )
    cap_contact: str | None = Field(
        default=None,
        max_length=200,
        description="CAP `contact`: whom people reach about a warning (a phone number or "
        "address); unset: none given.",
    )
    cap_expires_h: PositiveFloat = Field(
        default=12.0,
        description="A CAP warning expires this long after its last change unless an Update "
        "or its Cancel comes first (they do, unless Pantau has stopped).",
    )
    sta_page_size: PositiveInt = Field(
        default=100,
        description="SensorThings API: entities in one page when the request gives no `$top`.",
    )
    sta_max_top: PositiveInt = Field(
        default=10_000,
        description="SensorThings API: most entities in one answer, expanded ones included; a "
        "larger `$top` is cut to it and the answer carries an `@iot.nextLink`.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item)
            except ValueError:
                raise ValueError(
                    f"{item!r} is neither an IP address nor a network such as 172.30.80.0/24"
                ) from None
        return value
