"""Alerts from the alert service: active and recent, one alert with its changes, polling, the
CAP feed (acknowledging, assigning and the history: api/routes/alert_work.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

import psycopg
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field

from api import cap
from api.deps import ConnDep, SettingsDep
from api.errors import Problem
from api.history.query import parse_time
from api.schemas import ATOM, CAP_XML, alternatives, text_schema
from pantau import levels
from pantau.city import SENSOR_ID_PATTERN, Thresholds
from pantau.settings import Settings

router = APIRouter(prefix="/alerts", tags=["alerts"])

Rule = Literal[
    "flood_level",
    "rising_fast",
    "upstream",
    "congestion",
    "lamp",
    "air_quality",
    "offline",
    "stuck",
    "rejected",
]
RULES: tuple[str, ...] = get_args(Rule)
MAX_ID = 2**63 - 1
AlertId = Annotated[int, Path(ge=1, le=MAX_ID, description="The alert's id.")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Alert(_Model):
    id: int
    sensor_id: str
    family: str = Field(description="The sensor's family.")
    kecamatan: str = Field(description="Where the sensor is.")
    rule: str = Field(
        description="The rule that raised it (docs/alerts.md): one of " + ", ".join(RULES) + ".",
        examples=["flood_level"],
    )
    level: int = Field(ge=1, le=3, description="1 to 3; see `level_label`.")
    level_label: str = Field(
        description="The level's name in Indonesian: Waspada/Siaga/Awas for flood_level; "
        "Tidak Sehat/Sangat Tidak Sehat/Berbahaya for air_quality; the rule's own words for "
        "the others (such as `Naik cepat, menuju Awas` for rising_fast).",
        examples=["Siaga"],
    )
    level_label_en: str = Field(
        description="The level's name in English.", examples=["Siaga (standby)"]
    )
    state: Literal["open", "resolved"]
    opened_at: datetime = Field(description="Observation time that opened it.")
    updated_at: datetime = Field(description="Observation time of its latest change.")
    resolved_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None = Field(
        description="The operator who acknowledged: the key's holder, else the key's name."
    )
    assigned_to: str | None = Field(description="The person handling the alert now.")
    assigned_at: datetime | None = Field(description="When it was assigned to them.")
    value: float | None
    predicted_level: int | None = Field(description="The level expected next, if predicted.")
    predicted_at: datetime | None = Field(description="When it is expected.")
    message: str = Field(description="In Indonesian.")
    message_en: str = Field(description="In English.")
    details: dict[str, Any]


class AlertEvent(_Model):
    id: int = Field(description="Increasing; poll `/alerts/events?after_id=` with the last seen.")
    alert_id: int
    sensor_id: str
    rule: str
    change: Literal["opened", "escalated", "de-escalated", "resolved", "acknowledged"]
    level: int
    previous_level: int | None
    value: float | None
    observed_at: datetime = Field(description="Time of the reading that caused it.")
    recorded_at: datetime
    predicted_level: int | None
    predicted_at: datetime | None
    message: str
    message_en: str
    details: dict[str, Any]


class AlertDetail(Alert):
    events: list[AlertEvent] = Field(description="Every change of the alert, oldest first.")


class AlertPage(_Model):
    items: list[Alert] = Field(description="Newest first.")
    next: str | None = Field(description="URL of the next page, or null on the last page.")


class AlertEventPage(_Model):
    items: list[AlertEvent] = Field(description="Oldest first.")
    last_id: int = Field(description="Pass as `after_id` next time (unchanged if none came).")
    next: str | None = Field(description="URL of the next page while more are waiting.")


class CapXmlResponse(Response):
    media_type = cap.CAP_MEDIA_TYPE


class AtomResponse(Response):
    media_type = cap.ATOM_MEDIA_TYPE


_ALERT_COLUMNS = """
a.id, a.sensor_id, s.family, s.kecamatan, a.rule, a.level, a.state, a.opened_at, a.updated_at,
a.resolved_at, a.acknowledged_at, a.acknowledged_by, a.assigned_to, a.assigned_at, a.value,
a.predicted_level, a.predicted_at, a.message, a.message_en, a.details
"""
_EVENT_COLUMNS = """
id, alert_id, sensor_id, rule, change, level, previous_level, value, observed_at, recorded_at,
predicted_level, predicted_at, message, message_en, details
"""

_LIST = f"""
SELECT {_ALERT_COLUMNS}
FROM alerts a JOIN sensors s ON s.id = a.sensor_id
WHERE (%(state)s::text IS NULL OR a.state = %(state)s)
  AND (%(rule)s::text IS NULL OR a.rule = %(rule)s)
  AND (%(sensor)s::text IS NULL OR a.sensor_id = %(sensor)s)
  AND (%(kecamatan)s::text IS NULL OR lower(s.kecamatan) = lower(%(kecamatan)s))
  AND (%(level)s::int IS NULL OR a.level = %(level)s)
  AND (%(since)s::timestamptz IS NULL OR a.updated_at >= %(since)s)
  AND (%(before)s::bigint IS NULL OR a.id < %(before)s)
