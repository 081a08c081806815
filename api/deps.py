"""The FastAPI dependencies of the routes: the settings, a connection per request, the answer
cache and the cached registry (api.pools, api.cache, api.registry hold what they give).

Pooled connections go back to the pool with their default row factory (tuples), whatever a
route set: a route that wants dictionaries asks for them per cursor, or through ``ConnDep``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, Request
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from api.cache import TtlCache
from api.pools import connection
from api.registry import Registry, load_registry
from pantau.settings import Settings


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


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
