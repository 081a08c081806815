"""SensorThings API v1.1 over real HTTP, against a real database with stored readings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import frost_sta_client as fsc
import httpx
import psycopg
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from api.main import create_app
from api.sta.compile import Params, compile_filter
from api.sta.model import ENTITY_SETS, OBSERVATIONS, micros
from api.sta.odata import QueryError, parse_filter, parse_options
from pantau.catalogue import CATALOGUE
from pantau.db import store
from pantau.payload import Reading
from pantau.settings import Settings
from tests.fixtures.api import api_settings, serve_app

STA = "/sta/v1.1"
# Recent readings (TimescaleDB's retention policy drops old chunks of the test database), all
# within one hour.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
WIB = timezone(timedelta(hours=7))


def _z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


LEVELS = [round(1.0 + 0.1 * i, 2) for i in range(30)]


def _seed(conn: psycopg.Connection) -> None:
    store.prepare(conn)
    readings = [
        Reading.at(T0 + timedelta(minutes=i), "fg-welang-1", "water_level", value)
        for i, value in enumerate(LEVELS)
    ]
    readings += [
        Reading.at(T0 + timedelta(minutes=i), "fg-welang-1", "rainfall", float(i % 4))
        for i in range(30)
    ]
    readings += [
        Reading.at(T0 + timedelta(minutes=i), "tc-bangil-1", "count_motorcycle", float(10 * i))
        for i in range(10)
    ]
    store.store(conn, readings)


@pytest.fixture
def sta(http: httpx.Client, conn: psycopg.Connection) -> httpx.Client:
    """The API client, with the seeded readings stored."""
    _seed(conn)
    return http


def _get(client: httpx.Client, url: str, **params: Any) -> Any:
    response = client.get(url, params=params or None)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def _walk(client: httpx.Client, url: str, **params: Any) -> list[dict[str, Any]]:
    """Every entity of a collection, following only the server's @iot.nextLink."""
    body = _get(client, url, **params)
    entities = list(body["value"])
    pages = 1
    while "@iot.nextLink" in body:
        body = _get(client, body["@iot.nextLink"])
        entities += body["value"]
        pages += 1
        assert pages < 100
    return entities


def test_landing_page_lists_every_entity_set(sta: httpx.Client) -> None:
    body = _get(sta, STA)
    names = [item["name"] for item in body["value"]]
    assert set(names) == {
        "Things",
        "Locations",
        "HistoricalLocations",
        "Datastreams",
        "Sensors",
        "ObservedProperties",
        "Observations",
        "FeaturesOfInterest",
    }
    assert any("request-data" in c for c in body["serverSettings"]["conformance"])
    for item in body["value"]:
        page = _get(sta, item["url"])
        assert page["value"], item["name"]


