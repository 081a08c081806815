"""Application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api import errors, schemas
from api.cache import TtlCache
from api.middleware import CachedAnswers, HeadAsGet, Metrics, PoolCollector, RateLimit
from api.pools import make_async_pool, make_exports, make_pool
from api.routes import (
    alert_work,
    alerts,
    catalogue,
    city,
    health,
    latest,
    operator,
    pages,
    quality,
    readings,
    rivers,
    sensors,
    sta,
    stream,
)
from pantau import __version__, logs
from pantau.settings import Settings, get_settings

DOCS_ASSETS = "/docs-assets"
# Sync routes run in worker threads: enough of them that requests waiting for the database
# queue in the pool (bounded wait, then 503) rather than in front of it.
WORKER_THREADS = 64

DESCRIPTION = """\
Live and historical readings of Kabupaten Pasuruan's flood gauges, traffic counters and street
nodes (lamps, air quality, noise). Open data as JSON, GeoJSON and CSV.

Times are RFC 3339 with their offset, in UTC unless `tz=Asia/Jakarta` is asked for; a time
given without an offset is read as WIB (UTC+7, the city's time). Errors are RFC 9457 problem
details (`application/problem+json`). See docs/api.md for a guide with examples.
"""


def configure_logging(settings: Settings) -> None:
    """The process's logging, with uvicorn's access log (one line per request) if asked."""
    logs.configure(settings.log_level, json=settings.log_json)
    if settings.api.access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)


def app_from_environment() -> FastAPI:
    """The app for the environment's settings: what each uvicorn worker process builds."""
    settings = get_settings()
    configure_logging(settings)
    return create_app(settings)


def create_app(settings: Settings) -> FastAPI:
    """Build the API for one settings object (tests pass their own)."""
    metrics_registry = CollectorRegistry()
    pool_collector = PoolCollector()
    metrics_registry.register(pool_collector)
    app = FastAPI(
        title="Pantau open data",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(settings, pool_collector),
        docs_url=None,
        redoc_url=None,
        license_info={"name": "Apache-2.0"},
    )
    app.state.settings = settings
    app.state.cache = TtlCache(settings.api.cache_ttl_s)
    app.state.metrics_registry = metrics_registry
    errors.install(app)
    _install_docs(app)
    for module in (health, catalogue, sensors, latest, readings, city, rivers):
        app.include_router(module.router)
    for module in (alerts, alert_work, stream, operator, quality, sta, pages):
        app.include_router(module.router)
    _add_middleware(app, settings)
    _document_problems(app)
    return app


def _lifespan(
    settings: Settings, pool_collector: PoolCollector
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's pools, opened at startup (without waiting for the database) and closed after."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        pool = make_pool(settings)
        pool.open(wait=False)
        async_pool = make_async_pool(settings)
        await async_pool.open(wait=False)
        exports = make_exports(settings)
        exports.pool.open(wait=False)
        app.state.pool = pool
        app.state.async_pool = async_pool
        app.state.exports = exports
        pool_collector.pools = (pool, async_pool, exports.pool)
        try:
            yield
        finally:
            pool_collector.pools = ()
            await async_pool.close()
            pool.close()
            exports.pool.close()

    return lifespan


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    # Added innermost first: the metrics see every answer, limits included.
    app.add_middleware(CachedAnswers, cache=app.state.cache)
    app.add_middleware(HeadAsGet)
    app.add_middleware(
        RateLimit,
        rate=settings.api.rate_limit_per_s,
        burst=settings.api.rate_limit_burst,
        max_clients=settings.api.rate_limit_clients_max,
    )
    # Level 4: most of the size of level 9 at several times its speed (CSV exports).
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=4)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.api.cors_origins,
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["If-None-Match", "Last-Event-ID", "Accept"],
        expose_headers=["ETag", "Link", "Retry-After", "Content-Disposition"],
        max_age=3600,
    )
    app.add_middleware(Metrics, registry=app.state.metrics_registry)
    # Outermost: everything inside (the rate limit, the access log, URLs of links) sees the
    # client a trusted proxy forwarded, not the proxy. The server's own is off (see api.cli).
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.api.trusted_proxies)


def _document_problems(app: FastAPI) -> None:
    """The OpenAPI document, built once: problem details for errors, and the alternative models."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = errors.document_problems(schemas.document_models(build()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc from assets shipped in a Python package: no CDN, works offline."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title}: API documentation",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title}: API reference",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
