"""The Grafana provisioning files and the control-room dashboards.

The files are checked as Grafana reads them (unique panel ids, a known schema version, every data
source reference on the provisioned uid, every variable defined). Then every variable, panel and
annotation query of every dashboard is expanded the way Grafana does (``grafana_macros``) for
several time ranges and both values of the data source's TimescaleDB flag, and run as the
read-only role against a real migrated database holding the mini city with three days of
simulated readings, rejected payloads and the alert service's tables: none may fail, and over a
range with data every panel must return rows.

``$__timeGroup`` becomes ``time_bucket`` only with the TimescaleDB flag on, which plain
PostgreSQL lacks: with the flag off every query works in both storage modes, with it on only in
TimescaleDB mode (checked here too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from statistics import median
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest
import yaml

from pantau import ispu
from pantau.city import City
from pantau.cli.grafana import DASHBOARD_MOUNT, KECAMATAN_LAYER
from pantau.db import registry
from pantau.db.migrate import Mode, current_mode, migrate, refresh_rollups
from pantau.db.store import RejectedPayload, prepare, store
from pantau.payload import Reading, Reason, Rejection
from pantau.settings import StorageSettings
from pantau.tools.scratch import temporary_database
from simulators.fleet import Fleet
from tests.deploy.grafana_macros import (
    MacroError,
    QueryContext,
    expand,
    format_interval,
    panel_interval,
    variable_names,
)

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DATASOURCE_FILE = GRAFANA / "provisioning" / "datasources" / "pantau.yaml"
PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "pantau.yaml"
DASHBOARDS = sorted((GRAFANA / "dashboards").rglob("*.json"))
DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "pantau"}
# Dashboard JSON schema versions of Grafana 10.0 to 11.6 (the compose file runs 11.6).
KNOWN_SCHEMA_VERSIONS = range(38, 42)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _by_uid(uid: str) -> dict[str, Any]:
    (dashboard,) = [d for d in map(_load, DASHBOARDS) if d["uid"] == uid]
    return dashboard


def _all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return panels


def _panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    matches = [p for p in _all_panels(dashboard) if p.get("title") == title]
    assert len(matches) == 1, f"expected one panel titled {title!r}"
    return matches[0]


def _sql(panel: dict[str, Any], ref: str = "A") -> str:
    (target,) = [t for t in panel["targets"] if t["refId"] == ref]
    return str(target["rawSql"])


def _datasource_refs(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from _datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_refs(item)


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query if isinstance(query, str) else query["rawSql"])


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(name, SQL, panel) of every panel and annotation query (panel None for annotations)."""
    out: list[tuple[str, str, dict[str, Any] | None]] = []
    for panel in _all_panels(dashboard):
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} [{target['refId']}]", target["rawSql"], panel))
    for annotation in dashboard["annotations"]["list"]:
        out.append((f"annotation {annotation['name']}", annotation["target"]["rawSql"], None))
    return out


# --- the macro expansion itself ---------------------------------------------------------------

FROM = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
TO = datetime(2025, 1, 2, 9, 4, 5, 500_000, tzinfo=UTC)


