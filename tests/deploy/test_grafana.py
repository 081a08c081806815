"""The Grafana provisioning files and the control-room dashboard.

Every SQL target of the dashboard is expanded the way Grafana's PostgreSQL data source does
(``grafana_macros``) and run against a real migrated database holding the mini city and some
readings, as the read-only role Grafana logs in with. ``$__timeGroup`` expands to
``time_bucket`` only when the data source's ``timescaledb`` flag is on, so the tests expand
with the flag matching the test database's storage mode; a deployment must keep the flag equal
to its database (on in the compose file, which runs TimescaleDB).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pantau.city import City
from pantau.db.migrate import Mode, refresh_rollups
from pantau.db.store import RejectedPayload, prepare, store
from pantau.payload import Reading, Reason, Rejection
from tests.deploy.grafana_macros import MacroError, QueryContext, expand, format_interval

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DATASOURCE_FILE = GRAFANA / "provisioning" / "datasources" / "pantau.yaml"
PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "pantau.yaml"
DASHBOARD_FILE = GRAFANA / "dashboards" / "pasuruan-city.json"
DATASOURCE_UID = "pantau"
LEVELS = {"Normal", "Waspada", "Siaga", "Awas"}


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return data


def _panels() -> list[dict[str, Any]]:
    return list(_dashboard()["panels"])


def _panel(title: str) -> dict[str, Any]:
    matches = [p for p in _panels() if p.get("title") == title]
    assert len(matches) == 1, f"expected one panel titled {title!r}"
    return matches[0]


def _targets() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{panel['title']} [{target['refId']}]", target)
        for panel in _panels()
        for target in panel.get("targets", [])
    ]


def _variable_query() -> str:
    (variable,) = [v for v in _dashboard()["templating"]["list"] if v["name"] == "kecamatan"]
    query = variable["query"]
    return str(query if isinstance(query, str) else query["rawSql"])


# --- helper: the macro expansion itself -------------------------------------------------------

FROM = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
TO = datetime(2025, 1, 2, 9, 4, 5, 500_000, tzinfo=UTC)


def _ctx(*, timescaledb: bool = False, interval_s: float = 60) -> QueryContext:
    return QueryContext(
        time_from=FROM,
        time_to=TO,
        interval=timedelta(seconds=interval_s),
        timescaledb=timescaledb,
        variables={"kecamatan": ["Bangil", "Pohjentrek"]},
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(90, "1m"), (60, "1m"), (59, "59s"), (0.5, "500ms"), (7200, "2h"), (86_400 * 3, "3d")],
)
def test_interval_takes_its_largest_whole_unit(seconds: float, text: str) -> None:
    assert format_interval(timedelta(seconds=seconds)) == text


def test_macros_expand_as_in_grafana() -> None:
    ctx = _ctx()
    assert expand("$__timeFilter(t)", ctx) == (
        "t BETWEEN '2025-01-02T03:04:05Z' AND '2025-01-02T09:04:05.5Z'"
    )
    assert expand("$__timeFrom() $__timeTo()", ctx) == (
        "'2025-01-02T03:04:05Z' '2025-01-02T09:04:05.5Z'"
    )
    assert expand("$__time(t)", ctx) == 't AS "time"'
    assert expand("$__timeEpoch(t)", ctx) == 'extract(epoch from t) as "time"'
    assert expand("$__timeGroup(t, '5m')", ctx) == "floor(extract(epoch from t)/300)*300"
    assert expand("$__timeGroup(t, '5m')", _ctx(timescaledb=True)) == "time_bucket('300.000s',t)"
    assert expand("$__timeGroupAlias(t, $__interval)", _ctx(interval_s=90)) == (
        'floor(extract(epoch from t)/60)*60 AS "time"'
    )
    # Pre-5.3 compatibility: a bare $__timeGroup followed by a comma gets the alias.
    assert expand("SELECT $__timeGroup(t, 1h), v", ctx) == (
        'SELECT floor(extract(epoch from t)/3600)*3600 AS "time", v'
    )
    assert expand("$__unixEpochFilter(e)", ctx) == "e >= 1735787045 AND e <= 1735808645"
    assert expand("$__unixEpochGroup(e, '1h')", ctx) == "floor((e)/3600)*3600"
    assert expand("$__unixEpochFrom() $__unixEpochTo()", ctx) == "1735787045 1735808645"
    assert expand("$__interval_ms $__interval", _ctx(interval_s=90)) == "90000 1m"
    assert expand(
        "k IN ($kecamatan) OR k IN (${kecamatan}) OR k = ${kecamatan:sqlstring}", ctx
    ) == (
        "k IN ('Bangil','Pohjentrek') OR k IN ('Bangil','Pohjentrek') OR k = 'Bangil','Pohjentrek'"
    )


@pytest.mark.parametrize(
    "sql", ["$__notAMacro(t)", "$__timeGroup(t)", "$__timeGroup(t, 'soon')", "$unknown(x)"]
)
def test_bad_macros_are_errors(sql: str) -> None:
    with pytest.raises(MacroError):
        expand(sql, _ctx())


# --- the provisioning files -------------------------------------------------------------------


def test_datasource_is_the_read_only_login_with_the_timescaledb_flag() -> None:
    config = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "grafana-postgresql-datasource"
    assert source["uid"] == DATASOURCE_UID
    assert source["url"] == "timescaledb:5432"
    assert source["user"] == "pantau_reader"
    assert source["jsonData"]["database"] == "pantau"
    assert source["jsonData"]["sslmode"] == "disable"
    assert source["jsonData"]["postgresVersion"] == 1500
    assert source["jsonData"]["timescaledb"] is True
    assert source["secureJsonData"]["password"] == "$PANTAU_READONLY_PASSWORD"


def test_dashboard_provider_reads_the_mounted_folder() -> None:
    config = yaml.safe_load(PROVIDER_FILE.read_text(encoding="utf-8"))
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in compose["services"]["grafana"]["volumes"]
    }
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"


def test_dashboard_header() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "pantau-city"
    assert dashboard["title"] == "Kabupaten Pasuruan — live"
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["time"] == {"from": "now-6h", "to": "now"}
    assert dashboard["refresh"] == "30s"
    assert dashboard["timezone"] == "Asia/Jakarta"
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "kecamatan"
    assert variable["multi"] is True
    assert variable["includeAll"] is True
    assert variable["datasource"]["uid"] == DATASOURCE_UID


def test_every_panel_has_a_title_and_the_pantau_datasource() -> None:
    panels = _panels()
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    kinds = {p["type"] for p in panels}
    assert {"table", "timeseries", "stat", "geomap"} <= kinds
    for panel in panels:
        assert panel.get("title"), f"panel {panel['id']} has no title"
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == DATASOURCE_UID
            assert target["rawSql"].strip(), f"{panel['title']} has an empty query"
            assert target["format"] in {"table", "time_series"}


def test_panels_filter_by_kecamatan_where_they_can() -> None:
    unfiltered = {"Ingest — rejected payloads by reason"}
    for name, target in _targets():
        if name.split(" [")[0] in unfiltered:
            continue
        assert "$kecamatan" in target["rawSql"], f"{name} ignores the kecamatan variable"


def test_flood_level_colours() -> None:
    panel = _panel("Flood gauges now")
    (override,) = [
        o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Level"
    ]
    properties = {p["id"]: p["value"] for p in override["properties"]}
    (mapping,) = properties["mappings"]
    colours = {name: option["color"] for name, option in mapping["options"].items()}
    assert {k: colours[k] for k in LEVELS} == {
        "Normal": "green",
        "Waspada": "yellow",
        "Siaga": "orange",
        "Awas": "red",
    }


# --- every query against a real database -------------------------------------------------------

NOW = datetime.now(UTC).replace(microsecond=0)

# Newest water level per gauge, and the level the mini city's thresholds give it.
WATER = {
    "fg-welang-1": (2.1, "Siaga"),
    "fg-welang-2": (1.0, "Normal"),
    "fg-welang-3": (1.9, "Waspada"),
}


def _readings(city: City) -> list[Reading]:
    out: list[Reading] = []
    families = {s.id: s.family.value for s in city.sensors}
    for minutes in range(30, 0, -1):
        at = NOW - timedelta(minutes=minutes)
        for sensor_id, (level, _) in WATER.items():
            out.append(Reading.at(at, sensor_id, "water_level", level - minutes * 0.01 + 0.01))
            out.append(Reading.at(at, sensor_id, "rainfall", 0.2))
        # tc-bangil-2 stops reporting 20 minutes ago: it is silent (interval 60 s).
        for sensor_id in ("tc-bangil-1", *(("tc-bangil-2",) if minutes > 20 else ())):
            for metric, value in (
                ("count_motorcycle", 40.0),
                ("count_car", 9.0),
                ("count_bus", 1.0),
                ("count_truck", 2.0),
                ("avg_speed", 38.5),
                ("occupancy", 0.2),
            ):
                out.append(Reading.at(at, sensor_id, metric, value))
    street = {"sn-bangil-1": 0.0, "sn-bangil-2": 45.0}  # lamp power: sn-bangil-1 has failed
    for minutes in (12, 7, 2):
        at = NOW - timedelta(minutes=minutes)
        for sensor_id, power in street.items():
            out.append(Reading.at(at, sensor_id, "lamp_state", 1.0))
            out.append(Reading.at(at, sensor_id, "lamp_power", power))
            out.append(Reading.at(at, sensor_id, "pm25", 35.0))
    assert {r.sensor_id for r in out} == set(families)
    return out


@pytest.fixture
def seeded(city_db: str, conn: psycopg.Connection, mini_city: City) -> str:
    """The mini city with half an hour of readings of every family and one rejected payload."""
    prepare(conn)
    rejected = RejectedPayload(
        topic="pantau/up/fg-welang-1",
        payload=b"{not json",
        received_at=NOW - timedelta(minutes=5),
        rejection=Rejection(Reason.MALFORMED_JSON, "expected JSON"),
    )
    result = store(conn, _readings(mini_city), rejected=[rejected])
    assert result.inserted == result.staged
    refresh_rollups(city_db)
    return city_db


@pytest.fixture
def reader(seeded: str) -> Iterator[psycopg.Connection]:
    """A connection with the privileges of Grafana's read-only login."""
    with psycopg.connect(seeded, autocommit=True) as connection:
        connection.execute("SET ROLE pantau_readonly")
        yield connection


