"""Operator routes (API key): the registry, thresholds, rejected payloads and their replay."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Body, Path, Query, Request, Response
from psycopg.rows import dict_row, tuple_row
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.deps import ConnDep, SettingsDep
from api.errors import Problem
from api.history.query import WIB, parse_time
from api.routes.alerts import dict_rows
from api.security import AUTH_RESPONSES, OperatorDep, problem_responses
from pantau.city import SENSOR_ID_PATTERN, City, Kecamatan, Sensor, Thresholds
from pantau.db import registry, store
from pantau.payload import DecodeLimits, Reason, decode

router = APIRouter(prefix="/operator", tags=["operator"], responses=AUTH_RESPONSES)

SensorId = Annotated[str, Path(pattern=SENSOR_ID_PATTERN, max_length=63)]
MAX_ID = 2**63 - 1
PREVIEW_CHARS = 500


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _forget_registry(request: Request) -> None:
    cache = getattr(request.app.state, "cache", None)
    if cache is not None:
        cache.clear()  # readers see the change now, not after the cache's lifetime


# --- sensors and thresholds --------------------------------------------------------------------


class SensorSaved(_Model):
    created: bool = Field(description="True when the sensor was new.")
    thresholds_changed: bool = Field(description="A new threshold version was added.")
    sensor: Sensor


def _stored_sensor(conn: psycopg.Connection, sensor_id: str) -> Sensor | None:
    found = registry.registered_sensors(conn, sensor_id=sensor_id).get(sensor_id)
    if found is None:
        return None
    row: dict[str, Any] = {
        name: getattr(found, name)
        for name in (
            "id", "family", "name", "kecamatan", "lat", "lon", "interval_s", "river",
            "river_km", "road", "road_class", "downstream", "travel_time_min", "quality",
        )
    }  # fmt: skip
    current = found.current_thresholds
    if current is not None:
        row["thresholds"] = current.model_dump()
    return Sensor.model_validate({k: v for k, v in row.items() if v is not None})


@router.put(
    "/sensors/{sensor_id}",
    summary="Register or update a sensor",
    response_model=SensorSaved,
    responses={201: {"description": "Registered", "model": SensorSaved}},
)
def put_sensor(
    request: Request,
    response: Response,
    conn: ConnDep,
    operator: OperatorDep,
    sensor_id: SensorId,
    sensor: Annotated[Sensor, Body(description="The sensor, as in a city file.")],
) -> SensorSaved:
    """Upsert a sensor as `pantau city load` does; changed thresholds add a version."""
    if sensor.id != sensor_id:
        raise Problem(422, f"the body's id {sensor.id!r} is not {sensor_id!r}", kind="id-mismatch")
    kecamatan = dict_rows(
        conn,
        "SELECT name, lat, lon, flood_prone, landslide_prone FROM kecamatan WHERE name = %s",
        [sensor.kecamatan],
    )
    if not kecamatan:
        raise Problem(422, f"unknown kecamatan {sensor.kecamatan[:60]!r}", kind="unknown-kecamatan")
    if sensor.downstream:
        known = {
            r["id"]
            for r in dict_rows(
                conn, "SELECT id FROM sensors WHERE id = ANY(%s)", [list(sensor.downstream)]
            )
        }
        missing = sorted(set(sensor.downstream) - known - {sensor.id})
        if missing:
            raise Problem(
                422, f"downstream of unknown sensors: {', '.join(missing)}", kind="unknown-sensor"
            )
    with conn.transaction():
        existed = dict_rows(conn, "SELECT 1 FROM sensors WHERE id = %s FOR UPDATE", [sensor_id])
        # Validated above, against the database rather than a whole city file.
        city = City.model_construct(
            name="operator", kecamatan=(Kecamatan(**kecamatan[0]),), sensors=(sensor,)
        )
        result = registry.load_city(conn, city)
    _forget_registry(request)
    stored = _stored_sensor(conn, sensor_id)
    assert stored is not None
    response.status_code = 200 if existed else 201
    return SensorSaved(
        created=not existed, thresholds_changed=result.thresholds_changed > 0, sensor=stored
    )


class ThresholdVersion(_Model):
    waspada: float = Field(description="Water level (m) where Waspada starts.", examples=[1.5])
    siaga: float = Field(examples=[2.0])
    awas: float = Field(examples=[2.5])
    valid_from: datetime | None = Field(
        default=None,
        description="When it takes effect (without an offset it is WIB); default: now.",
    )


class ThresholdHistory(_Model):
    sensor_id: str
    versions: list[ThresholdVersion] = Field(description="Oldest first; the last is current.")


def _history(conn: psycopg.Connection, sensor_id: str) -> ThresholdHistory:
    rows = dict_rows(
        conn,
        "SELECT waspada, siaga, awas, valid_from FROM flood_thresholds WHERE sensor_id = %s "
        "ORDER BY valid_from",
        [sensor_id],
    )
    return ThresholdHistory(sensor_id=sensor_id, versions=[ThresholdVersion(**r) for r in rows])


def _gauge(conn: psycopg.Connection, sensor_id: str) -> None:
    rows = dict_rows(conn, "SELECT family FROM sensors WHERE id = %s", [sensor_id])
    if not rows:
        raise Problem(404, f"no sensor {sensor_id!r}", kind="unknown-sensor")
    if rows[0]["family"] != "flood_gauge":
        raise Problem(
            422,
            f"{sensor_id} is a {rows[0]['family']}: only flood gauges have thresholds",
            kind="not-a-flood-gauge",
        )


@router.get(
    "/sensors/{sensor_id}/thresholds",
    summary="A gauge's threshold versions",
    response_model=ThresholdHistory,
)
def get_thresholds(conn: ConnDep, operator: OperatorDep, sensor_id: SensorId) -> ThresholdHistory:
    """Every threshold version of a flood gauge, oldest first."""
    _gauge(conn, sensor_id)
    return _history(conn, sensor_id)


@router.post(
    "/sensors/{sensor_id}/thresholds",
    summary="Add a threshold version to a flood gauge",
    response_model=ThresholdHistory,
    status_code=201,
    responses=problem_responses({409: "A version with that valid_from exists"}),
)
def add_thresholds(
    request: Request,
    conn: ConnDep,
    operator: OperatorDep,
    sensor_id: SensorId,
    version: ThresholdVersion,
) -> ThresholdHistory:
    """Recalibrate a gauge: earlier versions stay, so past alerts keep their thresholds."""
    try:
        Thresholds(waspada=version.waspada, siaga=version.siaga, awas=version.awas)
    except ValidationError:
        raise Problem(
            422, "thresholds must rise: waspada < siaga < awas", kind="thresholds"
        ) from None
    valid_from = version.valid_from or datetime.now(UTC)
    if valid_from.tzinfo is None:
        valid_from = valid_from.replace(tzinfo=WIB)  # as everywhere in the API
    _gauge(conn, sensor_id)
    try:
        conn.execute(
            "INSERT INTO flood_thresholds (sensor_id, valid_from, waspada, siaga, awas) "
            "VALUES (%s, %s, %s, %s, %s)",
            [sensor_id, valid_from, version.waspada, version.siaga, version.awas],
        )
    except psycopg.errors.UniqueViolation:
        raise Problem(
            409, f"{sensor_id} has a version valid from {valid_from.isoformat()}", kind="conflict"
        ) from None
    _forget_registry(request)
    return _history(conn, sensor_id)


# --- rejected payloads -------------------------------------------------------------------------


class Rejected(_Model):
    id: int
    reason: Reason
    topic: str
    detail: str
    received_at: datetime
    last_seen_at: datetime
    times_seen: int
    payload_bytes: int
    payload_preview: str = Field(
        description=f"The first {PREVIEW_CHARS} characters of the payload as UTF-8 (bytes "
        "that are not UTF-8 shown as U+FFFD)."
    )


class RejectedDetail(Rejected):
    payload_base64: str = Field(description="The whole payload, base64.")


class ReasonCount(_Model):
    reason: Reason
    payloads: int = Field(description="Distinct payloads.")
    times_seen: int = Field(description="Times they arrived.")


class RejectedPage(_Model):
    counts: list[ReasonCount] = Field(description="By reason, over the whole filter.")
    items: list[Rejected] = Field(description="Newest first.")
    next: str | None


_REJECTED_FILTER = """
WHERE (%(reason)s::text IS NULL OR reason = %(reason)s)
  AND (%(since)s::timestamptz IS NULL OR last_seen_at >= %(since)s)