def test_entity_sets_map_the_registry_and_catalogue(sta: httpx.Client) -> None:
    things = _get(sta, f"{STA}/Things", **{"$count": "true"})
    assert things["@iot.count"] == 7
    gauge = next(t for t in things["value"] if t["@iot.id"] == "fg-welang-1")
    assert gauge["properties"]["family"] == "flood_gauge"
    assert gauge["properties"]["kecamatan"] == "Purwosari"
    assert gauge["properties"]["river"] == "Welang"
    assert gauge["@iot.selfLink"].endswith("/sta/v1.1/Things('fg-welang-1')")
    assert gauge["Datastreams@iot.navigationLink"].endswith("Things('fg-welang-1')/Datastreams")

    location = _get(sta, f"{STA}/Locations('fg-welang-1')")
    assert location["encodingType"] == "application/geo+json"
    assert location["location"] == {"type": "Point", "coordinates": [112.755, -7.75]}

    sensors = _get(sta, f"{STA}/Sensors")["value"]
    assert {s["@iot.id"] for s in sensors} == {f.value for f in CATALOGUE}
    properties = _get(sta, f"{STA}/ObservedProperties", **{"$top": "100"})["value"]
    assert len(properties) == sum(len(m) for m in CATALOGUE.values())
    level = _get(sta, f"{STA}/ObservedProperties('water_level')")
    assert level["properties"]["smartDataModels"] == {
        "entity": "FloodMonitoring",
        "attribute": "currentLevel",
    }

    datastreams = _walk(sta, f"{STA}/Datastreams")
    # Per sensor, one Datastream per metric of its family: 3 gauges, 2 counters, 2 nodes.
    expected = sum(
        n * len(CATALOGUE[f])
        for f, n in zip(CATALOGUE, (3, 2, 2), strict=True)  # catalogue order: gauge, counter, node
    )
    assert len(datastreams) == expected
    stream = _get(sta, f"{STA}/Datastreams('fg-welang-1:water_level')")
    assert stream["unitOfMeasurement"]["symbol"] == "m"
    assert stream["observationType"].endswith("OM_Measurement")

    history = _get(sta, f"{STA}/HistoricalLocations('fg-welang-1')")
    assert history["time"].endswith("Z")
    feature = _get(sta, f"{STA}/FeaturesOfInterest('fg-welang-1')")
    assert feature["feature"]["coordinates"] == [112.755, -7.75]


def test_observations_of_a_datastream(sta: httpx.Client) -> None:
    body = _get(sta, f"{STA}/Datastreams('fg-welang-1:water_level')/Observations")
    values = body["value"]
    assert [o["result"] for o in values] == LEVELS
    first = values[0]
    assert first["phenomenonTime"] == _z(T0)
    assert first["resultTime"] == first["phenomenonTime"]
    # The id leads back to the same reading.
    again = _get(sta, first["@iot.selfLink"])
    assert again["result"] == LEVELS[0]
    assert again["@iot.id"] == first["@iot.id"]
    # Integer metrics come as whole numbers.
    counts = _get(sta, f"{STA}/Datastreams('tc-bangil-1:count_motorcycle')/Observations")
    assert [o["result"] for o in counts["value"]] == [10 * i for i in range(10)]


def test_navigation_both_ways(sta: httpx.Client) -> None:
    streams = _get(sta, f"{STA}/Things('fg-welang-1')/Datastreams")["value"]
    assert [s["properties"]["metric"] for s in streams] == sorted(CATALOGUE["flood_gauge"])  # type: ignore[index]
    level = next(s for s in streams if s["properties"]["metric"] == "water_level")
    assert _get(sta, level["Thing@iot.navigationLink"])["@iot.id"] == "fg-welang-1"
    assert _get(sta, level["Sensor@iot.navigationLink"])["@iot.id"] == "flood_gauge"
    assert _get(sta, level["ObservedProperty@iot.navigationLink"])["@iot.id"] == "water_level"
    observation = _get(sta, level["Observations@iot.navigationLink"])["value"][0]
    assert _get(sta, observation["Datastream@iot.navigationLink"])["@iot.id"] == level["@iot.id"]
    feature = _get(sta, observation["FeatureOfInterest@iot.navigationLink"])
    assert feature["@iot.id"] == "fg-welang-1"
    seen = _walk(sta, feature["Observations@iot.navigationLink"])
    assert len(seen) == 60  # water level and rainfall of that gauge
    assert _get(sta, f"{STA}/Locations('fg-welang-1')/Things")["value"][0]["@iot.id"] == (
        "fg-welang-1"
    )
    # Property paths, and the bare value.
    assert _get(sta, f"{STA}/Things('fg-welang-1')/name") == {
        "name": "Pos Duga Air Welang Purwosari"
    }
    bare = sta.get(f"{STA}/Datastreams('fg-welang-1:water_level')/description/$value")
    assert bare.text == "River water level above the gauge's zero."
    by_family = _get(sta, f"{STA}/Sensors('traffic_counter')/Datastreams", **{"$count": "true"})
    assert by_family["@iot.count"] == 2 * len(CATALOGUE["traffic_counter"])  # type: ignore[index]
    by_metric = _get(sta, f"{STA}/ObservedProperties('water_level')/Datastreams")["value"]
    assert {d["properties"]["sensor"] for d in by_metric} == {
        "fg-welang-1",
        "fg-welang-2",
        "fg-welang-3",
    }


