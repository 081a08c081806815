"""Dependencies shared by the routes: settings, database connections, the cached registry.

Pooled connections go back to the pool with their default row factory (tuples), whatever a
route set: a route that wants dictionaries asks for them per cursor, or through ``ConnDep``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from api.errors import Problem
from pantau.db.registry import RegisteredSensor, registered_sensors
from pantau.settings import Settings

RETRY_AFTER = {"Retry-After": "1"}


def _session_sql(settings: Settings) -> str:
    # Times leave the database in UTC; a slow JSON query is cut instead of holding a
    # connection that 50 other clients wait for.
    timeout_ms = int(settings.api.statement_timeout_ms)
    return f"SET TimeZone = 'UTC'; SET statement_timeout = {timeout_ms}"


def _pool_options(settings: Settings, max_size: int | None = None) -> dict[str, Any]:
    size = settings.api.pool_max_size if max_size is None else max_size
    return {
        "conninfo": settings.require_database_url(),
        "min_size": min(2, size),
        "max_size": size,
        "kwargs": {"autocommit": True},
        "timeout": settings.api.pool_timeout_s,
        "open": False,
    }


def make_pool(
    settings: Settings, *, name: str = "api", max_size: int | None = None
) -> ConnectionPool:
    """The pool of the routes that run in worker threads (opened by the caller); ``name`` and
    ``max_size`` for another pool of the same kind (the exports')."""
    session = _session_sql(settings)

    def configure(conn: psycopg.Connection) -> None:
        conn.execute(session)

    def reset(conn: psycopg.Connection) -> None:
        conn.row_factory = tuple_row

    return ConnectionPool(
        configure=configure, reset=reset, name=name, **_pool_options(settings, max_size)
    )


def make_async_pool(settings: Settings) -> AsyncConnectionPool:
    """The pool of the routes that query from the event loop (opened by the caller).

    A query from a worker thread costs two hand-overs of the interpreter lock, and while the
    event loop is busy answering from the cache each one waits: with fifty clients that wait,
    not the query, made most of a history page's latency. For the same reason a query here
    takes one round trip: the session is set once per connection.

    Its queries are prepared with one generic plan: the rollups are views over partitioned
    tables, and planning such a query costs several times running it, while a generic plan
    prunes the partitions when it runs and is planned once per connection and shape of query.
    """
    session = _session_sql(settings) + "; SET plan_cache_mode = force_generic_plan"

    async def configure(conn: psycopg.AsyncConnection) -> None:
        await conn.execute(session)

    async def reset(conn: psycopg.AsyncConnection) -> None:
        conn.row_factory = tuple_row

    return AsyncConnectionPool(
        configure=configure, reset=reset, name="api-async", **_pool_options(settings)
    )


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


def unavailable(detail: str = "the database is unavailable; retry shortly") -> Problem:
    return Problem(503, detail, kind="database-unavailable", headers=RETRY_AFTER)


@contextmanager
def _checkout() -> Iterator[None]:
    """A busy pool or a database outage while taking a connection becomes a 503 problem."""
    try:
        yield
    except PoolTimeout:
        raise unavailable("all database connections are busy; retry shortly") from None
    except psycopg.OperationalError:
        raise unavailable() from None


@contextmanager
def connection(pool: ConnectionPool, timeout_s: float) -> Iterator[psycopg.Connection]:
    """A pooled connection; a busy pool or a database outage becomes a 503 problem."""
    with _checkout():
        conn = pool.getconn(timeout=timeout_s)
    try:
        yield conn
    finally:
        pool.putconn(conn)


@asynccontextmanager
async def async_connection(
    pool: AsyncConnectionPool, timeout_s: float
) -> AsyncIterator[psycopg.AsyncConnection]:
    """:func:`connection` for the event loop."""
    with _checkout():
        conn = await pool.getconn(timeout=timeout_s)
    try:
        yield conn
    finally:
        await pool.putconn(conn)


class Exports:
    """The CSV exports' own connections, ``size`` at most at once: an export holds its
    connection for as long as its client takes to download it, so exports never take the
    connections of the other routes, and one more than ``size`` is refused at once (503) rather
    than waiting for a slow download to end."""

    RETRY_AFTER_S = 10

    def __init__(self, pool: ConnectionPool, size: int) -> None:
        self.pool = pool
        self.size = size
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self, timeout_s: float) -> Iterator[psycopg.Connection]:
        """A connection of the exports' pool, or a 503 problem while all are in use."""
        if not self._slots.acquire(blocking=False):
            raise Problem(
                503,
                f"{self.size} exports are being downloaded from this server already; retry in "
                f"{self.RETRY_AFTER_S} s",
                kind="too-many-exports",
                headers={"Retry-After": str(self.RETRY_AFTER_S)},
            )
        try:
            with connection(self.pool, timeout_s) as conn:
                yield conn
        finally:
            self._slots.release()


def make_exports(settings: Settings) -> Exports:
    """The exports' pool and limit (the pool opened by the caller)."""
    size = settings.api.export_connections
    return Exports(make_pool(settings, name="api-export", max_size=size), size)


def get_conn(request: Request) -> Iterator[psycopg.Connection]:
    """A pooled connection with dictionary rows for one request."""
    settings: Settings = request.app.state.settings
    with connection(request.app.state.pool, settings.api.pool_timeout_s) as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        yield conn


def get_plain_conn(request: Request) -> Iterator[psycopg.Connection]:
    """A pooled connection with tuple rows for one request."""
    settings: Settings = request.app.state.settings
    with connection(request.app.state.pool, settings.api.pool_timeout_s) as conn:
        yield conn


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PoolDep = Annotated[ConnectionPool, Depends(get_pool)]
ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]
PlainConnDep = Annotated[psycopg.Connection, Depends(get_plain_conn)]


