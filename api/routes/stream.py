"""Live stream of new readings and alert changes (Server-Sent Events).

One poller per API process reads what was committed and fans it out to the connected clients;
clients never query the database themselves, except once to catch up when they resume.

* ``reading`` events come from ``latest_readings``: every poll reads the rows whose
  ``updated_at`` is newer than the newest seen, minus ``stream_overlap_ms``. ``updated_at`` is
  the writing transaction's start time, so a batch that commits after a later-started one is
  still caught by the overlap; values already sent (same sensor, metric and observation time)
  are dropped. This needs no change to the write path (a trigger with LISTEN/NOTIFY would add
  work to every ingest batch) and costs one small query per poll whatever the number of
  clients. The stream carries each metric's newest value; several readings of one metric
  committed between two polls arrive as the newest of them (``/readings`` has them all).
* ``alert`` events are new ``alert_events`` rows by id: ids become visible in id order
  (:mod:`pantau.db.events`), so each poll reads on from the newest id seen, as
  ``/alerts/events?after_id=`` does, and skips nothing.

Event ids are ``ALERT_ID.READING_US``: the newest alert change and the newest latest-values
time (microseconds since the Unix epoch) the client has been sent. A client that reconnects
with ``Last-Event-ID`` first gets every alert change after it, however many (read a page at a
time), and every latest value changed since (less the overlap; a value may come twice), then
the live events.

Each client has a bounded queue. A client that falls ``stream_client_queue_max`` events behind
is disconnected once its queue is drained (it resumes losslessly with ``Last-Event-ID``), and
one that does not accept a send within ``stream_send_timeout_s`` is cut off: a slow client
never holds up the others nor makes the process hold more than its queue for it. At most
``stream_clients_max`` clients are served at once; one more is answered 503 with
``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio.to_thread
import orjson
from fastapi import APIRouter, Header, Query, Request
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from api.deps import RegistryDep
from api.errors import Problem
from api.pools import connection
from api.schemas import SSE, alternatives, text_schema
from pantau.catalogue import Family, find_metric
from pantau.city import SENSOR_ID_PATTERN
from pantau.payload import from_micros, to_micros
from pantau.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["stream"])

EVENT_ID_PATTERN = r"^\d{1,19}\.\d{1,20}$"
# Alert changes read at once: by a poll, and by a resuming client catching up page by page.
ALERTS_PAGE = 1_000
# When a client refused for the cap on clients may try again.
STREAM_RETRY_AFTER_S = 10

_READINGS = """
SELECT l.sensor_id, s.family, l.metric, l.time, l.value, l.updated_at
FROM latest_readings l JOIN sensors s ON s.id = l.sensor_id
WHERE l.updated_at > %s
ORDER BY l.updated_at, l.sensor_id, l.metric
"""
_ALERTS = """
SELECT e.id, e.alert_id, e.sensor_id, s.family, s.kecamatan, e.rule, e.change, e.level,
       e.previous_level, e.value, e.observed_at, e.recorded_at, e.predicted_level,
       e.predicted_at, e.message, e.message_en, e.details
FROM alert_events e JOIN sensors s ON s.id = e.sensor_id
WHERE e.id > %s
ORDER BY e.id
LIMIT %s
"""
_POSITION = """
SELECT (SELECT coalesce(max(id), 0) FROM alert_events) AS alert_id,
       (SELECT max(updated_at) FROM latest_readings) AS updated_at
