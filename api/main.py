"""Application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from psycopg_pool import ConnectionPool

from api.routes import alerts, health, operator, pages, readings, sensors, sta, stream
from pantau import __version__
from pantau.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """Build the API for one settings object (tests pass their own)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ConnectionPool(
            settings.require_database_url(),
            min_size=1,
            max_size=settings.api.pool_max_size,
            kwargs={"autocommit": True},
            open=False,
        )
        pool.open(wait=False)
        app.state.pool = pool
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(
        title="Pantau open data",
        version=__version__,
        description="Live and historical readings of Kabupaten Pasuruan's street, flood and "
        "traffic sensors. Open data: GeoJSON, CSV and JSON.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(health.router)
    app.include_router(sensors.router)
    app.include_router(readings.router)
    app.include_router(alerts.router)
    app.include_router(stream.router)
    app.include_router(operator.router)
    app.include_router(sta.router)
    app.include_router(pages.router)
    return app