def test_expand_datastreams_and_observations(sta: httpx.Client) -> None:
    body = _get(
        sta,
        f"{STA}/Things",
        **{
            "$filter": "properties/family eq 'flood_gauge'",
            "$expand": "Datastreams($filter=properties/metric eq 'water_level';"
            "$expand=Observations($top=2;$orderby=phenomenonTime desc;$count=true))",
        },
    )
    things = {t["@iot.id"]: t for t in body["value"]}
    assert set(things) == {"fg-welang-1", "fg-welang-2", "fg-welang-3"}
    (stream,) = things["fg-welang-1"]["Datastreams"]
    assert [o["result"] for o in stream["Observations"]] == [LEVELS[-1], LEVELS[-2]]
    assert stream["Observations@iot.count"] == 30
    # The expanded page links to the rest, newest first still.
    rest = _walk(sta, stream["Observations@iot.nextLink"])
    assert [o["result"] for o in rest] == LEVELS[-3::-1]
    assert things["fg-welang-2"]["Datastreams"][0]["Observations"] == []

    observation = _get(
        sta,
        f"{STA}/Observations",
        **{"$top": "1", "$expand": "Datastream($expand=Thing),FeatureOfInterest"},
    )["value"][0]
    assert (
        observation["Datastream"]["Thing"]["@iot.id"] == observation["FeatureOfInterest"]["@iot.id"]
    )


def test_filter_on_time_and_result(sta: httpx.Client) -> None:
    url = f"{STA}/Datastreams('fg-welang-1:water_level')/Observations"
    start = T0 + timedelta(minutes=10)
    condition = f"(phenomenonTime ge {_z(start)} and result lt 2.5) or result eq 1.0"
    body = _get(sta, url, **{"$filter": condition})
    expected = [v for i, v in enumerate(LEVELS) if (i >= 10 and v < 2.5) or v == 1.0]
    assert [o["result"] for o in body["value"]] == expected
    # Offsets other than Z are understood; resultTime is the observation time too.
    local = (T0 + timedelta(minutes=5)).astimezone(WIB).isoformat()
    body = _get(sta, url, **{"$filter": f"resultTime lt {local}"})
    assert [o["result"] for o in body["value"]] == LEVELS[:5]
    condition = f"not (result gt 1.2) and hour(phenomenonTime) eq {T0.hour}"
    body = _get(sta, url, **{"$filter": condition})
    assert [o["result"] for o in body["value"]] == LEVELS[:3]
    things = _get(sta, f"{STA}/Things", **{"$filter": "startswith(name, 'Lampu')"})["value"]
    assert {t["@iot.id"] for t in things} == {"sn-bangil-1", "sn-bangil-2"}
    # A sensor without a river is not equal to 'Welang', and differs from it.
    other = _get(sta, f"{STA}/Things", **{"$filter": "properties/river ne 'Welang'"})["value"]
    assert len(other) == 4


def test_orderby_top_skip_count(sta: httpx.Client) -> None:
    url = f"{STA}/Datastreams('fg-welang-1:rainfall')/Observations"
    body = _get(
        sta,
        url,
        **{
            "$orderby": "result desc,phenomenonTime asc",
            "$top": "5",
            "$skip": "2",
            "$count": "true",
        },
    )
    assert body["@iot.count"] == 30
    ranked = sorted(range(30), key=lambda i: (-(i % 4), i))
    assert [o["phenomenonTime"] for o in body["value"]] == [
        _z(T0 + timedelta(minutes=i)) for i in ranked[2:7]
    ]
    assert "@iot.nextLink" in body
    things = _get(sta, f"{STA}/Things", **{"$orderby": "name desc", "$select": "id,name"})
    names = [t["name"] for t in things["value"]]
    assert names == sorted(names, reverse=True)
    assert set(things["value"][0]) == {"@iot.id", "name"}
    assert _get(sta, url, **{"$top": "0", "$count": "true"}) == {"@iot.count": 30, "value": []}