ORDER BY a.id DESC
LIMIT %(limit)s
"""


def dict_rows(conn: psycopg.Connection, query: str, params: Any = None) -> list[dict[str, Any]]:
    """The rows of ``query`` as dictionaries, whatever the connection's row factory."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def one_row(conn: psycopg.Connection, query: str, params: Any = None) -> dict[str, Any] | None:
    found = dict_rows(conn, query, params)
    return found[0] if found else None


def _labels(row: dict[str, Any]) -> dict[str, str]:
    return {
        "level_label": levels.level_label(row["rule"], row["level"], "id"),
        "level_label_en": levels.level_label(row["rule"], row["level"], "en"),
    }


def _alert(row: dict[str, Any]) -> Alert:
    return Alert(**row, **_labels(row))


def _known(conn: psycopg.Connection, table: str, column: str, value: str, what: str) -> None:
    found = one_row(
        conn,
        f"SELECT 1 FROM {table} WHERE lower({column}) = lower(%s) LIMIT 1",
        [value],
    )
    if found is None:
        raise Problem(404, f"unknown {what} {value[:80]!r}", kind=f"unknown-{what}")


@router.get("", summary="Active and recent alerts", response_model=AlertPage)
def list_alerts(
    request: Request,
    conn: ConnDep,
    state: Annotated[
        Literal["open", "resolved", "all"],
        Query(description="`open`: active alerts; `resolved`; `all` (default)."),
    ] = "all",
    rule: Annotated[Rule | None, Query(description="Only alerts of this rule.")] = None,
    sensor: Annotated[
        str | None,
        Query(pattern=SENSOR_ID_PATTERN, description="Only this sensor's alerts.", max_length=63),
    ] = None,
    kecamatan: Annotated[
        str | None, Query(max_length=100, description="Only sensors there (any case).")
    ] = None,
    level: Annotated[int | None, Query(ge=1, le=3, description="Only this level.")] = None,
    since: Annotated[
        str | None,
        Query(
            description="Only alerts whose latest change was observed at or after this time "
            "(RFC 3339; without an offset it is WIB).",
            examples=["2026-01-10T07:00:00+07:00"],
            max_length=40,
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Alerts per page.")] = 100,
    before_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Page cursor: alerts older than this id.")
    ] = None,
) -> AlertPage:
    """Alerts newest first, filtered; follow `next` for older ones."""
    if sensor is not None:
        _known(conn, "sensors", "id", sensor, "sensor")
    if kecamatan is not None:
        _known(conn, "kecamatan", "name", kecamatan, "kecamatan")
    rows = dict_rows(
        conn,
        _LIST,
        {
            "state": None if state == "all" else state,
            "rule": rule,
            "sensor": sensor,
            "kecamatan": kecamatan,
            "level": level,
            "since": parse_time(since, "since") if since else None,
            "before": before_id,
            "limit": limit + 1,
        },
    )
    items = [_alert(r) for r in rows[:limit]]
    more = len(rows) > limit
    next_url = str(request.url.include_query_params(before_id=items[-1].id)) if more else None
    return AlertPage(items=items, next=next_url)


@router.get(
    "/events", summary="Alert changes after a given one (polling)", response_model=AlertEventPage
)
def alert_events(
    request: Request,
    conn: ConnDep,
    after_id: Annotated[
        int, Query(ge=0, le=MAX_ID, description="Changes with a larger id; 0 for all.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Changes per page.")] = 100,
) -> AlertEventPage:
    """Every change (opened, escalated, de-escalated, resolved, acknowledged) in id order.
    Changes become visible in id order, so asking again with `after_id` set to the last id
    seen never skips one (ids of rolled-back changes are never used)."""
    rows = dict_rows(
        conn,
        f"SELECT {_EVENT_COLUMNS} FROM alert_events WHERE id > %s ORDER BY id LIMIT %s",
        [after_id, limit + 1],
    )
    items = [AlertEvent(**r) for r in rows[:limit]]
    last = items[-1].id if items else after_id
    more = len(rows) > limit
    next_url = str(request.url.include_query_params(after_id=last)) if more else None
    return AlertEventPage(items=items, last_id=last, next=next_url)


# --- CAP ---------------------------------------------------------------------------------------

_CAP_EVENTS = f"""
SELECT {_EVENT_COLUMNS} FROM alert_events
WHERE alert_id = ANY(%(alerts)s) AND rule = ANY(%(rules)s) AND change = ANY(%(changes)s)
ORDER BY alert_id, id
"""

# The gauge with the thresholds in force when the change was observed (the first ones, for a
# change older than any threshold version), so a message reads the same whenever it is built.
_GAUGES = """
SELECT x.ord, s.id, s.name, s.kecamatan, s.lat, s.lon, s.river, t.waspada, t.siaga, t.awas
FROM unnest(%(sensors)s::text[], %(times)s::timestamptz[]) WITH ORDINALITY AS x (sid, at, ord)
JOIN sensors s ON s.id = x.sid
LEFT JOIN LATERAL (
    SELECT ft.waspada, ft.siaga, ft.awas FROM flood_thresholds ft
    WHERE ft.sensor_id = s.id
    ORDER BY ft.valid_from <= x.at DESC,
             CASE WHEN ft.valid_from <= x.at THEN ft.valid_from END DESC NULLS LAST,
             ft.valid_from
    LIMIT 1
) t ON true
"""


def _publisher(request: Request, settings: Settings) -> cap.Publisher:
    return cap.Publisher(
        sender=settings.api.cap_sender,
        base_url=str(request.base_url).rstrip("/"),
        sender_name=settings.api.cap_sender_name,
        area_radius_km=settings.api.cap_area_radius_km,
        expires=timedelta(hours=settings.api.cap_expires_h),
        contact=settings.api.cap_contact,
    )


def _cap_histories(
    conn: psycopg.Connection, alert_ids: list[int]
) -> dict[int, list[cap.AlertChange]]:
    rows = dict_rows(
        conn,
        _CAP_EVENTS,
        {"alerts": alert_ids, "rules": sorted(cap.FLOOD_RULES), "changes": sorted(cap.CAP_CHANGES)},
    )
    histories: dict[int, list[cap.AlertChange]] = {}
    for row in rows:
        change = cap.AlertChange.from_row(row)
        histories.setdefault(change.alert_id, []).append(change)
    return histories


def _gauges(
    conn: psycopg.Connection, changes: list[cap.AlertChange], sensors: list[str]
) -> list[cap.Gauge]:
    rows = dict_rows(conn, _GAUGES, {"sensors": sensors, "times": [c.observed_at for c in changes]})
    gauges: dict[int, cap.Gauge] = {}
    for r in rows:
        thresholds = (
            Thresholds.model_construct(waspada=r["waspada"], siaga=r["siaga"], awas=r["awas"])
            if r["waspada"] is not None
            else None
        )
        gauges[r["ord"]] = cap.Gauge(
            id=r["id"],
            name=r["name"],
            kecamatan=r["kecamatan"],
            lat=r["lat"],
            lon=r["lon"],
            river=r["river"],
            thresholds=thresholds,
        )
    return [gauges[i + 1] for i in range(len(changes))]


@router.get(
    "/cap.atom",
    summary="Atom feed of CAP 1.2 flood warnings",
    response_class=AtomResponse,
    responses=alternatives(
        {ATOM: text_schema("Atom feed (RFC 4287); each entry holds a CAP 1.2 alert inline.")}
    ),
)
def cap_feed(
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    hours: Annotated[
        int,
        Query(ge=1, le=720, description="Resolved warnings stay in the feed this many hours."),
    ] = 24,
) -> Response:
    """Open flood warnings and those resolved in the last `hours`, newest CAP message each."""
    since = datetime.now(UTC) - timedelta(hours=hours)
    alerts = dict_rows(
        conn,
        "SELECT id, sensor_id FROM alerts WHERE rule = ANY(%s) "
        "AND (state = 'open' OR resolved_at >= %s) "
        # Warnings in force first: they keep their messages inline however full the feed is.
        "ORDER BY state = 'open' DESC, updated_at DESC, id DESC LIMIT 200",
        [sorted(cap.FLOOD_RULES), since],
    )
    sensors = {r["id"]: r["sensor_id"] for r in alerts}
    histories = _cap_histories(conn, list(sensors))
    ordered = [a for a in sensors if histories.get(a)]
    latest = [histories[a][-1] for a in ordered]
    gauges = _gauges(conn, latest, [sensors[a] for a in ordered])
    entries = [
        cap.FeedEntry(change=change, gauge=gauge, earlier=histories[change.alert_id][:-1])
        for change, gauge in zip(latest, gauges, strict=True)
    ]
    body = cap.atom_feed(
        entries,
        _publisher(request, settings),
        feed_url=str(request.url.remove_query_params("hours")),
        now=datetime.now(UTC),
    )
    return AtomResponse(body)


@router.get(
    "/{alert_id}/cap.xml",
    summary="One flood warning as a CAP 1.2 message",
    response_class=CapXmlResponse,
    responses=alternatives({CAP_XML: text_schema("A CAP 1.2 alert message (XML).")}),
)
def cap_message(
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    alert_id: AlertId,
    event: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ID,
            description="The message of this change (an id from `references`); default: "
            "the newest.",
        ),
    ] = None,
) -> Response:
    """The CAP message of the alert's newest change, or of the change `event`."""
    row = one_row(conn, "SELECT rule FROM alerts WHERE id = %s", [alert_id])
    if row is None:
        raise Problem(404, f"no alert {alert_id}", kind="unknown-alert")
    if row["rule"] not in cap.FLOOD_RULES:
        raise Problem(
            404,
            f"alert {alert_id} ({row['rule']}) is not a flood warning: it has no CAP message",
            kind="not-a-flood-warning",
        )
    history = _cap_histories(conn, [alert_id]).get(alert_id, [])
    if event is not None:
        history = [c for c in history if c.id <= event]
        if not history or history[-1].id != event:
            raise Problem(
                404, f"alert {alert_id} has no CAP message for change {event}", kind="unknown-event"
            )
    if not history:
        raise Problem(404, f"alert {alert_id} has no CAP message yet", kind="unknown-event")
    change = history[-1]
    sensor = one_row(conn, "SELECT sensor_id FROM alert_events WHERE id = %s", [change.id])
    assert sensor is not None
    (gauge,) = _gauges(conn, [change], [sensor["sensor_id"]])
    element = cap.cap_alert(change, gauge, _publisher(request, settings), history[:-1])
    return CapXmlResponse(cap.to_xml(element))


# --- one alert ---------------------------------------------------------------------------------


def find_alert(conn: psycopg.Connection, alert_id: int) -> Alert:
    """One alert, or a 404 problem."""
    row = one_row(
        conn,
        f"SELECT {_ALERT_COLUMNS} FROM alerts a JOIN sensors s ON s.id = a.sensor_id "
        "WHERE a.id = %s",
        [alert_id],
    )
    if row is None:
        raise Problem(404, f"no alert {alert_id}", kind="unknown-alert")
    return _alert(row)


def detail(conn: psycopg.Connection, alert_id: int) -> AlertDetail:
    """One alert with every change it went through, or a 404 problem."""
    alert = find_alert(conn, alert_id)
    events = dict_rows(
        conn,
        f"SELECT {_EVENT_COLUMNS} FROM alert_events WHERE alert_id = %s ORDER BY id",
        [alert_id],
    )
    return AlertDetail(**alert.model_dump(), events=[AlertEvent(**e) for e in events])


@router.get("/{alert_id}", summary="One alert with its changes", response_model=AlertDetail)
def get_alert(conn: ConnDep, alert_id: AlertId) -> AlertDetail:
    """The alert and every change it went through."""
    return detail(conn, alert_id)