# One sensor of the registry, as the routes need it (its current thresholds included).
SensorInfo = RegisteredSensor


@dataclass(frozen=True, slots=True)
class KecamatanInfo:
    name: str
    lat: float
    lon: float
    flood_prone: bool
    landslide_prone: bool


@dataclass(frozen=True)
class Registry:
    """The sensor registry and the kecamatan, read at once."""

    sensors: dict[str, SensorInfo]
    kecamatan: dict[str, KecamatanInfo]
    # Lower-case name -> name, for case-insensitive filters.
    kecamatan_names: dict[str, str] = field(default_factory=dict)

    def kecamatan_named(self, name: str) -> str:
        """The kecamatan called ``name`` (any case), or a 404 problem listing the known ones."""
        found = self.kecamatan_names.get(name.strip().lower())
        if found is None:
            known = ", ".join(sorted(self.kecamatan))
            raise Problem(
                404, f"unknown kecamatan {name[:60]!r}; known: {known}", kind="unknown-kecamatan"
            )
        return found

    def sensor(self, sensor_id: str) -> SensorInfo:
        found = self.sensors.get(sensor_id)
        if found is None:
            raise Problem(404, f"no sensor {sensor_id[:80]!r}", kind="unknown-sensor")
        return found


def load_registry(conn: psycopg.Connection) -> Registry:
    """Read the registry (sensors with current thresholds, kecamatan)."""
    sensors = registered_sensors(conn)
    with conn.cursor(row_factory=tuple_row) as cur:
        kecamatan = {
            name: KecamatanInfo(name, lat, lon, flood, landslide)
            for name, lat, lon, flood, landslide in cur.execute(
                "SELECT name, lat, lon, flood_prone, landslide_prone FROM kecamatan ORDER BY name"
            )
        }
    return Registry(sensors, kecamatan, {k.lower(): k for k in kecamatan})


def _weight(value: Any) -> int:
    """Bytes of the serialised answer in ``value`` (a :class:`api.responses.Body` or
    :class:`api.responses.Answer`); other values are small."""
    nbytes: int = getattr(value, "nbytes", 0)
    return nbytes


class TtlCache:
    """Values kept for ``ttl_s`` seconds (0: never kept); one loader runs per key at a time.

    Bounded in entries and in the bytes of the answers it holds: pages of any size can be asked
    for, under any number of query strings.
    """

    def __init__(self, ttl_s: float, *, max_entries: int = 512, max_bytes: int = 64 << 20) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._bytes = 0
        self._values: dict[Any, tuple[float, Any]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()
        self._loading: dict[Any, asyncio.Task[Any]] = {}

    def peek(self, key: Any) -> Any:
        """The value if it is still fresh, else None (never loads: safe on the event loop)."""
        hit = self._values.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def _keep(self, key: Any, value: Any, ttl_s: float | None = None) -> None:
        weight = _weight(value)
        replaced = self._values.pop(key, None)
        if replaced is not None:
            self._bytes -= _weight(replaced[1])
        if len(self._values) >= self.max_entries or self._bytes + weight > self.max_bytes:
            self._values.clear()
            self._bytes = 0
            with self._guard:
                # Keys of any query string come and go: their locks must not pile up. A loader
                # still holding a dropped lock at worst runs beside a new one.
                self._locks.clear()
        period = self.ttl_s if ttl_s is None else ttl_s
        self._values[key] = (time.monotonic() + period, value)
        self._bytes += weight

    async def aget(self, key: Any, load: Callable[[], Any]) -> Any:
        """:meth:`get` for async routes: a fresh value at once, else loaded in a worker thread."""
        found = self.peek(key)
        if found is None:
            found = await run_in_threadpool(self.get, key, load)
        return found

    async def aload(
        self, key: Any, load: Callable[[], Awaitable[Any]], *, ttl_s: float | None = None
    ) -> Any:
        """A fresh value at once, else awaited from ``load`` on the event loop: requests for a
        key being loaded wait for that load instead of starting their own. ``ttl_s``: this
        value's period instead of the cache's."""
        found = self.peek(key)
        if found is not None:
            return found
        if (self.ttl_s if ttl_s is None else ttl_s) <= 0:
            return await load()
        task = self._loading.get(key)
        if task is None:

            async def fill() -> Any:
                value = await load()
                self._keep(key, value, ttl_s)
                return value

            task = asyncio.get_running_loop().create_task(fill())
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        # Shielded: a client that goes away does not cancel the others' answer.
        return await asyncio.shield(task)

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        if self.ttl_s <= 0:
            return load()
        hit = self._values.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        # Fifty clients asking for the same expired answer cause one query, not fifty.
        with lock:
            hit = self._values.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            value = load()
            self._keep(key, value)
            return value

    def clear(self) -> None:
        self._values.clear()
        self._bytes = 0


async def get_cache(request: Request) -> TtlCache:
    cache: TtlCache = request.app.state.cache
    return cache


async def registry(request: Request) -> Registry:
    """The registry, from the cache or the database."""
    app = request.app
    settings: Settings = app.state.settings

    def load() -> Registry:
        with connection(app.state.pool, settings.api.pool_timeout_s) as conn:
            return load_registry(conn)

    cache: TtlCache = app.state.cache
    found: Registry = await cache.aget("registry", load)
    return found


RegistryDep = Annotated[Registry, Depends(registry)]
CacheDep = Annotated[TtlCache, Depends(get_cache)]