@pytest.mark.parametrize(
    ("orderby", "key"),
    [
        (None, lambda o: o["phenomenonTime"]),
        ("phenomenonTime desc", lambda o: tuple(-ord(c) for c in o["phenomenonTime"])),
        ("result desc", None),
    ],
)
def test_next_links_walk_every_observation_once(
    sta: httpx.Client, orderby: str | None, key: Any
) -> None:
    params = {"$top": "7"}
    if orderby:
        params["$orderby"] = orderby
    seen = _walk(sta, f"{STA}/Observations", **params)
    ids = [o["@iot.id"] for o in seen]
    assert len(ids) == 70
    assert len(set(ids)) == 70
    if orderby == "result desc":
        results = [o["result"] for o in seen]
        assert results == sorted(results, reverse=True)
    streamed = _walk(sta, f"{STA}/Datastreams('fg-welang-1:water_level')/Observations", **params)
    assert len({o["@iot.id"] for o in streamed}) == len(streamed) == 30
    if key is not None:
        assert streamed == sorted(streamed, key=key)


def test_top_is_capped_and_paged(sta: httpx.Client, conn: psycopg.Connection) -> None:
    many = [
        Reading.at(T0 + timedelta(seconds=i), "sn-bangil-1", "noise", 40.0 + i % 7)
        for i in range(10_050)
    ]
    store.store(conn, many)
    url = f"{STA}/Datastreams('sn-bangil-1:noise')/Observations"
    body = _get(sta, url, **{"$top": "50000", "$select": "result"})
    assert len(body["value"]) == 10_000
    rest = _get(sta, body["@iot.nextLink"])
    assert len(rest["value"]) == 50
    assert "@iot.nextLink" not in rest
    # Expanded entities count too: one Datastream leaves room for 9,999 Observations.
    (stream,) = _get(
        sta,
        f"{STA}/Things('sn-bangil-1')/Datastreams",
        **{"$filter": "properties/metric eq 'noise'", "$expand": "Observations($top=20000)"},
    )["value"]
    assert len(stream["Observations"]) == 9_999
    assert len(_walk(sta, stream["Observations@iot.nextLink"])) == 51


HOSTILE = [
    {"$filter": "result gt 1; DROP TABLE readings"},
    {"$filter": "result gt 1) or (1 eq 1"},
    {"$filter": "((result gt 1)"},
    {"$filter": "result gt '1' or 1=1 --"},
    {"$filter": "nonsense eq 1"},
    {"$filter": "phenomenonTime gt 5"},
    {"$filter": "result gt"},
    {"$filter": "phenomenonTime gt 2026-11-01T00:00:00"},
    {"$filter": "result"},
    {"$filter": "pg_sleep(10) eq 1"},
    {"$filter": "result mul 1e308 mul 1e308 gt 1"},
    {"$filter": "'unterminated eq result"},
    {"$filter": "(" * 200 + "result gt 1" + ")" * 200},
    {"$filter": "result eq '\x00'"},
    {"$filter": " and ".join(["result gt 1"] * 200)},
    {"$filter": "not " * 40 + "result gt 1"},
    {"$expand": ",".join(["Datastream"] * 30)},
    {"$expand": "/".join(["Datastream", "Observations"] * 10)},
    {"$orderby": "result; DROP TABLE readings"},
    {"$orderby": "readings.value desc"},
    {"$orderby": "result sideways"},
    {"$expand": "Readings"},
    {"$expand": "Datastream($top=)"},
    {"$expand": "Datastream($top=1"},
    {"$select": "value,secret"},
    {"$skiptoken": "bm90IGEgdG9rZW4"},
    {"$format": "csv"},
]