def _context(reader: psycopg.Connection, mode: Mode, kecamatan: list[str] | None) -> QueryContext:
    if kecamatan is None:  # "All": every value of the variable's own query
        kecamatan = [row[0] for row in reader.execute(_variable_query()).fetchall()]
    return QueryContext(
        time_from=NOW - timedelta(hours=6),
        time_to=NOW + timedelta(minutes=1),
        interval=timedelta(seconds=60),
        timescaledb=mode is Mode.TIMESCALEDB,
        variables={"kecamatan": kecamatan},
    )


def _run(
    reader: psycopg.Connection, mode: Mode, sql: str, kecamatan: list[str] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    with reader.cursor() as cur:
        cur.execute(expand(sql, _context(reader, mode, kecamatan)).encode())
        names = [column.name for column in cur.description or []]
        return names, cur.fetchall()


def test_variable_query_lists_the_kecamatan(reader: psycopg.Connection, mini_city: City) -> None:
    rows = reader.execute(_variable_query()).fetchall()
    assert [row[0] for row in rows] == sorted(k.name for k in mini_city.kecamatan)


@pytest.mark.parametrize(("name", "target"), _targets(), ids=[name for name, _ in _targets()])
def test_panel_query_runs_as_the_read_only_role(
    reader: psycopg.Connection, db_mode: Mode, name: str, target: dict[str, Any]
) -> None:
    names, rows = _run(reader, db_mode, target["rawSql"])
    assert rows, f"{name} returned no rows although every family has readings"
    if target["format"] == "time_series":
        assert "time" in names and "value" in names, names


def test_flood_table_names_the_level_of_each_gauge(
    reader: psycopg.Connection, db_mode: Mode
) -> None:
    sql = _panel("Flood gauges now")["targets"][0]["rawSql"]
    names, rows = _run(reader, db_mode, sql)
    table = [dict(zip(names, row, strict=True)) for row in rows]
    assert {r["Sensor"]: r["Level"] for r in table} == {
        sensor: level for sensor, (_, level) in WATER.items()
    }
    assert table[0]["Sensor"] == "fg-welang-1", "the most severe gauge comes first"
    assert table[0]["Water level"] == pytest.approx(WATER["fg-welang-1"][0])

    names, rows = _run(reader, db_mode, sql, kecamatan=["Bangil"])
    assert [dict(zip(names, row, strict=True))["Sensor"] for row in rows] == ["fg-welang-3"]


def test_lamps_and_silent_sensors(reader: psycopg.Connection, db_mode: Mode) -> None:
    names, rows = _run(reader, db_mode, _panel("Street lamps")["targets"][0]["rawSql"])
    assert dict(zip(names, rows[0], strict=True)) == {"Lamps on": 2, "Failed lamps": 1}

    names, rows = _run(reader, db_mode, _panel("Silent sensors")["targets"][0]["rawSql"])
    assert [dict(zip(names, row, strict=True))["Sensor"] for row in rows] == ["tc-bangil-2"]


def test_welang_panel_draws_thresholds(reader: psycopg.Connection, db_mode: Mode) -> None:
    threshold_sql = _panel("Water level — Kali Welang")["targets"][1]["rawSql"]
    _, rows = _run(reader, db_mode, threshold_sql, kecamatan=["Purwosari"])
    lines = {(metric, value) for _, metric, value in rows}
    assert lines == {
        ("Pos Duga Air Welang Purwosari Siaga", 2.0),
        ("Pos Duga Air Welang Purwosari Awas", 2.5),
    }
    assert len(rows) == 4, "each line spans the time range with two points"


def test_rejected_payloads_counted_by_reason(reader: psycopg.Connection, db_mode: Mode) -> None:
    sql = _panel("Ingest — rejected payloads by reason")["targets"][0]["rawSql"]
    names, rows = _run(reader, db_mode, sql)
    table = [dict(zip(names, row, strict=True)) for row in rows]
    assert [(r["Reason"], r["Distinct payloads"], r["Times seen"]) for r in table] == [
        ("malformed_json", 1, 1)
    ]
