"""Database pools and connections of the API: the sessions' settings, a connection per request,
and the COPY exports' own pool.

Pooled connections go back to the pool with their default row factory (tuples), whatever a
route set: a route that wants dictionaries asks for them per cursor, or through ``ConnDep``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from api.errors import Problem
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
