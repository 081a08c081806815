"""Dependencies shared by the routes: settings and database connections."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Request
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from pantau.settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


def get_conn(pool: Annotated[ConnectionPool, Depends(get_pool)]) -> Iterator[psycopg.Connection]:
    """A pooled connection for one request; a database outage becomes a 503, not a crash."""
    try:
        with pool.connection(timeout=5) as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            yield conn
    except (psycopg.OperationalError, TimeoutError) as error:
        raise HTTPException(status_code=503, detail=f"database unavailable: {error}") from None


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]