"""


@dataclass(frozen=True, slots=True)
class Event:
    """One event for the clients: its kind, what filters see, and its payload."""

    kind: Literal["reading", "alert"]
    family: str
    sensor_id: str
    data: dict[str, Any]
    alert_id: int = 0  # alert events: the alert_events id
    updated_us: int = 0  # reading events: latest_readings.updated_at
    key: tuple[str, str, int] | None = None  # reading events: sensor, metric, time


def _reading(row: dict[str, Any]) -> Event:
    metric = find_metric(Family(row["family"]), row["metric"])
    return Event(
        kind="reading",
        family=row["family"],
        sensor_id=row["sensor_id"],
        data={
            "sensor_id": row["sensor_id"],
            "family": row["family"],
            "metric": row["metric"],
            "unit": metric.unit if metric else None,
            "time": row["time"],
            "value": row["value"],
        },
        updated_us=to_micros(row["updated_at"]),
        key=(row["sensor_id"], row["metric"], to_micros(row["time"])),
    )


def _alert(row: dict[str, Any]) -> Event:
    return Event(
        kind="alert", family=row["family"], sensor_id=row["sensor_id"], data=row, alert_id=row["id"]
    )


@dataclass(eq=False)
class Client:
    """One connected client: its filters, its bounded queue, and whether it fell behind."""

    family: str | None
    sensor: str | None
    queue: asyncio.Queue[Event]
    overflowed: bool = False
    # While it catches up (a resumed client), it reads what it missed from the database.
    catching_up: bool = False
    # The newest alert change it was sent: older ones are not queued for it again.
    sent_alert_id: int = 0

    def wants(self, event: Event) -> bool:
        return (self.family is None or event.family == self.family) and (
            self.sensor is None or event.sensor_id == self.sensor
        )


@dataclass(frozen=True, slots=True)
class Position:
    """Where a client is: newest alert change id and latest-values time it was sent."""

    alert_id: int
    updated_us: int

    @property
    def event_id(self) -> str:
        return f"{self.alert_id}.{self.updated_us}"

    @classmethod
    def parse(cls, text: str) -> Position:
        alert, updated = text.split(".")
        return cls(int(alert), int(updated))


@dataclass
class Broadcaster:
    """The process's one poller and its clients."""

    pool: ConnectionPool
    settings: Settings
    clients: set[Client] = field(default_factory=set)
    position: Position | None = None
    # Clients admitted (from the route's answer to the end of their stream), at most
    # `stream_clients_max`.
    admitted: int = 0
    _task: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Readings sent within the overlap window (key -> updated_us), not to be sent again.
    _recent: dict[tuple[str, str, int], int] = field(default_factory=dict)

    @property
    def _overlap_us(self) -> int:
        return self.settings.api.stream_overlap_ms * 1000

    def query(self, query: str, params: list[Any]) -> list[dict[str, Any]]:
        with (
            connection(self.pool, self.settings.api.pool_timeout_s) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            return cur.execute(query, params).fetchall()

    def admit(self) -> bool:
        """Count one more client in, unless the process serves as many as it may."""
        if self.admitted >= self.settings.api.stream_clients_max:
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        """An admitted client's stream ended."""
        self.admitted -= 1

    async def subscribe(self, client: Client) -> Position:
        """Add a client; returns the live position it joins at."""
        async with self._lock:
            if self.position is None:
                (row,) = await anyio.to_thread.run_sync(self.query, _POSITION, [])
                updated = row["updated_at"]
                self.position = Position(row["alert_id"], to_micros(updated) if updated else 0)
            self.clients.add(client)
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="stream-poller")
            return self.position

    def unsubscribe(self, client: Client) -> None:
        self.clients.discard(client)

    async def _run(self) -> None:
        interval = self.settings.api.stream_poll_ms / 1000
        while self.clients:
            try:
                events = await anyio.to_thread.run_sync(self._poll)
            except Exception as error:  # the database may be away; the clients wait
                log.warning("live stream: poll failed: %s", error)
                await asyncio.sleep(max(interval, 1.0))
                continue
            for event in events:
                self._publish(event)
            await asyncio.sleep(interval)
        # Nobody listens: the next client starts again from the database's current position.
        self.position = None
        self._recent.clear()

    def _publish(self, event: Event) -> None:
        for client in list(self.clients):
            if client.catching_up or not client.wants(event):
                continue
            if event.kind == "alert" and event.alert_id <= client.sent_alert_id:
                continue  # sent while it caught up
            try:
                client.queue.put_nowait(event)
            except asyncio.QueueFull:
                client.overflowed = True
                self.clients.discard(client)
                log.info("live stream: a client fell behind and is disconnected")

    def _poll(self) -> list[Event]:
        """One poll (in a worker thread): new latest values and alert changes, in order."""
        position = self.position
        assert position is not None
        since = from_micros(max(0, position.updated_us - self._overlap_us))
        # Both read before any state changes: a failed poll is simply done again.
        readings = self.query(_READINGS, [since])
        alerts = self.query(_ALERTS, [position.alert_id, ALERTS_PAGE])
        events: list[Event] = []
        newest = position.updated_us
        for row in readings:
            event = _reading(row)
            assert event.key is not None
            newest = max(newest, event.updated_us)
            if event.key in self._recent:
                continue
            self._recent[event.key] = event.updated_us
            events.append(event)
        horizon = newest - self._overlap_us
        self._recent = {k: v for k, v in self._recent.items() if v >= horizon}
        events.extend(_alert(row) for row in alerts)
        top = alerts[-1]["id"] if alerts else position.alert_id
        self.position = Position(top, newest)
        return events


def _broadcaster(request: Request) -> Broadcaster:
    state = request.app.state
    found: Broadcaster | None = getattr(state, "stream_broadcaster", None)
    if found is None:
        found = Broadcaster(pool=state.pool, settings=state.settings)
        state.stream_broadcaster = found
    return found


