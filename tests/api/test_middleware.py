"""The rate limit behind a reverse proxy, over real HTTP: a trusted proxy's forwarded clients
each get their own bucket, a forged header from anyone else is ignored; and its table of
clients stays bounded, at the same cost per request, however many addresses come."""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc
from typing import Any

import httpx

from api.middleware import RateLimit, client_key
from tests.fixtures.api import api_settings, serve


def _limited(client: httpx.Client, forwarded_for: str, count: int) -> list[int]:
    return [
        client.get("/catalogue", headers={"X-Forwarded-For": forwarded_for}).status_code
        for _ in range(count)
    ]


def test_forwarded_clients_behind_a_trusted_proxy_get_their_own_buckets(city_db: str) -> None:
    settings = api_settings(
        city_db, rate_limit_per_s=0.1, rate_limit_burst=3, trusted_proxies=["127.0.0.1"]
    )
    with serve(settings) as base, httpx.Client(base_url=base) as proxy:
        # What a proxy sends: the client's own claim first, the address the proxy saw last.
        assert _limited(proxy, "203.0.113.7", 4) == [200, 200, 200, 429]
        assert _limited(proxy, "198.51.100.9", 3) == [200, 200, 200]
        # The right-most untrusted address counts, whatever a client put before it.
        assert _limited(proxy, "192.0.2.1, 203.0.113.7", 1) == [429]
        assert _limited(proxy, "203.0.113.7, 192.0.2.1", 3) == [200, 200, 200]
        # And links the API writes name the scheme the proxy was reached with.
        feed = proxy.get(
            "/alerts/cap.atom",
            headers={"X-Forwarded-For": "192.0.2.50", "X-Forwarded-Proto": "https"},
        )
        assert feed.status_code == 200
        assert f"https://{base.removeprefix('http://')}/alerts/cap.atom" in feed.text


def test_a_forged_header_from_an_untrusted_address_is_ignored(city_db: str) -> None:
    settings = api_settings(
        city_db, rate_limit_per_s=0.1, rate_limit_burst=3, trusted_proxies=["192.0.2.10"]
    )
    with serve(settings) as base, httpx.Client(base_url=base) as client:
        # Every request claims another address: they all count for the socket's peer.
        statuses = [
            client.get("/catalogue", headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
            for n in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        assert _limited(client, "198.51.100.9", 1) == [429]


def test_no_proxy_is_believed_when_none_is_trusted(city_db: str) -> None:
    settings = api_settings(city_db, rate_limit_per_s=0.1, rate_limit_burst=2, trusted_proxies=[])
    with serve(settings) as base, httpx.Client(base_url=base) as client:
        assert _limited(client, "203.0.113.1", 1) + _limited(client, "203.0.113.2", 2) == [
            200,
            200,
            429,
        ]


def test_ipv6_clients_count_by_their_64() -> None:
    assert (
        client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    )
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("203.0.113.7") == "203.0.113.7"


class _Ok:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _request(limit: RateLimit, host: str) -> int:
    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": "/sensors", "client": (host, 4000), "headers": []}
    await limit(scope, receive, send)
    return status


def _address(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


async def _per_request_s(limit: RateLimit, start: int, count: int) -> float:
    """Median time of one request over rounds of ``count`` new addresses from ``start``."""
    rounds = []
    for r in range(5):
        begin = time.perf_counter()
        for n in range(start + r * count, start + (r + 1) * count):
            assert await _request(limit, _address(n)) == 200
        rounds.append((time.perf_counter() - begin) / count)
    return statistics.median(rounds)


def test_many_addresses_keep_the_table_bounded_and_each_request_cheap() -> None:
    asyncio.run(_many_addresses())


async def _many_addresses() -> None:
    bound = 20_000
    limit = RateLimit(_Ok(), rate=20, burst=200, max_clients=bound)
    assert limit.buckets is not None
    # While the table fills, then once it is full and every new address pushes one out.
    filling = await _per_request_s(limit, 0, 2_000)
    for n in range(10_000, bound):
        await _request(limit, _address(n))
    assert len(limit.buckets) == bound
    tracemalloc.start()
    try:
        # Every entry replaced once while traced (what was there before is not counted)...
        for n in range(100_000, 100_000 + 2 * bound):
            await _request(limit, _address(n))
        before = tracemalloc.get_traced_memory()[0]
        # ... then 50,000 addresses more.
        for n in range(150_000, 200_000):
            await _request(limit, _address(n))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(limit.buckets) == bound
    # 50,000 more addresses held would take some 20 MB; a bounded table holds none of them.
    assert grown < 1_000_000, grown
    full = await _per_request_s(limit, 300_000, 2_000)
    assert full < 3 * filling, (full, filling)