def _ctx(*, timescaledb: bool = False, interval_s: float = 60) -> QueryContext:
    return QueryContext(
        time_from=FROM,
        time_to=TO,
        interval=timedelta(seconds=interval_s),
        timescaledb=timescaledb,
        variables={"kecamatan": ["Bangil", "Pohjentrek"], "rollup": "readings_1h"},
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(90, "1m"), (60, "1m"), (59, "59s"), (0.5, "500ms"), (7200, "2h"), (86_400 * 3, "3d")],
)
def test_interval_takes_its_largest_whole_unit(seconds: float, text: str) -> None:
    assert format_interval(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(
    ("range_s", "interval_s"),
    [(3600, 5), (6 * 3600, 20), (2 * 86_400, 120), (7 * 86_400, 600), (30 * 86_400, 1800)],
)
def test_panel_interval_is_rounded_like_grafana(range_s: int, interval_s: int) -> None:
    assert panel_interval(FROM, FROM + timedelta(seconds=range_s)) == timedelta(seconds=interval_s)


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
    assert expand("$__unixEpochNanoFilter(e)", ctx) == (
        "e >= 1735787045000000000 AND e <= 1735808645500000000"
    )
    assert expand("$__unixEpochNanoFrom() $__unixEpochNanoTo()", ctx) == (
        "1735787045000000000 1735808645500000000"
    )
    assert expand("$__unixEpochGroup(e, '1h')", ctx) == "floor((e)/3600)*3600"
    assert expand("$__unixEpochFrom() $__unixEpochTo()", ctx) == "1735787045 1735808645"
    assert expand("$__interval_ms $__interval", _ctx(interval_s=90)) == "90000 1m"


def test_variables_are_quoted_as_grafana_quotes_them() -> None:
    ctx = _ctx()
    # Multi-value: a list of quoted literals; single-value: the bare text (a table name here).
    assert expand("k IN ($kecamatan) OR k IN (${kecamatan}) FROM $rollup r", ctx) == (
        "k IN ('Bangil','Pohjentrek') OR k IN ('Bangil','Pohjentrek') FROM readings_1h r"
    )
    assert expand("k = ${kecamatan:sqlstring}", ctx) == "k = 'Bangil','Pohjentrek'"
    assert variable_names("$a ${b} ${c:raw} $__interval $__timeFilter(t)") == {"a", "b", "c"}


@pytest.mark.parametrize(
    "sql", ["$__notAMacro(t)", "$__timeGroup(t)", "$__timeGroup(t, 'soon')", "$unknown(x)"]
)
def test_bad_macros_are_errors(sql: str) -> None:
    with pytest.raises(MacroError):
        expand(sql, _ctx())


# --- the provisioning files -------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return data


def test_datasource_is_the_read_only_login_addressed_from_the_environment() -> None:
    config = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert {"type": source["type"], "uid": source["uid"]} == DATASOURCE
    assert source["user"] == "pantau_reader"
    assert source["url"] == "$PANTAU_GRAFANA_DB_ADDRESS", "the address must not be hard-wired"
    assert source["jsonData"]["database"] == "$PANTAU_GRAFANA_DB_NAME"
    assert source["secureJsonData"]["password"] == "$PANTAU_READONLY_PASSWORD"
    assert source["jsonData"]["sslmode"] == "disable"


def test_timescaledb_flag_is_a_boolean_matching_the_provisioned_database() -> None:
    (source,) = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))["datasources"]
    flag = source["jsonData"]["timescaledb"]
    # Grafana expands environment variables in jsonData to strings, and the PostgreSQL data
    # source decodes the flag as a JSON boolean: a string would break every query.
    assert flag is True or flag is False
    image = _compose()["services"]["timescaledb"]["image"]
    assert flag is ("timescale/timescaledb" in image)


