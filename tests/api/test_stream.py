"""The live stream over real HTTP: committed readings and alert changes arrive, filters, resume
with Last-Event-ID (however much was missed), a client that never reads holds up nobody, and
clients beyond the cap are refused."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from pantau.db import store
from pantau.payload import Reading
from pantau.tools.services import wait_until
from tests.fixtures.api import api_settings, serve
from tests.fixtures.operators import STREAM_SETTINGS, AddAlert, add_event


@dataclass
class Message:
    event: str
    id: str | None
    data: dict[str, object]


@dataclass
class Listener:
    """Reads the stream in a thread; `ready` is set once the server says it is subscribed."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    ready: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Listener:
        threading.Thread(target=self._run, daemon=True).start()
        assert self.ready.wait(10), f"stream never became ready (status {self.status})"
        return self

    def _run(self) -> None:
        fields: dict[str, str] = {}
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=30)) as client,
                client.stream("GET", self.url, headers=self.headers) as response,
            ):
                self.status = response.status_code
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(": ready"):
                        self.ready.set()
                    elif line == "" and "data" in fields:
                        self.messages.put(
                            Message(
                                fields.get("event", ""),
                                fields.get("id"),
                                json.loads(fields["data"]),
                            )
                        )
                        fields = {}
                    elif ":" in line and not line.startswith(":"):
                        name, value = line.split(":", 1)
                        fields[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass
        finally:
            self.ready.set()

    def next(self, timeout: float = 2.0) -> Message:
        return self.messages.get(timeout=timeout)

    def until(self, predicate: object, timeout: float = 2.0) -> Message:
        """The first message (skipping others) matching ``predicate`` within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no matching event in time")
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                raise AssertionError("no matching event in time") from None
            if predicate(message):  # type: ignore[operator]
                return message

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
def listen(stream_api_url: str) -> Iterator[object]:
    started: list[Listener] = []

    def start(params: str = "", headers: dict[str, str] | None = None) -> Listener:
        listener = Listener(f"{stream_api_url}/stream{params}", headers or {}).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def _store(conn: psycopg.Connection, *readings: Reading) -> None:
    store.prepare(conn)
    store.store(conn, readings)


def _water(value: float, sensor: str = "fg-welang-1", at: datetime | None = None) -> Reading:
    return Reading.at(at or datetime.now(UTC), sensor, "water_level", value)


def test_stored_reading_appears_within_two_seconds(listen, conn: psycopg.Connection) -> None:  # type: ignore[no-untyped-def]
    listener = listen()
    stored_at = time.monotonic()
    _store(conn, _water(1.234))
    message = listener.until(lambda m: m.event == "reading", timeout=2.0)
    assert time.monotonic() - stored_at < 2.0
    assert message.data["sensor_id"] == "fg-welang-1"
    assert message.data["value"] == 1.234
    assert message.data["unit"] == "m"
    assert message.id is not None


def test_filters_by_family_and_sensor(listen, conn: psycopg.Connection) -> None:  # type: ignore[no-untyped-def]
    gauges = listen("?family=flood_gauge")
    one = listen("?sensor=fg-welang-3")
    now = datetime.now(UTC)
    _store(
        conn,
        Reading.at(now, "tc-bangil-1", "vehicle_count", 12),
        _water(1.0, "fg-welang-1", now),
        _water(2.0, "fg-welang-3", now),
    )
    seen = {gauges.next().data["sensor_id"], gauges.next().data["sensor_id"]}
    assert seen == {"fg-welang-1", "fg-welang-3"}
    assert one.next().data["sensor_id"] == "fg-welang-3"
    with pytest.raises(queue.Empty):
        one.next(timeout=0.5)
    with pytest.raises(queue.Empty):
        gauges.next(timeout=0.5)


def test_bad_stream_requests_are_problems(stream_api_url: str) -> None:
    with httpx.Client(base_url=stream_api_url, timeout=5) as client:
        assert client.get("/stream", params={"family": "submarine"}).status_code == 422
        assert client.get("/stream", params={"sensor": "no-such-sensor"}).status_code == 404
        bad = client.get("/stream", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")


def test_alert_changes_and_resume_with_last_event_id(  # type: ignore[no-untyped-def]
    listen, conn: psycopg.Connection, add_alert: AddAlert
) -> None:
    first = listen()
    _store(conn, _water(1.1))
    seen = first.until(lambda m: m.event == "reading")
    alert = add_alert(levels=(1,))
    opened = first.until(lambda m: m.event == "alert")
    assert opened.data["alert_id"] == alert
    assert opened.data["change"] == "opened"
    assert opened.data["kecamatan"] == "Pohjentrek"
    last_id = opened.id
    assert last_id is not None and last_id != seen.id
    first.stop()

    # Missed while away: a new value of another gauge and an escalation.
    _store(conn, _water(2.6, "fg-welang-3"))
    escalated = add_event(
        conn, alert, "fg-welang-2", "flood_level", "escalated", 2, datetime.now(UTC)
    )
    resumed = listen(headers={"Last-Event-ID": last_id})
    got = [resumed.next(), resumed.next()]
    while True:  # the overlap may resend a value sent before; never an alert change
        try:
            got.append(resumed.next(timeout=0.5))
        except queue.Empty:
            break
    alerts = [m.data["id"] for m in got if m.event == "alert"]
    assert alerts == [escalated]
    readings = {(m.data["sensor_id"], m.data["value"]) for m in got if m.event == "reading"}
    assert ("fg-welang-3", 2.6) in readings
    # And it goes on live from there.
    _store(conn, _water(0.9, "fg-welang-2"))
    assert resumed.until(lambda m: m.event == "reading" and m.data["value"] == 0.9)


def _raw_stream(base_url: str) -> socket.socket:
    """A client that asks for the stream and then never reads (a tiny receive buffer)."""
    parts = urlsplit(base_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
    return sock


def test_a_client_that_never_reads_slows_nobody(  # type: ignore[no-untyped-def]
    listen, stream_api_url: str, conn: psycopg.Connection, add_alert: AddAlert
) -> None:
    slow = _raw_stream(stream_api_url)
    fast = listen()
    alert = add_alert(levels=(1,))
    fast.until(lambda m: m.event == "alert")
    # Bursts smaller than a client's queue (20), large enough to fill the slow client's socket.
    padding = "x" * 24_000
    start = datetime.now(UTC)
    lateness = []
    for burst in range(30):
        inserted = []
        for i in range(10):
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO alert_events (alert_id, sensor_id, rule, change, level, "
                    "observed_at, message, message_en) VALUES (%s, 'fg-welang-2', 'flood_level',"
                    " 'escalated', 2, %s, %s, 'padding') RETURNING id",
                    [alert, start + timedelta(seconds=burst * 10 + i), padding],
                ).fetchone()
                assert row is not None
                inserted.append(row[0])
        at = time.monotonic()
        for event_id in inserted:
            message = fast.until(lambda m, e=event_id: m.event == "alert" and m.data["id"] == e)
            assert message is not None
        lateness.append(time.monotonic() - at)
    assert max(lateness) < 2.0, lateness
    # The slow client was cut off: what it has is a fraction, then the end of the stream.
    slow.settimeout(10)
    received = 0
    while chunk := slow.recv(65536):
        received += len(chunk)
    slow.close()
    assert received < 300 * len(padding)
    # The stream goes on for the others.
    _store(conn, _water(1.7))
    assert fast.until(lambda m: m.event == "reading" and m.data["value"] == 1.7)


def test_resume_replays_every_change_however_many(  # type: ignore[no-untyped-def]
    listen, conn: psycopg.Connection, add_alert: AddAlert
) -> None:
    first = listen()
    alert = add_alert(levels=(1,))
    opened = first.until(lambda m: m.event == "alert")
    first.stop()
    # Missed while away: more changes than a resuming client used to be sent (10,000).
    count = 12_345
    with conn.transaction():
        rows = conn.execute(
            "INSERT INTO alert_events (alert_id, sensor_id, rule, change, level, observed_at, "
            "message, message_en) SELECT %s, 'fg-welang-2', 'flood_level', 'escalated', 2, "
            "%s::timestamptz + n * interval '1 s', 'm', 'm' FROM generate_series(1, %s) n "
            "RETURNING id",
            [alert, datetime.now(UTC), count],
        ).fetchall()
    missed = sorted(row[0] for row in rows)
    resumed = listen(headers={"Last-Event-ID": opened.id})
    got: list[int] = []
    while len(got) < count:
        message = resumed.until(lambda m: m.event == "alert", timeout=10)
        got.append(int(message.data["id"]))  # type: ignore[call-overload]
    assert got == missed
    # And it goes on live from there.
    live = add_event(conn, alert, "fg-welang-2", "flood_level", "resolved", 2, datetime.now(UTC))
    assert resumed.until(lambda m: m.event == "alert").data["id"] == live


def test_clients_beyond_the_cap_are_refused_with_503(city_db: str) -> None:
    settings = api_settings(city_db, stream_clients_max=2, **STREAM_SETTINGS)
    with serve(settings) as base:
        held = [Listener(f"{base}/stream").start() for _ in range(2)]
        assert [listener.status for listener in held] == [200, 200]
        with httpx.Client(base_url=base, timeout=10) as client:
            refused = client.get("/stream")
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert int(refused.headers["retry-after"]) >= 1
            assert "2 clients" in refused.json()["detail"]
            # A client that leaves gives its place back.
            held[0].stop()

            def admitted() -> bool:
                with client.stream("GET", "/stream") as response:
                    return response.status_code == 200

            wait_until(admitted, timeout_s=10, what="a place for a new client")
        held[1].stop()