async def _catch_up(broadcaster: Broadcaster, since: Position) -> AsyncIterator[Event]:
    """What a resuming client missed: every alert change after it (a page at a time, each
    sent before the next is read), then the latest values changed since."""
    after = since.alert_id
    while True:
        page = await anyio.to_thread.run_sync(broadcaster.query, _ALERTS, [after, ALERTS_PAGE])
        for row in page:
            yield _alert(row)
        if len(page) < ALERTS_PAGE:
            break
        after = page[-1]["id"]
    overlap_us = broadcaster.settings.api.stream_overlap_ms * 1000
    changed = from_micros(max(0, since.updated_us - overlap_us))
    for row in await anyio.to_thread.run_sync(broadcaster.query, _READINGS, [changed]):
        yield _reading(row)


def _sse(event: Event, position: Position) -> ServerSentEvent:
    return ServerSentEvent(
        data=orjson.dumps(event.data).decode(), event=event.kind, id=position.event_id
    )


def _advance(position: Position, event: Event) -> Position:
    return Position(
        max(position.alert_id, event.alert_id), max(position.updated_us, event.updated_us)
    )


async def _events(
    broadcaster: Broadcaster, client: Client, resume: Position | None
) -> AsyncIterator[ServerSentEvent]:
    """What one client is sent: the events since ``resume`` (when it resumes), then live ones."""
    # Joined before catching up, so nothing committed meanwhile is missed; what both
    # deliver is sent once.
    live = await broadcaster.subscribe(client)
    position = resume or live
    # Tells the client it is subscribed (and pushes the headers through any proxy).
    yield ServerSentEvent(comment="ready")
    sent_keys: set[tuple[str, str, int]] = set()
    try:
        # However long catching up takes, the live events are not queued for the client
        # meanwhile (its queue would overflow): once it has caught up, they are, and what
        # came in between is read once more.
        for caught_up in (False, True) if resume is not None else ():
            client.catching_up = not caught_up
            async for event in _catch_up(broadcaster, position):
                if not client.wants(event):
                    continue
                if event.key is not None:
                    if event.key in sent_keys:
                        continue
                    sent_keys.add(event.key)
                if event.kind == "alert" and event.alert_id <= client.sent_alert_id:
                    continue
                client.sent_alert_id = max(client.sent_alert_id, event.alert_id)
                position = _advance(position, event)
                yield _sse(event, position)
        while not (client.overflowed and client.queue.empty()):
            event = await client.queue.get()
            if event.kind == "alert" and event.alert_id <= client.sent_alert_id:
                continue
            if event.key is not None and event.key in sent_keys:
                continue
            position = _advance(position, event)
            yield _sse(event, position)
    finally:
        broadcaster.unsubscribe(client)


@router.get(
    "/stream",
    summary="Live readings and alert changes (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses=alternatives(
        {
            SSE: text_schema(
                "Server-Sent Events. `event: reading` with data {sensor_id, family, metric, "
                "unit, time, value}; `event: alert` with data an alert change (as in "
                "/alerts/events, plus family and kecamatan). Each `id` can be sent back as "
                "`Last-Event-ID` to resume. A `: ready` comment says the subscription is in place; "
                "comment lines keep the connection alive.",
                example='event: reading\nid: 12.1767225600000000\ndata: {"sensor_id":'
                '"fg-welang-1","family":"flood_gauge","metric":"water_level","unit":"m",'
                '"time":"2026-01-01T00:00:00+00:00","value":1.42}\n\n',
            )
        },
        description="An endless event stream",
    ),
)
async def stream(
    request: Request,
    registry: RegistryDep,
    family: Annotated[Family | None, Query(description="Only this family's sensors.")] = None,
    sensor: Annotated[
        str | None,
        Query(pattern=SENSOR_ID_PATTERN, max_length=63, description="Only this sensor."),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=EVENT_ID_PATTERN,
            description="Resume after this event id (browsers send it when they reconnect).",
        ),
    ] = None,
) -> EventSourceResponse:
    """New readings and alert changes as they are committed; resume with `Last-Event-ID`."""
    if sensor is not None:
        registry.sensor(sensor)  # 404 for a sensor that does not exist
    resume = Position.parse(last_event_id) if last_event_id else None
    broadcaster = _broadcaster(request)
    settings = broadcaster.settings.api
    if not broadcaster.admit():
        raise Problem(
            503,
            f"this server streams to {settings.stream_clients_max} clients already; retry in "
            f"{STREAM_RETRY_AFTER_S} s",
            kind="too-many-streams",
            headers={"Retry-After": str(STREAM_RETRY_AFTER_S)},
        )
    client = Client(
        family=family.value if family else None,
        sensor=sensor,
        queue=asyncio.Queue(maxsize=settings.stream_client_queue_max),
        catching_up=resume is not None,
    )

    return _AdmittedStream(
        _events(broadcaster, client, resume),
        release=broadcaster.release,
        ping=settings.stream_keepalive_s,
        send_timeout=settings.stream_send_timeout_s,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class _AdmittedStream(EventSourceResponse):
    """The stream of an admitted client, which gives its place back however the stream ends
    (even one whose client left before the first event)."""

    def __init__(self, *args: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