def test_grafana_service_sets_what_the_datasource_reads() -> None:
    lines = DATASOURCE_FILE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", text))
    assert used == {
        "PANTAU_GRAFANA_DB_ADDRESS",
        "PANTAU_GRAFANA_DB_NAME",
        "PANTAU_READONLY_PASSWORD",
    }
    grafana = _compose()["services"]["grafana"]
    assert used <= set(grafana["environment"])
    home = PurePosixPath(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert GRAFANA / "dashboards" / home.relative_to(DASHBOARD_MOUNT) in DASHBOARDS


def _providers() -> list[dict[str, Any]]:
    providers: list[dict[str, Any]] = yaml.safe_load(PROVIDER_FILE.read_text(encoding="utf-8"))[
        "providers"
    ]
    return providers


def test_every_dashboard_belongs_to_one_provider_folder() -> None:
    providers = _providers()
    assert len({p["folderUid"] for p in providers}) == len(providers)
    assert len({p["name"] for p in providers}) == len(providers)
    owned: list[Path] = []
    for provider in providers:
        assert provider["type"] == "file"
        assert provider["folder"] and provider["folderUid"]
        relative = PurePosixPath(provider["options"]["path"]).relative_to(DASHBOARD_MOUNT)
        files = sorted((GRAFANA / "dashboards" / relative).glob("*.json"))
        assert files, f"provider {provider['name']} has no dashboards"
        owned += files
    assert sorted(owned) == DASHBOARDS
    compose = _compose()
    mounts = dict(v.split(":")[1::-1] for v in compose["services"]["grafana"]["volumes"])
    assert mounts[str(DASHBOARD_MOUNT)] == "./grafana/dashboards"


def test_no_alert_rules_live_in_grafana() -> None:
    # One source of truth: alerts come from the alert service's tables.
    assert not (GRAFANA / "provisioning" / "alerting").exists()
    for path in DASHBOARDS:
        for panel in _all_panels(_load(path)):
            assert "alert" not in panel, f"{path.name}: {panel['title']} has a Grafana alert rule"


# --- the dashboard files ----------------------------------------------------------------------

DASHBOARD_IDS = [p.stem for p in DASHBOARDS]


def test_dashboards_are_the_five_of_the_control_room() -> None:
    uids = sorted(_load(p)["uid"] for p in DASHBOARDS)
    assert uids == sorted(
        ["pantau-city", "pantau-flood", "pantau-traffic", "pantau-street", "pantau-platform"]
    )


@pytest.mark.parametrize("path", DASHBOARDS, ids=DASHBOARD_IDS)
def test_dashboard_is_valid_grafana_json(path: Path) -> None:
    dashboard = _load(path)
    assert dashboard["schemaVersion"] in KNOWN_SCHEMA_VERSIONS
    assert dashboard["timezone"] == "Asia/Jakarta"
    assert dashboard["title"] and re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert "id" not in dashboard or dashboard["id"] is None
    panels = _all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    for panel in panels:
        assert panel.get("title"), f"panel {panel['id']} has no title"
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(set(refs)) == len(refs), f"{panel['title']}: duplicate refIds"
        for target in panel.get("targets", []):
            assert target["rawSql"].strip() and target.get("rawQuery") is True
            assert target["format"] in {"table", "time_series"}
    for ref in _datasource_refs(dashboard):
        assert ref == DATASOURCE, f"{path.name}: a data source reference is {ref!r}"


def _published_schema() -> dict[str, Any]:
    """Grafana's dashboard schema (tests/deploy/grafana-schema/ORIGIN.md), less two gaps of the
    published types: the target of an annotation query is typed as the built-in Grafana data
    source's, and a query variable's `definition` (which Grafana itself writes) is missing."""
    schema = _load(Path(__file__).parent / "grafana-schema" / "dashboard.schema.json")
    definitions = schema["definitions"]
    definitions["AnnotationQuery"]["properties"]["target"] = {"type": "object"}
    definitions["VariableModel"]["properties"]["definition"] = {"type": "string"}
    return schema


@pytest.mark.parametrize("path", DASHBOARDS, ids=DASHBOARD_IDS)
def test_dashboard_follows_grafanas_published_schema(path: Path) -> None:
    validator = jsonschema.Draft7Validator(_published_schema())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in validator.iter_errors(_load(path))
    ]
    assert errors == []


def test_the_schema_check_catches_a_misspelt_field() -> None:
    dashboard = _by_uid("pantau-flood")
    dashboard["panels"][0]["gridPos"]["width"] = 12
    dashboard["refesh"] = "1m"
    validator = jsonschema.Draft7Validator(_published_schema())
    assert len(list(validator.iter_errors(dashboard))) == 2


@pytest.mark.parametrize("path", DASHBOARDS, ids=DASHBOARD_IDS)
def test_every_variable_is_defined(path: Path) -> None:
    dashboard = _load(path)
    variables = dashboard["templating"]["list"]
    defined = [v["name"] for v in variables]
    assert len(set(defined)) == len(defined)
    assert {"kecamatan", "river", "sensor"} <= set(defined)
    for index, variable in enumerate(variables):
        if variable["type"] == "query":
            # A variable may refer to those defined before it only (Grafana resolves in order).
            used = variable_names(_variable_query(variable))
            assert used <= set(defined[:index]), f"{variable['name']} uses {used}"
    texts = [sql for _, sql, _ in _queries(dashboard)]
    texts += [
        p[key] for p in _all_panels(dashboard) for key in ("title", "description") if key in p
    ]
    for text in texts:
        assert variable_names(text) <= set(defined), text[:80]
    for panel in _all_panels(dashboard):
        if "repeat" in panel:
            (variable,) = [v for v in variables if v["name"] == panel["repeat"]]
            assert variable["multi"], f"{panel['title']} repeats by a single-value variable"


