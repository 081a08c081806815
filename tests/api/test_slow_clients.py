"""Slow clients over real sockets: twenty CSV downloads read at one byte a second hold only the
exports' own connections (the rest are refused with 503 at once) while health, alerts and an
operator's acknowledgement keep answering; a stalled download is cut off and frees its
database connection. (The live stream's cap on clients: test_stream.py.)"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from pantau.tools.services import wait_until
from tests.fixtures.api import api_settings, serve
from tests.fixtures.operators import AddAlert

DAYS = 5
STEP_S = 2.5
# Recent days, newer than TimescaleDB's compression and retention policies act on: a policy job
# that drops or compresses the readings mid-test would end an export early.
START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
    days=DAYS + 1
)
STEP = timedelta(seconds=STEP_S)
ROWS = round(DAYS * 86_400 / STEP_S)
EXPORT = (
    "/readings?sensor=fg-welang-1&metric=water_level&format=csv"
    f"&start={START.isoformat().replace('+00:00', 'Z')}"
    f"&end={(START + timedelta(days=DAYS)).isoformat().replace('+00:00', 'Z')}"
)


def _fill(url: str) -> None:
    """A reading every 2.5 s for five days: an export of some 12 MB, far beyond what the socket
    buffers between the API and a client that does not read hold (a few MB on loopback)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO readings (time, sensor_id, metric, value) "
            "SELECT t, 'fg-welang-1', 'water_level', 1.0 + random() "
            "FROM generate_series(%s::timestamptz, %s::timestamptz - %s, %s) t",
            [START, START + timedelta(days=DAYS), STEP, STEP],
        )


def _copies(url: str) -> int:
    """Exports holding a database connection now: running, or done in the database but not
    yet taken by their client (in a transaction still)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%%' "
            "AND state <> 'idle' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


class SlowReaders:
    """Clients that ask for ``path`` and then read one byte a second (one thread for all of
    them, tiny receive buffers: cheap for the test, slow for the server)."""

    def __init__(self, base_url: str, path: str, count: int) -> None:
        parts = urlsplit(base_url)
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((parts.hostname, parts.port))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            self.sockets.append(sock)
        self.read_slowly = 0  # by all of them (one for the single-reader test)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def statuses(self) -> list[int]:
        """Each answer's status, read without taking anything from the socket."""
        found = []
        for sock in self.sockets:
            sock.settimeout(10)
            head = b""
            while len(head) < 12:
                head = sock.recv(12, socket.MSG_PEEK)
            found.append(int(head[9:12]))
        return found

    def start(self) -> None:
        self._thread.start()

    def _read(self) -> None:
        for sock in self.sockets:
            sock.setblocking(False)
        while not self._stop.wait(1.0):
            for sock in self.sockets:
                with contextlib.suppress(BlockingIOError, OSError):
                    self.read_slowly += len(sock.recv(1))

    def drain(self) -> list[int]:
        """Stop reading slowly; read what each socket still gets, fast, to its end: the
        bytes each got in all."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        received = []
        for sock in self.sockets:
            sock.setblocking(True)
            sock.settimeout(10)
            total = self.read_slowly
            while chunk := sock.recv(65536):
                total += len(chunk)
            received.append(total)
        return received

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def slow_readers() -> Iterator[list[SlowReaders]]:
    made: list[SlowReaders] = []
    yield made
    for readers in made:
        readers.close()


def _timed(call: object) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = call()  # type: ignore[operator]
    return time.perf_counter() - started, response


def test_twenty_slow_csv_readers_starve_nobody(
    city_db: str, add_alert: AddAlert, operator_key: str, slow_readers: list[SlowReaders]
) -> None:
    _fill(city_db)
    alerts = [add_alert(sensor=s) for s in ("fg-welang-2", "fg-welang-3")]
    settings = api_settings(
        city_db, pool_max_size=4, export_connections=2, export_send_timeout_s=60
    )
    with serve(settings) as base, httpx.Client(base_url=base, timeout=5) as client:
        readers = SlowReaders(base, EXPORT, 20)
        slow_readers.append(readers)
        statuses = readers.statuses()
        readers.start()
        assert sorted(statuses) == [200] * 2 + [503] * 18, statuses
        # Both exports are stalled in the database, on connections of their own.
        wait_until(lambda: _copies(city_db) == 2, timeout_s=10, what="two stalled exports")
        refused = client.get(EXPORT)
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        assert "exports" in refused.json()["detail"]

        worst = 0.0
        for round_ in range(10):
            for call in (
                lambda: client.get("/readyz"),
                lambda: client.get("/alerts?state=open"),
                lambda r=round_: client.post(
                    f"/alerts/{alerts[r % 2]}/ack", headers={"X-API-Key": operator_key}
                ),
            ):
                elapsed, response = _timed(call)
                assert response.status_code == 200, response.text
                worst = max(worst, elapsed)
        assert worst < 1.0, worst
        # The slow downloads were still there all along.
        assert _copies(city_db) == 2


def test_a_stalled_export_is_cut_off_and_frees_its_connection(
    city_db: str, slow_readers: list[SlowReaders]
) -> None:
    _fill(city_db)
    settings = api_settings(city_db, export_connections=1, export_send_timeout_s=1)
    with serve(settings) as base, httpx.Client(base_url=base, timeout=30) as client:
        readers = SlowReaders(base, EXPORT, 1)
        slow_readers.append(readers)
        assert readers.statuses() == [200]
        readers.start()
        # Stalled, then cut off within the send timeout: the COPY is gone, the slot is free.
        wait_until(lambda: _copies(city_db) == 0, timeout_s=15, what="the stalled export ended")
        export = client.get(EXPORT)
        assert export.status_code == 200
        assert export.text.count("\n") == ROWS + 1
        # The stalled client got a part, then the end of the connection: a cut-off file.
        (received,) = readers.drain()
        assert received < len(export.content) / 2, (received, len(export.content))
