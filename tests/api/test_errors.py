"""Every error is an RFC 9457 problem detail, and no input gets a 500."""

from __future__ import annotations

import httpx
import pytest
from psycopg.rows import dict_row

from api.pools import connection, make_pool
from tests.fixtures.api import api_settings, serve

PROBLEM = "application/problem+json"


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status
    text = response.text.lower()
    assert "traceback" not in text and "select " not in text
    return body


def test_pooled_connections_come_back_with_tuple_rows(city_db: str) -> None:
    # Regression: a route set dict rows on a pooled connection, and the next user of that
    # connection (the health check) indexed a dict by 0 and failed.
    pool = make_pool(api_settings(city_db, pool_max_size=1))
    pool.open(wait=True)
    try:
        with connection(pool, 5) as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
        with connection(pool, 5) as conn:  # the same connection: the pool holds one
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
    finally:
        pool.close()


def test_health_keeps_answering_after_data_requests(http: httpx.Client) -> None:
    # Regression: /health answered 500 forever after the first data request.
    for _ in range(6):
        assert http.get("/alerts").status_code < 500  # a route on dictionary rows
        assert http.get("/sensors").status_code == 200
        assert http.get(
            "/sensors/fg-welang-1/readings", params={"metric": "water_level"}
        ).is_success
        assert http.get("/readings", params={"family": "flood_gauge"}).status_code == 200
        health = http.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["database"] == "up"
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready", "database": "up"}


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/sensors/%00", {}),
        ("/sensors/fg-%01welang", {}),
        ("/sensors", {"kecamatan": "\x00"}),
        ("/sensors", {"kecamatan": "Bangil\x1b[31m"}),
        ("/readings", {"sensor": "fg-welang-1\x00"}),
        ("/readings", {"sensor": "fg-welang-1", "start": "2026-01-01\x00"}),
        ("/latest", {"sensor": "\x7f"}),
    ],
)
def test_nul_and_control_characters_are_refused_before_the_database(
    month: httpx.Client, path: str, params: dict[str, str]
) -> None:
    body = _problem(month.get(path, params=params), 400)
    assert "control characters" in str(body["detail"])


def test_bytes_that_are_not_utf8_are_refused(month: httpx.Client) -> None:
    body = _problem(month.get("/sensors?kecamatan=%FF%FE"), 400)
    assert "UTF-8" in str(body["detail"])
    _problem(month.get("/sensors/%ff"), 400)


SQL = "x' OR '1'='1'; DROP TABLE readings; --"


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        (f"/sensors/{SQL}", {}, 404),
        ("/sensors", {"kecamatan": SQL}, 404),
        ("/sensors", {"family": SQL}, 422),
        ("/sensors", {"bbox": SQL}, 400),
        ("/latest", {"sensor": SQL}, 404),
        ("/readings", {"sensor": SQL}, 404),
        ("/readings", {"sensor": "fg-welang-1", "metric": SQL}, 400),
        ("/readings", {"sensor": "fg-welang-1", "start": SQL}, 400),
        ("/readings", {"sensor": "fg-welang-1", "cursor": SQL}, 400),
        ("/readings", {"sensor": "fg-welang-1", "resolution": SQL}, 422),
        ("/readings", {"sensor": "fg-welang-1", "limit": SQL}, 422),
        ("/city/status", {"format": SQL}, 422),
    ],
)
def test_sql_in_any_parameter_is_a_clear_4xx(
    month: httpx.Client, path: str, params: dict[str, str], status: int
) -> None:
    _problem(month.get(path, params=params), status)
    # And nothing was dropped.
    assert month.get("/readings", params={"sensor": "fg-welang-1"}).status_code == 200


@pytest.mark.parametrize(
    "bbox",
    ["1,2,3", "a,b,c,d", "200,0,201,1", "10,0,5,1", "0,80,1,95", "nan,0,1,1", "inf,0,1,1", ""],
)
def test_bad_bounding_boxes(month: httpx.Client, bbox: str) -> None:
    body = _problem(month.get("/sensors", params={"bbox": bbox}), 400)
    assert "bbox" in str(body["detail"])


