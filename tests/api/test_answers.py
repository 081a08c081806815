"""Answers served again from the answer cache, before routing: fresh within the cache period,
per URL and host, still counted by the metrics and held to the rate limit."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from pantau.db import store
from pantau.payload import Reading
from tests.fixtures.api import api_settings, serve

SENSOR, METRIC = "tc-bangil-1", "count_motorcycle"


def _store(conn: psycopg.Connection, start: datetime, values: range) -> None:
    store.prepare(conn)
    store.store(
        conn,
        [Reading.at(start + timedelta(seconds=20 * i), SENSOR, METRIC, float(i)) for i in values],
    )


@pytest.fixture
def start(conn: psycopg.Connection) -> datetime:
    began = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    _store(conn, began, range(6))
    return began


@pytest.fixture
def cached(city_db: str) -> Iterator[httpx.Client]:
    with (
        serve(api_settings(city_db, cache_ttl_s=60)) as base,
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        yield client


def _params(start: datetime, **more: str) -> dict[str, str]:
    return {"sensor": SENSOR, "metric": METRIC, "start": start.isoformat(), **more}


def _values(response: httpx.Response) -> list[float]:
    assert response.status_code == 200, response.text
    return [r["value"] for r in response.json()["readings"]]


def test_a_page_asked_again_is_the_same_answer_until_the_period_ends(
    cached: httpx.Client, conn: psycopg.Connection, start: datetime
) -> None:
    first = cached.get("/readings", params=_params(start))
    assert _values(first) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    _store(conn, start, range(6, 7))
    again = cached.get("/readings", params=_params(start))
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert "max-age=60" in again.headers["cache-control"]
    unchanged = cached.get(
        "/readings", params=_params(start), headers={"If-None-Match": first.headers["etag"]}
    )
    assert unchanged.status_code == 304 and unchanged.content == b""
    # Another question (here: one more parameter) is asked of the database.
    assert _values(cached.get("/readings", params=_params(start, order="asc")))[-1] == 6.0


def test_head_of_a_cached_answer_has_its_headers_and_no_body(
    cached: httpx.Client, start: datetime
) -> None:
    first = cached.get("/readings", params=_params(start))
    head = cached.head("/readings", params=_params(start))
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == first.headers["etag"]


def test_each_host_gets_its_own_links(cached: httpx.Client, start: datetime) -> None:
    params = _params(start, limit="2")
    one = cached.get("/readings", params=params, headers={"Host": "one.example"})
    two = cached.get("/readings", params=params, headers={"Host": "two.example"})
    assert one.json()["next"].startswith("http://one.example/readings?")
    assert two.json()["next"].startswith("http://two.example/readings?")
    assert two.headers["link"].startswith("<http://two.example/readings?")


def test_cached_answers_are_counted_under_their_route(
    cached: httpx.Client, start: datetime
) -> None:
    for _ in range(3):
        cached.get("/readings", params=_params(start))
    text = cached.get("/metrics").text
    assert 'pantau_api_requests_total{method="GET",route="/readings",status="200"} 3.0' in text


def test_cached_answers_are_held_to_the_rate_limit(city_db: str, start: datetime) -> None:
    settings = api_settings(city_db, cache_ttl_s=60, rate_limit_per_s=0.5, rate_limit_burst=3)
    with serve(settings) as base, httpx.Client(base_url=base, timeout=10) as client:
        statuses = [client.get("/readings", params=_params(start)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_hourly_and_daily_pages_are_kept_longer(city_db: str, start: datetime) -> None:
    settings = api_settings(city_db, cache_ttl_s=2, cache_ttl_coarse_s=30)
    with serve(settings) as base, httpx.Client(base_url=base, timeout=10) as client:
        raw = client.get("/readings", params=_params(start))
        hourly = client.get("/readings", params=_params(start, resolution="1h"))
        daily = client.get("/readings", params=_params(start, resolution="1d"))
        minutes = client.get("/readings", params=_params(start, resolution="5m"))
    assert "max-age=2" in raw.headers["cache-control"]
    assert "max-age=2" in minutes.headers["cache-control"]
    assert "max-age=30" in hourly.headers["cache-control"]
    assert "max-age=30" in daily.headers["cache-control"]


def test_without_caching_hourly_pages_are_not_kept_either(
    city_db: str, conn: psycopg.Connection, start: datetime
) -> None:
    settings = api_settings(city_db, cache_ttl_s=0, cache_ttl_coarse_s=30)
    params = _params(start, resolution="1h", agg="count")
    with serve(settings) as base, httpx.Client(base_url=base, timeout=10) as client:
        before = sum(_values(client.get("/readings", params=params)))
        _store(conn, start, range(6, 8))
        after = client.get("/readings", params=params)
    assert sum(_values(after)) == before + 2
    assert "max-age=0" in after.headers["cache-control"]