@pytest.mark.parametrize("path", DASHBOARDS, ids=DASHBOARD_IDS)
def test_series_read_the_rollups_not_raw_readings(path: Path) -> None:
    for name, sql, _ in _queries(_load(path)):
        assert not re.search(r"\bFROM\s+readings\b(?!_)", sql), f"{name} reads raw readings"
        if "$__timeGroup" in sql and "rejected_payloads" not in sql:
            assert "$rollup" in sql, f"{name} groups by time without the range's rollup"


@pytest.mark.parametrize("path", DASHBOARDS, ids=DASHBOARD_IDS)
def test_alert_changes_are_annotations(path: Path) -> None:
    (annotation,) = _load(path)["annotations"]["list"]
    assert annotation["datasource"] == DATASOURCE
    assert "alert_events" in annotation["target"]["rawSql"]


def test_city_map_has_the_offline_kecamatan_layer_and_sensor_markers() -> None:
    geomap = _panel(_by_uid("pantau-city"), "Sensors")
    assert geomap["type"] == "geomap"
    layers = {layer["type"]: layer for layer in geomap["options"]["layers"]}
    assert layers["geojson"]["config"]["src"].endswith("/city/kecamatan")
    location = layers["markers"]["location"]
    assert (location["latitude"], location["longitude"]) == ("latitude", "longitude")
    assert layers["markers"]["config"]["style"]["color"]["field"] == "Status"


def test_flood_panel_repeats_by_river_with_threshold_bands() -> None:
    panel = _panel(_by_uid("pantau-flood"), "Water level — $river")
    assert panel["repeat"] == "river"
    styles = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in panel["fieldConfig"]["overrides"]
    }
    colours = {k: v["color"]["fixedColor"] for k, v in styles.items() if "color" in v}
    assert colours == {"/ Waspada$/": "yellow", "/ Siaga$/": "orange", "/ Awas$/": "red"}
    assert "current_flood_thresholds" in _sql(panel, "B")
    # The forecast, in a line of its own style, from the view the gauge view reads too.
    assert "flood_forecast" in _sql(panel, "C")
    assert styles["/ forecast$/"]["custom.lineStyle"]["fill"] == "dot"
    assert _by_uid("pantau-flood")["time"]["to"] == "now+3h", "room for the forecast"


def test_air_quality_bands_are_the_ispu_breakpoints() -> None:
    street = _by_uid("pantau-street")
    for title, metric in (("PM2.5", "pm25"), ("PM10", "pm10")):
        steps = _panel(street, title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps[1:]] == list(ispu.BREAKPOINTS_UG_M3[metric][1:5])


# --- every query against a real database -------------------------------------------------------

# Set when the module's database is seeded: the dashboards compare with the server's now(), so
# the seed must be relative to the time the queries run, not to when the suite was collected.
NOW = datetime.now(UTC).replace(microsecond=0)
HISTORY = timedelta(days=3)
SILENT = "tc-bangil-2"  # stops reporting 20 minutes before NOW
FAILED_LAMP = "sn-bangil-1"  # switched on, drawing no power


def _simulated(city: City) -> list[Reading]:
    fleet = Fleet(city, seed=7)
    start, end = (NOW - HISTORY).timestamp(), NOW.timestamp()
    out: list[Reading] = []
    newest: dict[str, float] = {}
    for observation in fleet.observations(start, end):
        if observation.sensor_id == SILENT and observation.t > end - 20 * 60:
            continue
        at = datetime.fromtimestamp(observation.t, UTC)
        for metric, value in observation.values.items():
            out.append(Reading.at(at, observation.sensor_id, metric, value))
        newest[observation.sensor_id] = observation.t
    at = datetime.fromtimestamp(newest[FAILED_LAMP] + 1, UTC)
    out += [
        Reading.at(at, FAILED_LAMP, "lamp_state", 1),
        Reading.at(at, FAILED_LAMP, "lamp_power", 0),
    ]
    return out