def test_hostile_options_are_400_problems(sta: httpx.Client) -> None:
    for params in HOSTILE:
        response = sta.get(f"{STA}/Observations", params=params)
        assert response.status_code == 400, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["status"] == 400
        assert problem["detail"], params
        assert "SELECT" not in problem["detail"]
    # Nothing was lost.
    assert len(_walk(sta, f"{STA}/Observations", **{"$top": "1000"})) == 70


def test_nul_and_unknown_ids_are_clear_errors(sta: httpx.Client) -> None:
    for path in [
        "Things('nowhere')",
        "Things('nowhere')/Datastreams",
        "Datastreams('fg-welang-1:no_such_metric')",
        "Observations('fg-welang-1:water_level:99999999999999999999')",
        "Observations('garbage')",
        "Things('it''s')",
    ]:
        response = sta.get(f"{STA}/{path}")
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.filterwarnings("ignore:furl.pathstr is deprecated:DeprecationWarning")
def test_a_real_sensorthings_client_browses_it(sta: httpx.Client, api_url: str) -> None:
    service = fsc.SensorThingsService(f"{api_url}{STA}")
    things = list(service.things().query().list())
    assert len(things) == 7
    gauge = next(t for t in things if t.id == "fg-welang-1")
    assert gauge.name == "Pos Duga Air Welang Purwosari"
    streams = list(gauge.get_datastreams().query().list())
    level = next(d for d in streams if d.properties["metric"] == "water_level")
    assert level.unit_of_measurement.symbol == "m"
    # Small pages: the client follows @iot.nextLink by itself.
    observations = list(level.get_observations().query().top(4).list())
    assert [o.result for o in observations] == LEVELS
    found = service.observations().find(observations[3].id)
    assert found.result == LEVELS[3]
    newest = (
        service.datastreams()
        .query()
        .filter("properties/metric eq 'water_level'")
        .expand("Observations($top=1;$orderby=phenomenonTime desc)")
        .list()
    )
    latest = {d.properties["sensor"]: d.observations for d in newest}
    assert [o.result for o in latest["fg-welang-1"].entities] == [LEVELS[-1]]


_PIECES = [
    "result",
    "phenomenonTime",
    "resultTime",
    "name",
    "properties/river",
    "id",
    "gt",
    "eq",
    "ne",
    "le",
    "and",
    "or",
    "not",
    "add",
    "div",
    "mod",
    "(",
    ")",
    ",",
    "1.5",
    "-1",
    "1e400",
    "'x'",
    "'it''s'",
    "2026-11-01T00:00:00Z",
    "2026-11-01T07:00:00+07:00",
    "null",
    "true",
    "startswith",
    "year",
    "now",
    "length",
    "'",
    "$",
    ";",
]


@given(
    st.one_of(st.text(max_size=300), st.lists(st.sampled_from(_PIECES), max_size=40).map(" ".join))
)
def test_any_filter_compiles_or_is_refused_clearly(text: str) -> None:
    """Whatever the text, parsing and compiling end in SQL or in a QueryError, nothing else."""
    for es in ENTITY_SETS.values():
        try:
            compile_filter(parse_filter(text), es, Params())
        except QueryError as error:
            assert str(error)


@given(
    st.dictionaries(
        st.sampled_from(["$top", "$skip", "$orderby", "$select", "$expand", "$count", "$x"]),
        st.one_of(st.text(max_size=80), st.sampled_from(["Datastream($top=1)", "result desc"])),
    )
)
def test_any_options_parse_or_are_refused_clearly(raw: dict[str, str]) -> None:
    try:
        parse_options(raw)
    except QueryError as error:
        assert str(error)


@given(
    st.sampled_from(["fg-welang-1", "tc-bangil-1"]),
    st.sampled_from(["water_level", "count_car"]),
    st.datetimes(timezones=st.just(UTC)),
)
def test_observation_ids_name_their_reading(sensor: str, metric: str, time: datetime) -> None:
    row = {"sensor_id": sensor, "metric": metric, "time": time}
    assert OBSERVATIONS.parse_id(f"'{OBSERVATIONS.id_of(row)}'") == row


