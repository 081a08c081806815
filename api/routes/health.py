"""Liveness, readiness, the status summary and Prometheus metrics."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import PoolDep
from api.pools import connection, unavailable
from api.schemas import TEXT, Health, Liveness, Readiness, alternatives, text_schema
from pantau.db.migrate import applied_version, current_mode

router = APIRouter(tags=["health"])

# Probes answer within a load balancer's patience, whatever the request timeout.
PROBE_TIMEOUT_S = 2.0


@router.get(
    "/healthz",
    response_model=Liveness,
    summary="Is the process up? (no database: a liveness probe)",
)
async def healthz() -> Liveness:
    return Liveness(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Can it answer? The database is reachable (a readiness probe)",
)
def readyz(pool: PoolDep) -> Readiness:
    with connection(pool, PROBE_TIMEOUT_S) as conn:
        try:
            conn.execute("SELECT 1")
        except psycopg.Error:
            raise unavailable() from None
    return Readiness(status="ready", database="up")


@router.get(
    "/health",
    response_model=Health,
    summary="Status summary: database reachable, storage mode and schema version",
)
def health(pool: PoolDep) -> Health:
    with connection(pool, PROBE_TIMEOUT_S) as conn:
        try:
            mode = current_mode(conn)
            version = applied_version(conn)
        except psycopg.Error:
            raise unavailable() from None
    return Health(status="ok", database="up", mode=str(mode), schema_version=version)


@router.get(
    "/metrics",
    summary="Prometheus metrics: requests, latency, database pool",
    response_class=Response,
    responses=alternatives({TEXT: text_schema("Prometheus text exposition format.")}),
)
def metrics(request: Request) -> Response:
    body = generate_latest(request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