def _seed_alerts(conn: psycopg.Connection) -> None:
    """What the alert service would have written: one gauge at Siaga and rising, an air-quality
    alert, and a resolved congestion alert, with their changes."""
    minutes = [NOW - timedelta(minutes=m) for m in (50, 30, 10)]
    alerts = [
        ("fg-welang-1", "flood_level", 2, "open", minutes[0], minutes[2], None, 3, NOW + timedelta(minutes=40)),
        ("sn-bangil-2", "air_quality", 1, "open", minutes[1], minutes[1], None, None, None),
        ("tc-bangil-1", "congestion", 1, "resolved", minutes[0], minutes[2], minutes[2], None, None),
    ]  # fmt: skip
    for sensor, rule, level, state, opened, updated, resolved, p_level, p_at in alerts:
        (alert_id,) = conn.execute(
            "INSERT INTO alerts (sensor_id, rule, level, state, opened_at, updated_at, resolved_at,"
            " value, predicted_level, predicted_at, message, message_en)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 1.0, %s, %s, %s, %s) RETURNING id",
            [sensor, rule, level, state, opened, updated, resolved, p_level, p_at,
             f"{rule} tingkat {level}", f"{rule} level {level}"],
        ).fetchone()  # type: ignore[misc]  # fmt: skip
        changes = [("opened", 1, None, opened)]
        if level > 1:
            changes.append(("escalated", level, 1, updated))
        if state == "resolved":
            changes.append(("resolved", level, level, resolved))
        for change, to, previous, at in changes:
            conn.execute(
                "INSERT INTO alert_events (alert_id, sensor_id, rule, change, level, previous_level,"
                " observed_at, message, message_en) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [alert_id, sensor, rule, change, to, previous, at, f"{change}", f"{change}"],
            )
    for sensor, level, rate, next_at in (
        ("fg-welang-1", 2, 0.3, NOW + timedelta(minutes=40)),
        ("fg-welang-2", 0, 0.0, None),
        ("fg-welang-3", 1, 0.05, None),
    ):
        conn.execute(
            "INSERT INTO gauge_status (sensor_id, level, since, observed_at, value, rate_m_per_h,"
            " next_level, next_level_at) VALUES (%s, %s, %s, %s, 1.0, %s, %s, %s)",
            [sensor, level, minutes[0], NOW, rate, None if next_at is None else level + 1, next_at],
        )


@dataclass(frozen=True)
class Seeded:
    url: str
    mode: Mode
    readings: int


@pytest.fixture(scope="module")
def seeded(admin_url: str, mini_city: City) -> Iterator[Seeded]:
    """A migrated database with the mini city, three days of simulated readings, a rejected
    payload and the alert service's tables filled; shared by the module (it only reads)."""
    global NOW  # noqa: PLW0603
    NOW = datetime.now(UTC).replace(microsecond=0)
    with temporary_database(admin_url, prefix="pantau_grafana") as url:
        migrate(url, StorageSettings(raw_retention=timedelta(days=7), premake_partitions=2))
        readings = _simulated(mini_city)
        with psycopg.connect(url, autocommit=True) as conn:
            registry.load_city(conn, mini_city)
            prepare(conn)
            rejected = RejectedPayload(
                topic="pantau/up/fg-welang-1",
                payload=b"{not json",
                received_at=NOW - timedelta(minutes=5),
                rejection=Rejection(Reason.MALFORMED_JSON, "expected JSON"),
            )
            for start in range(0, len(readings), 50_000):
                batch = readings[start : start + 50_000]
                result = store(conn, batch, rejected=[rejected] if start == 0 else [])
                assert result.inserted == len(batch)
            _seed_alerts(conn)
            mode = current_mode(conn)
        assert mode is not None
        refresh_rollups(url)
        if mode is Mode.TIMESCALEDB:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "SELECT compress_chunk(c) FROM show_chunks('readings', older_than => %s) c",
                    [timedelta(days=1)],
                )
        yield Seeded(url=url, mode=mode, readings=len(readings))


@pytest.fixture(scope="module")
def reader(seeded: Seeded) -> Iterator[psycopg.Connection]:
    """A connection with the privileges of Grafana's read-only login."""
    with psycopg.connect(seeded.url, autocommit=True) as connection:
        connection.execute("SET ROLE pantau_readonly")
        yield connection


@dataclass(frozen=True)
class Range:
    name: str
    start: timedelta  # before NOW
    end: timedelta
    has_data: bool