# --- Answers from the API's answer cache ------------------------------------------------------

# Far longer than any test: an answer kept is never dropped for age while a test runs.
CACHE_TTL_S = 600


@contextmanager
def _served(settings: Settings) -> Iterator[tuple[FastAPI, str]]:
    """The API for ``settings`` over real HTTP, and its app (whose pool a test may hold)."""
    app = create_app(settings)
    with serve_app(app, port=settings.api.port) as base:
        yield app, base


@pytest.fixture
def cached(city_db: str, conn: psycopg.Connection) -> Iterator[tuple[httpx.Client, FastAPI]]:
    """A client of an API that keeps its answers, with the seeded readings stored; and the app.

    Two connections at most, and a short wait for one: a request that needs one while the test
    holds both is refused with a 503 at once.
    """
    _seed(conn)
    settings = api_settings(city_db, cache_ttl_s=CACHE_TTL_S, pool_max_size=2, pool_timeout_s=0.5)
    with _served(settings) as (app, base), httpx.Client(base_url=base, timeout=10) as client:
        yield client, app


NEWEST = {"$orderby": "phenomenonTime desc", "$top": "3"}
LEVEL_OBSERVATIONS = f"{STA}/Datastreams('fg-welang-1:water_level')/Observations"


def _store_level(conn: psycopg.Connection, value: float) -> None:
    """A water level newer than any seeded."""
    store.store(conn, [Reading.at(T0 + timedelta(minutes=45), "fg-welang-1", "water_level", value)])


