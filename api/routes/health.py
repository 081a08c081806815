"""Liveness and readiness."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool

from pantau.db.migrate import applied_version, current_mode

router = APIRouter(tags=["health"])


@router.get("/health", summary="Is the API up and its database reachable?")
def health(request: Request) -> JSONResponse:
    pool: ConnectionPool = request.app.state.pool
    try:
        with pool.connection(timeout=3) as conn:
            mode = current_mode(conn)
            version = applied_version(conn)
    except (psycopg.Error, TimeoutError) as error:
        return JSONResponse(
            {"status": "degraded", "database": "down", "detail": str(error)[:200]}, status_code=503
        )
    return JSONResponse(
        {"status": "ok", "database": "up", "mode": str(mode), "schema_version": version}
    )
