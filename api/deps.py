"""Dependencies shared by the routes: settings, database connections, the cached registry.

Pooled connections go back to the pool with their default row factory (tuples), whatever a
route set: a route that wants dictionaries asks for them per cursor, or through ``ConnDep``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from api.errors import Problem
from pantau.catalogue import Family
from pantau.city import Thresholds
from pantau.settings import Settings

RETRY_AFTER = {"Retry-After": "1"}


def make_pool(settings: Settings) -> ConnectionPool:
    """The API's connection pool (opened by the caller)."""
    timeout_ms = settings.api.statement_timeout_ms

    def configure(conn: psycopg.Connection) -> None:
        # Times leave the database in UTC; a slow JSON query is cut instead of holding a
        # connection that 50 other clients wait for.
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(f"SET statement_timeout = {int(timeout_ms)}")

    def reset(conn: psycopg.Connection) -> None:
        conn.row_factory = tuple_row

    return ConnectionPool(
        settings.require_database_url(),
        min_size=min(2, settings.api.pool_max_size),
        max_size=settings.api.pool_max_size,
        kwargs={"autocommit": True},
        configure=configure,
        reset=reset,
        timeout=settings.api.pool_timeout_s,
        open=False,
        name="api",
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
def connection(pool: ConnectionPool, timeout_s: float) -> Iterator[psycopg.Connection]:
    """A pooled connection; a busy pool or a database outage becomes a 503 problem."""
    try:
        conn = pool.getconn(timeout=timeout_s)
    except PoolTimeout:
        raise unavailable("all database connections are busy; retry shortly") from None
    except psycopg.OperationalError:
        raise unavailable() from None
    try:
        yield conn
    finally:
        pool.putconn(conn)


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


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """One sensor of the registry, as the routes need it."""

    id: str
    family: Family
    name: str
    kecamatan: str
    lat: float
    lon: float
    interval_s: float
    river: str | None
    river_km: float | None
    road: str | None
    road_class: str | None
    thresholds: Thresholds | None


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


_REGISTRY = """
SELECT s.id, s.family, s.name, s.kecamatan, s.lat, s.lon, s.interval_s, s.river, s.river_km,
       s.road, s.road_class, t.waspada, t.siaga, t.awas
FROM sensors s LEFT JOIN current_flood_thresholds t ON t.sensor_id = s.id
ORDER BY s.id
"""


def load_registry(conn: psycopg.Connection) -> Registry:
    """Read the registry (sensors with current thresholds, kecamatan)."""
    sensors: dict[str, SensorInfo] = {}
    with conn.cursor(row_factory=tuple_row) as cur:
        for row in cur.execute(_REGISTRY):
            (sid, family, name, kec, lat, lon, interval, river, river_km, road, road_class,
             waspada, siaga, awas) = row  # fmt: skip
            thresholds = (
                None
                if waspada is None
                else Thresholds.model_construct(waspada=waspada, siaga=siaga, awas=awas)
            )
            sensors[sid] = SensorInfo(
                sid, Family(family), name, kec, lat, lon, interval, river, river_km, road,
                road_class, thresholds,
            )  # fmt: skip
        kecamatan = {
            name: KecamatanInfo(name, lat, lon, flood, landslide)
            for name, lat, lon, flood, landslide in cur.execute(
                "SELECT name, lat, lon, flood_prone, landslide_prone FROM kecamatan ORDER BY name"
            )
        }
    return Registry(sensors, kecamatan, {k.lower(): k for k in kecamatan})


class TtlCache:
    """Values kept for ``ttl_s`` seconds (0: never kept); one loader runs per key at a time."""

    def __init__(self, ttl_s: float, *, max_entries: int = 512) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._values: dict[Any, tuple[float, Any]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()

    def peek(self, key: Any) -> Any:
        """The value if it is still fresh, else None (never loads: safe on the event loop)."""
        hit = self._values.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    async def aget(self, key: Any, load: Callable[[], Any]) -> Any:
        """:meth:`get` for async routes: a fresh value at once, else loaded in a worker thread."""
        found = self.peek(key)
        if found is None:
            found = await run_in_threadpool(self.get, key, load)
        return found

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
            if len(self._values) >= self.max_entries:
                self._values.clear()
            self._values[key] = (time.monotonic() + self.ttl_s, value)
            return value

    def clear(self) -> None:
        self._values.clear()


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