def test_a_repeated_request_is_answered_from_the_cache(
    cached: tuple[httpx.Client, FastAPI], conn: psycopg.Connection
) -> None:
    client, _ = cached
    first = client.get(LEVEL_OBSERVATIONS, params=NEWEST)
    assert first.status_code == 200, first.text
    assert [o["result"] for o in first.json()["value"]] == LEVELS[:-4:-1]
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == f"public, max-age={CACHE_TTL_S}"
    _store_level(conn, 9.5)
    second = client.get(LEVEL_OBSERVATIONS, params=NEWEST)
    assert second.status_code == 200
    assert second.content == first.content
    assert second.headers["etag"] == etag
    # The reading is stored: a question not asked before sees it.
    fresh = _get(client, LEVEL_OBSERVATIONS, **NEWEST, **{"$count": "true"})
    assert fresh["value"][0]["result"] == 9.5
    # A client holding the answer is told it has not changed, without a body.
    again = client.get(LEVEL_OBSERVATIONS, params=NEWEST, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag


def test_without_a_cache_period_a_new_observation_shows_at_once(
    sta: httpx.Client, conn: psycopg.Connection
) -> None:
    first = sta.get(LEVEL_OBSERVATIONS, params=NEWEST)
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "public, max-age=0"
    _store_level(conn, 9.5)
    second = sta.get(LEVEL_OBSERVATIONS, params=NEWEST)
    assert second.json()["value"][0]["result"] == 9.5
    assert second.headers["etag"] != first.headers["etag"]
    unchanged = sta.get(
        LEVEL_OBSERVATIONS, params=NEWEST, headers={"If-None-Match": second.headers["etag"]}
    )
    assert unchanged.status_code == 304


def test_a_cached_answer_takes_no_database_connection(
    cached: tuple[httpx.Client, FastAPI],
) -> None:
    client, app = cached
    url = f"{STA}/Things('fg-welang-1')/Datastreams"
    first = client.get(url, params={"$expand": "Observations($top=2)"})
    assert first.status_code == 200, first.text
    pool: ConnectionPool = app.state.pool
    held = [pool.getconn(timeout=10) for _ in range(pool.max_size)]
    try:
        again = client.get(url, params={"$expand": "Observations($top=2)"})
        # A question not asked before needs a connection, and none is free.
        other = client.get(url, params={"$expand": "Observations($top=3)"})
    finally:
        for connection in held:
            pool.putconn(connection)
    assert again.status_code == 200, again.text
    assert again.content == first.content
    assert other.status_code == 503
    assert other.headers["content-type"].startswith("application/problem+json")
    assert "etag" not in other.headers
    # The refusal was not kept either.
    assert client.get(url, params={"$expand": "Observations($top=3)"}).status_code == 200


def test_errors_are_not_kept(
    cached: tuple[httpx.Client, FastAPI], conn: psycopg.Connection
) -> None:
    client, _ = cached
    moment = T0 + timedelta(minutes=50)
    url = f"{STA}/Observations('fg-welang-2:water_level:{micros(moment)}')"
    missing = client.get(url)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["status"] == 404
    assert "etag" not in missing.headers
    store.store(conn, [Reading.at(moment, "fg-welang-2", "water_level", 2.0)])
    found = client.get(url)
    assert found.status_code == 200, found.text
    assert found.json()["result"] == 2.0

    # A 400 met while evaluating the stored values (2.0 * 1e308 overflows) goes with them.
    stream = f"{STA}/Datastreams('fg-welang-2:water_level')/Observations"
    overflow = {"$filter": "result mul 1e308 gt 1"}
    refused = client.get(stream, params=overflow)
    assert refused.status_code == 400, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "overflow" in refused.json()["detail"]
    conn.execute("DELETE FROM readings WHERE sensor_id = 'fg-welang-2'")
    assert _get(client, stream, **overflow) == {"value": []}


def test_each_scheme_and_host_asked_get_links_of_their_own(
    cached: tuple[httpx.Client, FastAPI],
) -> None:
    client, _ = cached
    port = client.base_url.port
    url = f"{STA}/Things('fg-welang-1')"
    direct = _get(client, url)
    assert direct["@iot.selfLink"] == f"http://127.0.0.1:{port}{url}"
    named = client.get(url, headers={"Host": f"localhost:{port}"})
    assert named.json()["@iot.selfLink"] == f"http://localhost:{port}{url}"
    # Behind a proxy that terminates TLS (uvicorn trusts a local one's headers).
    proxied = client.get(url, headers={"X-Forwarded-Proto": "https"})
    assert proxied.json()["@iot.selfLink"] == f"https://127.0.0.1:{port}{url}"
    assert _get(client, url) == direct


def test_cached_answers_come_compressed_when_asked(cached: tuple[httpx.Client, FastAPI]) -> None:
    client, _ = cached
    params = {"$top": "50"}
    zipped = client.get(f"{STA}/Observations", params=params, headers={"Accept-Encoding": "gzip"})
    assert zipped.status_code == 200, zipped.text
    assert zipped.headers["content-encoding"] == "gzip"
    plain = client.get(
        f"{STA}/Observations", params=params, headers={"Accept-Encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers
    assert zipped.content == plain.content  # httpx decodes the first
    assert zipped.headers["etag"] == plain.headers["etag"]
    assert len(plain.json()["value"]) == 50


def test_every_source_reads_alike_in_binary_and_text(
    sta: httpx.Client, conn: psycopg.Connection
) -> None:
    """Queries fetch binary rows: every column of every entity set must load to the value, and
    the type, that text would give (a type without a binary loader would come as bytes)."""
    for es in ENTITY_SETS.values():
        query = sql.SQL("SELECT * FROM ({}) AS e").format(es.source)
        with conn.cursor(row_factory=dict_row) as cur:
            text = cur.execute(query).fetchall()
            binary = cur.execute(query, binary=True).fetchall()
        assert text, es.name
        assert binary == text, es.name
        for was, now in zip(text, binary, strict=True):
            assert {k: type(v) for k, v in now.items()} == {k: type(v) for k, v in was.items()}