"""
_REJECTED_COLUMNS = (
    "id, reason, topic, detail, received_at, last_seen_at, times_seen, "
    "length(payload) AS payload_bytes, substring(payload FROM 1 FOR 2000) AS head"
)


def _rejected(row: dict[str, Any]) -> dict[str, Any]:
    head = bytes(row.pop("head"))
    row["payload_preview"] = head.decode("utf-8", "replace")[:PREVIEW_CHARS]
    return row


@router.get(
    "/rejected", summary="Rejected payloads, with counts by reason", response_model=RejectedPage
)
def list_rejected(
    request: Request,
    conn: ConnDep,
    operator: OperatorDep,
    reason: Annotated[Reason | None, Query(description="Only this reason.")] = None,
    since: Annotated[
        str | None,
        Query(
            description="Only those seen at or after this time (RFC 3339; without an offset "
            "it is WIB).",
            max_length=40,
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Page cursor.")] = None,
) -> RejectedPage:
    """What ingest refused and why, newest first; `counts` sums them up by reason."""
    params = {
        "reason": reason.value if reason else None,
        "since": parse_time(since, "since") if since else None,
        "before": before_id,
        "limit": limit + 1,
    }
    counts = dict_rows(
        conn,
        "SELECT reason, count(*) AS payloads, sum(times_seen)::bigint AS times_seen "
        f"FROM rejected_payloads {_REJECTED_FILTER} GROUP BY reason ORDER BY reason",
        params,
    )
    rows = dict_rows(
        conn,
        f"SELECT {_REJECTED_COLUMNS} FROM rejected_payloads {_REJECTED_FILTER} "
        "AND (%(before)s::bigint IS NULL OR id < %(before)s) ORDER BY id DESC LIMIT %(limit)s",
        params,
    )
    items = [Rejected(**_rejected(r)) for r in rows[:limit]]
    more = len(rows) > limit
    return RejectedPage(
        counts=[ReasonCount(**c) for c in counts],
        items=items,
        next=str(request.url.include_query_params(before_id=items[-1].id)) if more else None,
    )


RejectedId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.get(
    "/rejected/{rejected_id}", summary="One rejected payload, whole", response_model=RejectedDetail
)
def get_rejected(conn: ConnDep, operator: OperatorDep, rejected_id: RejectedId) -> RejectedDetail:
    """The rejection with its payload (base64)."""
    rows = dict_rows(
        conn,
        f"SELECT {_REJECTED_COLUMNS}, payload FROM rejected_payloads WHERE id = %s",
        [rejected_id],
    )
    if not rows:
        raise Problem(404, f"no rejected payload {rejected_id}", kind="unknown-rejected")
    row = _rejected(rows[0])
    row["payload_base64"] = base64.b64encode(bytes(row.pop("payload"))).decode()
    return RejectedDetail(**row)


class RejectionReason(_Model):
    reason: Reason
    detail: str


class ReplayResult(_Model):
    outcome: Literal["stored", "partly_stored", "still_rejected"] = Field(
        description="`stored`: every reading decoded and the rejection is gone; "
        "`partly_stored`: some readings stored, the rest recorded as new rejections; "
        "`still_rejected`: nothing decodes yet and the rejection is kept."
    )
    readings: int = Field(description="Readings the payload decodes to now.")
    inserted: int = Field(description="Readings that were new (the rest were stored already).")
    rejections: list[RejectionReason] = Field(description="What still fails, and why.")


@router.post(
    "/rejected/{rejected_id}/replay",
    summary="Decode a rejected payload again and store what now decodes",
    response_model=ReplayResult,
)
def replay_rejected(
    conn: ConnDep, settings: SettingsDep, operator: OperatorDep, rejected_id: RejectedId
) -> ReplayResult:
    """After fixing the registry (e.g. registering the sensor), turn a rejection into readings.

    Decoded as ingest would have at the time it arrived; storing is idempotent, so replaying
    twice stores once.
    """
    with conn.transaction():
        rows = dict_rows(
            conn,
            "SELECT topic, payload, received_at FROM rejected_payloads WHERE id = %s FOR UPDATE",
            [rejected_id],
        )
        if not rows:
            raise Problem(404, f"no rejected payload {rejected_id}", kind="unknown-rejected")
        topic, payload, received_at = (
            rows[0]["topic"],
            bytes(rows[0]["payload"]),
            rows[0]["received_at"],
        )
        conn.row_factory = tuple_row
        families = registry.sensor_families(conn)
        gateways = registry.gateway_sensors(conn)
        conn.row_factory = dict_row  # type: ignore[assignment]
        decoded = decode(
            payload,
            topic=topic,
            topic_root=settings.mqtt.topic_root,
            sensors=families,
            received_at=received_at,
            limits=DecodeLimits.from_settings(settings),
            gateways=gateways,
        )
        problems = [RejectionReason(reason=r.reason, detail=r.detail) for r in decoded.rejections]
        if not decoded.readings:
            return ReplayResult(
                outcome="still_rejected", readings=0, inserted=0, rejections=problems
            )
        # Gone first: a part that still fails for the same reason is recorded again below.
        conn.execute("DELETE FROM rejected_payloads WHERE id = %s", [rejected_id])
        store.prepare(conn)
        result = store.store(
            conn,
            decoded.readings,
            [
                store.RejectedPayload(
                    topic=topic, payload=payload, received_at=received_at, rejection=r
                )
                for r in decoded.rejections
            ],
        )
    return ReplayResult(
        outcome="partly_stored" if problems else "stored",
        readings=result.staged,
        inserted=result.inserted,
        rejections=problems,
    )
