"""ASGI middleware of the public API: metrics, a per-client rate limit, HEAD for every GET, and
answers served again from the answer cache."""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from starlette.requests import Request

from api.cache import TtlCache
from api.errors import ASGIApp, Receive, Scope, Send, problem_response, raw_path_of
from api.responses import Answer, answer_key
from pantau.ratelimit import TokenBuckets

# Probes and scrapes are never limited, and their own traffic is not what the metrics are for.
UNMETERED = frozenset({"/healthz", "/readyz", "/metrics"})
# The block of IPv6 addresses one subscriber is given, as a rule.
IPV6_CLIENT_PREFIX = 64


class PoolCollector(Collector):
    """The connection pools' usage, labelled by pool (``api``: routes in worker threads,
    ``api-async``: routes on the event loop, ``api-export``: CSV exports), read from
    psycopg_pool at scrape time."""

    def __init__(self) -> None:
        self.pools: tuple[ConnectionPool | AsyncConnectionPool, ...] = ()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        if not self.pools:
            return
        stats = [(pool.name, pool.get_stats()) for pool in self.pools]
        for key, name, text in (
            ("pool_max", "pool_max", "Connections the pool may open."),
            ("pool_size", "pool_size", "Connections open (in use or idle)."),
            ("pool_available", "pool_available", "Idle connections ready for a request."),
            ("requests_waiting", "requests_waiting", "Requests waiting for a connection."),
            ("requests_num", "requests_total", "Connections handed out since start."),
            (
                "requests_errors",
                "requests_errors_total",
                "Requests for a connection that failed (timeout or database error).",
            ),
        ):
            family = GaugeMetricFamily(f"pantau_api_db_{name}", text, labels=["pool"])
            for pool_name, values in stats:
                family.add_metric([pool_name], values.get(key, 0))
            yield family


class Metrics:
    """Requests by route template and status, and their latency."""

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "pantau_api_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "pantau_api_request_duration_seconds",
            "Time to answer a request (to the end of the body).",
            ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNMETERED:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracking(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        finally:
            route = scope.get("route")
            # Unmatched paths are one label, not one per path a scanner tries.
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.requests.labels(method, template, str(status)).inc()
            self.latency.labels(method, template).observe(time.perf_counter() - started)


class RateLimit:
    """A token bucket per client: ``rate`` requests per second, ``burst`` at once, for at most
    ``max_clients`` clients at a time (:class:`pantau.ratelimit.TokenBuckets`).

    The client is ``scope["client"]``: the socket's peer, or the address a trusted proxy
    forwarded (``ProxyHeadersMiddleware`` outside this one). An IPv6 client counts by its /64,
    the block one subscriber is given: rotating addresses within it gains nothing.
    """

    def __init__(self, app: ASGIApp, *, rate: float, burst: int, max_clients: int) -> None:
        self.app = app
        self.rate = rate
        self.buckets = (
            TokenBuckets(rate_per_s=rate, burst=burst, max_keys=max_clients) if rate > 0 else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.buckets is None or scope["path"] in UNMETERED:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.buckets.take(client_key(client[0]) if client else "unknown")
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            response = problem_response(
                None,
                429,
                f"more than {self.rate:g} requests per second from this address; "
                f"retry in {seconds} s",
                kind="rate-limited",
                headers={"Retry-After": str(seconds)},
                instance=raw_path_of(scope),
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def client_key(host: str) -> str:
    """What the rate limit counts ``host`` as: an IPv4 address itself, an IPv6 one its /64."""
    if ":" not in host:
        return host
    try:
        return str(ipaddress.IPv6Network((host, IPV6_CLIENT_PREFIX), strict=False))
    except ValueError:
        return host


class HeadAsGet:
    """Answers HEAD like GET, without the body (routes declare GET only)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        done = False

        async def headers_only(message: Any) -> None:
            nonlocal done
            if done:
                return
            if message["type"] == "http.response.body":
                done = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        # The server sees HEAD still (and sends headers only); the routes see GET.
        inner = {**scope, "method": "GET"}
        await self.app(inner, receive, headers_only)
        if "route" in inner:  # for the metrics outside
            scope["route"] = inner["route"]


class CachedAnswers:
    """Serves a GET from the answer cache when a route left the whole answer to this very URL
    there (:class:`api.responses.Answer`): a question asked again within the cache period skips
    routing and the parsing and validation of its parameters, which cost more than the answer.
    """

    def __init__(self, app: ASGIApp, *, cache: TtlCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        found = self.cache.peek(answer_key(request))
        if not isinstance(found, Answer):
            await self.app(scope, receive, send)
            return
        if found.route is not None:
            scope["route"] = found.route
        await found.response(request)(scope, receive, send)