RANGES = [
    Range("last-1h", timedelta(hours=1), timedelta(0), True),
    Range("last-6h", timedelta(hours=6), timedelta(0), True),
    Range("last-2d", timedelta(days=2), timedelta(0), True),
    Range("last-7d", timedelta(days=7), timedelta(0), True),
    Range("last-30d", timedelta(days=30), timedelta(0), True),
    Range("last-1y", timedelta(days=365), timedelta(0), True),
    Range("empty-past", timedelta(days=400), timedelta(days=390), False),
]


class Grafana:
    """Runs a dashboard's queries as Grafana would for one time range and flag."""

    def __init__(
        self,
        reader: psycopg.Connection,
        dashboard: dict[str, Any],
        *,
        span: Range,
        flag: bool,
        chosen: dict[str, list[str]] | None = None,
    ) -> None:
        self.reader = reader
        self.dashboard = dashboard
        self.time_from = NOW - span.start
        self.time_to = NOW - span.end
        self.flag = flag
        self.variables: dict[str, list[str] | str] = {}
        for variable in dashboard["templating"]["list"]:
            name = variable["name"]
            # What the operator picked, else "All" (or the query's single value).
            self.variables[name] = (chosen or {}).get(name) or self._resolve(variable)

    def context(self, overrides: dict[str, list[str] | str] | None = None) -> QueryContext:
        return QueryContext(
            time_from=self.time_from,
            time_to=self.time_to,
            interval=panel_interval(self.time_from, self.time_to),
            timescaledb=self.flag,
            variables={**self.variables, **(overrides or {})},
        )

    def _resolve(self, variable: dict[str, Any]) -> list[str] | str:
        if variable["type"] == "custom":
            return str(variable["current"]["value"])
        names, rows = self.run(_variable_query(variable))
        column = names.index("__value") if "__value" in names else 0
        values = [str(row[column]) for row in rows]
        if variable.get("multi") or variable.get("includeAll"):
            return values or [""]  # "All" of nothing: Grafana sends an empty value
        assert len(values) == 1, f"{variable['name']} gave {values}"
        return values[0]

    def run(
        self, sql: str, overrides: dict[str, list[str] | str] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self.reader.cursor() as cur:
            cur.execute(expand(sql, self.context(overrides)).encode())
            return [c.name for c in cur.description or []], cur.fetchall()

    def run_panel(self, sql: str, panel: dict[str, Any] | None) -> list[list[dict[str, Any]]]:
        """Rows of the query, once per copy of the panel (repeated panels have several)."""
        copies: list[dict[str, list[str] | str]] = [{}]
        if panel is not None and "repeat" in panel:
            values = self.variables[panel["repeat"]]
            assert isinstance(values, list)
            copies = [{panel["repeat"]: [value]} for value in values]
        out = []
        for overrides in copies:
            names, rows = self.run(sql, overrides)
            out.append([dict(zip(names, row, strict=True)) for row in rows])
        return out

    def table(self, title: str, ref: str = "A") -> list[dict[str, Any]]:
        panel = _panel(self.dashboard, title)
        (rows,) = self.run_panel(_sql(panel, ref), None)
        return rows


@pytest.mark.parametrize("span", RANGES, ids=[r.name for r in RANGES])
@pytest.mark.parametrize("path", DASHBOARDS, ids=DASHBOARD_IDS)
def test_every_query_runs_as_the_read_only_role(
    reader: psycopg.Connection, seeded: Seeded, path: Path, span: Range
) -> None:
    # The flag off works in both modes; on (time_bucket) only in TimescaleDB mode.
    for flag in (False, True) if seeded.mode is Mode.TIMESCALEDB else (False,):
        _run_all(Grafana(reader, _load(path), span=span, flag=flag), span)


def _run_all(grafana: Grafana, span: Range) -> None:
    failures, empty = [], []
    for name, sql, panel in _queries(grafana.dashboard):
        try:
            copies = grafana.run_panel(sql, panel)
        except (psycopg.Error, MacroError) as error:
            failures.append(f"{name}: {error}")
            continue
        if span.has_data and not all(copies):
            empty.append(name)
        target = next((t for t in (panel or {}).get("targets", []) if t["rawSql"] == sql), None)
        if target and target["format"] == "time_series":
            for rows in copies:
                assert not rows or {"time", "value"} <= set(rows[0]), f"{name}: {list(rows[0])}"
    assert not failures, f"flag {grafana.flag}:\n" + "\n".join(failures)
    assert not empty, f"flag {grafana.flag}: no rows over a range with data: {empty}"


def test_flag_must_match_the_storage_mode(reader: psycopg.Connection, seeded: Seeded) -> None:
    if seeded.mode is Mode.TIMESCALEDB:
        pytest.skip("TimescaleDB mode: both flag values work (test_every_query_runs...)")
    grafana = Grafana(reader, _by_uid("pantau-traffic"), span=RANGES[1], flag=True)
    with pytest.raises(psycopg.errors.UndefinedFunction, match="time_bucket"):
        grafana.table("Motorcycles per hour")


@pytest.mark.parametrize(
    ("span", "rollup"),
    [(RANGES[1], "readings_1m"), (RANGES[4], "readings_1h"), (RANGES[5], "readings_1d")],
)
def test_long_ranges_read_coarser_rollups(
    reader: psycopg.Connection, span: Range, rollup: str
) -> None:
    grafana = Grafana(reader, _by_uid("pantau-flood"), span=span, flag=False)
    assert grafana.variables["rollup"] == rollup
    assert grafana.variables["bucket_s"] == {"readings_1m": "60", "readings_1h": "3600"}.get(
        rollup, "86400"
    )


def _grafana(
    reader: psycopg.Connection, uid: str, span: Range = RANGES[1], **chosen: list[str]
) -> Grafana:
    return Grafana(reader, _by_uid(uid), span=span, flag=False, chosen=chosen)


def test_choosing_a_kecamatan_narrows_rivers_sensors_and_panels(
    reader: psycopg.Connection,
) -> None:
    flood = _grafana(reader, "pantau-flood", kecamatan=["Bangil"])
    assert flood.variables["river"] == ["Welang"]
    assert flood.variables["sensor"] == ["fg-welang-3"]
    assert [g["Gauge"] for g in flood.table("Gauges now")] == ["Pos Duga Air Welang Bangil"]
    street = _grafana(reader, "pantau-street", kecamatan=["Purwosari"])
    assert street.variables["sensor"] == [""], "no street node there: Grafana sends ''"
    assert street.table("Lamps now") == []


def test_city_headline_figures(reader: psycopg.Connection) -> None:
    city = _grafana(reader, "pantau-city")
    assert city.table("Gauges at Siaga or worse") == [{"Gauges at Siaga or worse": 1}]
    assert city.table("Lamps working") == [{"Lamps working": pytest.approx(0.5)}]
    (congestion,) = city.table("Congestion")
    assert 0 <= congestion["Mean occupancy"] <= 1 and congestion["Congestion alerts"] == 0
    alerts = city.table("Active alerts")
    assert [(a["Rule"], a["Severity"]) for a in alerts] == [
        ("flood_level", "Siaga"),
        ("air_quality", "Tidak Sehat"),
    ]
    sensors = {row["Sensor"]: row for row in city.table("Sensors")}
    assert sensors["fg-welang-1"]["Status"] == 2
    assert sensors[SILENT]["Status"] == -1, "an offline sensor is grey"
    assert sensors["sn-bangil-2"]["Status"] == 1
    assert {row["latitude"] is not None for row in sensors.values()} == {True}


def test_air_quality_follows_the_ispu_table(reader: psycopg.Connection) -> None:
    rows = _grafana(reader, "pantau-street").table("Air quality now (ISPU)")
    assert len(rows) == 2
    for row in rows:
        expected = max(ispu.index("pm25", row["PM2.5"]), ispu.index("pm10", row["PM10"]))
        assert float(row["ISPU"]) == pytest.approx(expected)
    worst = _grafana(reader, "pantau-city").table("Air quality (worst ISPU)")
    assert float(worst[0]["ISPU"]) == pytest.approx(max(float(r["ISPU"]) for r in rows))
    lamps = _grafana(reader, "pantau-street").table("Lamps now")
    assert lamps[0]["Lamp"] == "Failed" and lamps[0]["Power"] == 0


def test_flood_gauges_levels_and_forecast(reader: psycopg.Connection) -> None:
    flood = _grafana(reader, "pantau-flood")
    gauges = flood.table("Gauges now")
    assert [(g["Gauge"].split()[-1], g["Level"]) for g in gauges] == [
        ("Purwosari", 2),
        ("Bangil", 1),
        ("Pohjentrek", 0),
    ]
    (rising,) = flood.table("Rising: time to the next level")
    assert rising["Next level"] == 3
    assert 35 * 60 < float(rising["In"]) <= 40 * 60
    changes = flood.table("Alert changes")
    assert [c["Change"] for c in changes] == ["escalated", "opened"]
    lines = flood.table("Water level — $river", "B")
    assert len(lines) == 3 * 3 * 2, "three levels of three gauges, two points each"
    # Siaga at 2.0 m rising 0.3 m/h, Awas (2.5 m) expected in 40 minutes: the line starts at
    # 2.5 - 0.3 * 40/60 = 2.3 m now.
    forecast = flood.table("Water level — $river", "C")
    assert [(row["metric"], row["time"], row["value"]) for row in forecast] == [
        ("Pos Duga Air Welang Purwosari forecast", NOW, pytest.approx(2.3)),
        ("Pos Duga Air Welang Purwosari forecast", NOW + timedelta(minutes=40), 2.5),
    ]


def test_platform_health(reader: psycopg.Connection, seeded: Seeded) -> None:
    platform = _grafana(reader, "pantau-platform")
    offline = platform.table("Sensors offline")
    assert [row["Sensor"] for row in offline] == [SILENT]
    missed = platform.table("Missed reports")
    assert missed[0]["Sensor"] == SILENT and 15 <= missed[0]["Missed"] <= 25
    assert [
        (r["Reason"], r["Distinct payloads"], r["Times seen"])
        for r in platform.table("Rejections by reason")
    ] == [("malformed_json", 1, 1)]
    latency = {row["Family"]: row for row in platform.table("Commit latency")}
    assert set(latency) == {"flood_gauge", "traffic_counter", "street_node"}
    (database,) = platform.table("Database")
    assert database["Storage mode"] == seeded.mode.value
    assert database["Database"] > 0 and database["Raw readings"] > 0
    if seeded.mode is Mode.POSTGRES:
        assert database["Compression ratio"] is None, "N/A in plain PostgreSQL mode"
    else:
        assert database["Compression ratio"] > 1, "older chunks are compressed"
    # Rates: three gauges report three metrics a minute.
    series = platform.run_panel(_sql(_panel(platform.dashboard, "Readings per second")), None)[0]
    flood = [float(r["value"]) for r in series if r["metric"] == "flood_gauge"]
    assert median(flood) == pytest.approx(3 * 3 / 60, rel=0.1)


def test_traffic_volumes_and_congestion_grid(reader: psycopg.Connection) -> None:
    traffic = _grafana(reader, "pantau-traffic", RANGES[2])
    grid_sql = _sql(_panel(traffic.dashboard, "Congestion by hour and weekday — $sensor"))
    (grid,) = traffic.run_panel(grid_sql, None)
    assert [row["Day"] for row in grid] == [
        "Senin", "Selasa", "Rabu", "Kamis", "Jumat", "Sabtu", "Minggu"
    ]  # fmt: skip
    filled = [v for row in grid for k, v in row.items() if k != "Day" and v is not None]
    assert len(filled) >= 24, "two days of data fill at least a day of hours"
    assert all(0 <= float(v) <= 1 for v in filled)
    classes = {row["metric"] for row in traffic.table("Cars, buses and trucks per hour")}
    assert classes == {"car", "bus", "truck"}


def test_map_layer_is_geojson_a_browser_on_grafana_may_read(
    http: httpx.Client, mini_city: City
) -> None:
    """The city map's kecamatan layer: Grafana's browser fetches it from the API, cross-origin."""
    response = http.get(KECAMATAN_LAYER, headers={"Origin": "http://localhost:3000"})
    if response.status_code == 404:
        pytest.skip(f"the API does not serve {KECAMATAN_LAYER} yet")
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in {"*", "http://localhost:3000"}
    collection = response.json()
    assert collection["type"] == "FeatureCollection"
    points = sorted(
        (round(lon, 6), round(lat, 6))
        for lon, lat in (f["geometry"]["coordinates"] for f in collection["features"])
    )
    assert points == sorted((round(k.lon, 6), round(k.lat, 6)) for k in mini_city.kecamatan)