def test_unknown_things_are_404_problems(month: httpx.Client) -> None:
    body = _problem(month.get("/no/such/path"), 404)
    assert body["instance"] == "/no/such/path"
    _problem(month.get("/sensors/ñandú-☃"), 404)
    kraton = _problem(month.get("/sensors", params={"kecamatan": "kraton"}), 404)
    assert "Bangil" in str(kraton["detail"])  # names the known ones
    assert month.get("/sensors", params={"kecamatan": "bAnGiL"}).json()  # any case


def test_method_not_allowed_and_validation_are_problems(month: httpx.Client) -> None:
    not_allowed = month.post("/sensors")
    _problem(not_allowed, 405)
    assert "GET" in not_allowed.headers["allow"]
    invalid = _problem(month.get("/readings", params={"sensor": "fg-welang-1", "limit": "0"}), 422)
    errors = invalid["errors"]
    assert isinstance(errors, list)
    assert errors[0]["location"] == ["query", "limit"]


def test_huge_ranges_and_pages_are_refused_with_reasons(month: httpx.Client) -> None:
    huge = _problem(
        month.get(
            "/readings",
            params={"sensor": "fg-welang-1", "start": "1971-01-01", "end": "2199-01-01"},
        ),
        400,
    )
    assert "range too long" in str(huge["detail"])
    out_of_range = _problem(
        month.get("/readings", params={"sensor": "fg-welang-1", "start": "0001-01-01T00:00:00"}),
        400,
    )
    assert "1970" in str(out_of_range["detail"])
    page = _problem(month.get("/readings", params={"sensor": "fg-welang-1", "limit": 10**6}), 400)
    assert "next" in str(page["detail"])
    _problem(month.get("/readings", params={"sensor": "fg-welang-1", "limit": 10**30}), 400)
    _problem(month.get("/readings"), 400)


def test_head_cors_and_gzip(month: httpx.Client) -> None:
    head = month.head("/sensors")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"]
    cors = month.get("/sensors", headers={"Origin": "https://example.org"})
    assert cors.headers["access-control-allow-origin"] == "*"
    zipped = month.get("/sensors", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json()  # httpx decompresses


def test_rate_limit_answers_429_with_retry_after(city_db: str) -> None:
    settings = api_settings(city_db, rate_limit_per_s=0.5, rate_limit_burst=3)
    with serve(settings) as base, httpx.Client(base_url=base) as client:
        statuses = [client.get("/catalogue").status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200]
        limited = client.get("/catalogue")
        _problem(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1
        # Probes are never limited.
        assert client.get("/healthz").status_code == 200


def test_metrics_count_requests_by_route_and_pool(http: httpx.Client) -> None:
    http.get("/sensors/fg-welang-1")
    http.get("/sensors/nope")
    text = http.get("/metrics").text
    assert 'route="/sensors/{sensor_id}",status="200"' in text
    assert 'route="/sensors/{sensor_id}",status="404"' in text
    assert "pantau_api_request_duration_seconds_bucket" in text
    assert 'pantau_api_db_pool_max{pool="api"} 4.0' in text
    assert 'pantau_api_db_pool_max{pool="api-async"} 4.0' in text


def test_docs_work_offline(month: httpx.Client) -> None:
    page = month.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    assert month.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert month.get("/docs-assets/swagger-ui.css").status_code == 200
    redoc = month.get("/redoc").text
    assert "/docs-assets/redoc.standalone.js" in redoc and "googleapis" not in redoc
    schema = month.get("/openapi.json").json()
    operation = schema["paths"]["/readings"]["get"]
    assert "text/csv" in operation["responses"]["200"]["content"]
    assert PROBLEM in operation["responses"]["400"]["content"]
    assert all(p.get("description") for p in operation["parameters"])
