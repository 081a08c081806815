"""The live city page and the control page in a real headless Chromium, served by the real API."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from pantau.city import City, FloodLevel, Sensor
from pantau.cli import keys
from pantau.db import store
from pantau.payload import Reading
from pantau.settings import MqttSettings, NotifySettings
from simulators.config import RunConfig
from simulators.fleet import Fleet
from simulators.runner import Simulation
from simulators.scenarios import FloodScenario, get_scenario
from tests.fixtures.alerts import AlertsFactory
from tests.fixtures.api import api_settings, serve
from tests.fixtures.browser import AXE, PageWatch
from tests.fixtures.flood import Flood
from tests.fixtures.ingest import IngestFactory
from tests.fixtures.operators import AddAlert
from tests.ingest.helpers import publish_all

# Set to a folder to save screenshots of the pages (the README shows docs/screenshots/).
SCREENSHOTS = os.environ.get("PANTAU_TEST_SCREENSHOTS")


def _open(page: Any, url: str) -> None:
    page.goto(url, wait_until="load")
    page.wait_for_selector("#sensors tbody tr[data-sensor]", timeout=10_000)


def _assert_clean(watch: PageWatch) -> None:
    assert watch.outside_requests == [], "the page reached outside the machine"
    assert watch.page_errors == []
    assert watch.console_errors == []


def test_city_page_lists_every_sensor_without_leaving_the_machine(
    api_url: str, page: Any, page_watch: PageWatch, mini_city: City
) -> None:
    _open(page, f"{api_url}/")
    shown = page.eval_on_selector_all(
        "#sensors tbody tr[data-sensor]", "rows => rows.map(r => r.dataset.sensor)"
    )
    assert sorted(shown) == sorted(s.id for s in mini_city.sensors)
    # One map symbol per sensor, and the gauges of every river.
    marks = page.eval_on_selector_all(
        "#map .sensor-mark[data-sensor]", "m => m.map(x => x.dataset.sensor)"
    )
    assert sorted(marks) == sorted(s.id for s in mini_city.sensors)
    gauges = page.eval_on_selector_all(".gauge[data-sensor]", "g => g.map(x => x.dataset.sensor)")
    assert sorted(gauges) == sorted(s.id for s in mini_city.sensors if s.river)
    assert page.evaluate("document.documentElement.lang") == "id"
    _assert_clean(page_watch)


def test_language_switch_renders_english(api_url: str, page: Any, page_watch: PageWatch) -> None:
    _open(page, f"{api_url}/")
    assert page.locator("#sensors-title").inner_text() == "Semua sensor"
    page.click("#lang")
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.locator("#sensors-title").inner_text() == "All sensors"
    _assert_clean(page_watch)


def _serious_violations(page: Any) -> list[dict[str, Any]]:
    """What axe finds serious or critical on the page as it is now."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => JSON.stringify(await axe.run(document))")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in json.loads(result)["violations"]
        if v["impact"] in {"serious", "critical"}
    ]


@pytest.mark.parametrize("path", ["/", "/control"])
def test_pages_have_no_serious_accessibility_violations(
    api_url: str, page: Any, page_watch: PageWatch, path: str
) -> None:
    _open(page, f"{api_url}{path}")
    assert _serious_violations(page) == []
    _assert_clean(page_watch)


def _rivers(city: City) -> dict[str, list[Sensor]]:
    rivers: dict[str, list[Sensor]] = {}
    for sensor in sorted(city.sensors, key=lambda s: (s.river_km or 0, s.id)):
        if sensor.river:
            rivers.setdefault(sensor.river, []).append(sensor)
    return rivers


def test_the_map_draws_every_river_through_its_gauges_in_order(
    api_url: str, page: Any, page_watch: PageWatch, mini_city: City
) -> None:
    _open(page, f"{api_url}/")
    page.wait_for_selector("#map path.river-line[data-river]")
    drawn = page.eval_on_selector_all(
        "#map path.river-line",
        "paths => paths.map(p => [p.dataset.river, p.dataset.gauges, p.dataset.points, "
        "p.getAttribute('d')])",
    )
    rivers = _rivers(mini_city)
    assert sorted(river for river, *_ in drawn) == sorted(rivers)
    for river, gauges, points, path in drawn:
        along = rivers[river]
        assert gauges.split() == [g.id for g in along], "upstream first, by river_km"
        assert points == ";".join(f"{g.lat},{g.lon}" for g in along)
        assert path.count("L") == len(along) - 1, "one segment between each pair of gauges"
    # The direction of flow on every segment, and a legend for every symbol on the map.
    segments = sum(len(g) - 1 for g in rivers.values())
    assert page.locator("#map .flow-arrow").count() == segments
    legend = set(page.eval_on_selector_all("#legend li", "l => l.map(x => x.dataset.legend)"))
    assert {"traffic_counter", "street_node", "river", "flow", "kecamatan", "stale"} <= legend
    # Nothing reported yet: every sensor is marked as not reporting.
    assert page.locator("#map .sensor-mark.stale").count() == len(mini_city.sensors)
    # A sensor opens from the map, by keyboard too.
    page.focus('#map .sensor-mark[data-sensor="sn-bangil-1"]')
    page.keyboard.press("Enter")
    page.wait_for_selector("#sensor-detail h3")
    assert page.locator("#sensor-detail h3").inner_text() == "Lampu Jalan Alun-alun Bangil"
    _assert_clean(page_watch)


def _row(page: Any, sensor: str) -> str:
    text: str = page.locator(f'#sensors tr[data-sensor="{sensor}"] .latest').inner_text()
    return text


def test_the_sensor_table_shows_labels_and_units(
    flood_db: Flood, page: Any, page_watch: PageWatch
) -> None:
    with serve(api_settings(flood_db.url)) as base:
        _open(page, f"{base}/")
        page.wait_for_function(
            "document.querySelector('#sensors tr[data-sensor=\"fg-welang-1\"] .latest')"
            ".textContent.includes('Tinggi muka air')"
        )
        assert re.search(
            r"Tinggi muka air \d+,\d\d m · Curah hujan \d+,\d mm", _row(page, "fg-welang-1")
        )
        street = _row(page, "sn-bangil-1")
        assert re.search(r"Lampu (menyala|padam) · PM2,5 \d+ µg/m³ · PM10 \d+ µg/m³", street)
        traffic = _row(page, "tc-bangil-1")
        assert re.search(r"Okupansi lajur \d+ % · Kecepatan rata-rata \d+ km/jam", traffic)
        assert "Sepeda motor" in traffic
        page.click("#lang")
        assert re.search(
            r"Water level \d+\.\d\d m · Rainfall \d+\.\d mm", _row(page, "fg-welang-1")
        )
        assert re.search(
            r"Lane occupancy \d+ % · Average speed \d+ km/h", _row(page, "tc-bangil-1")
        )
        assert re.search(r"Lamp (on|off)", _row(page, "sn-bangil-1"))
    _assert_clean(page_watch)


def test_a_gauge_view_shows_thresholds_readings_and_the_forecast_during_a_flood(
    flood_db: Flood, page: Any, page_watch: PageWatch
) -> None:
    with serve(api_settings(flood_db.url)) as base:
        _open(page, f"{base}/")
        page.click(f'button.open-gauge[data-sensor="{flood_db.rising}"]')
        view = "#gauge-view"
        page.wait_for_selector(f'{view}[data-sensor="{flood_db.rising}"][data-forecast="2"] canvas')
        figure = page.locator(view)
        assert figure.get_attribute("data-thresholds") == "1.8,2.4,3"
        assert int(figure.get_attribute("data-readings") or 0) > 250, "a day of readings"
        assert figure.get_attribute("data-fit") == "2"
        assert int(figure.get_attribute("data-alerts") or 0) >= 2
        legend = page.eval_on_selector_all(
            f"{view} .gauge-legend li", "l => l.map(x => [x.dataset.legend, x.textContent])"
        )
        kinds = [kind for kind, _ in legend]
        assert kinds == [
            "line-level", "line-fit", "line-forecast", "band-waspada", "band-siaga",
            "band-awas", "mark-alert", "bar-rain",
        ]  # fmt: skip
        assert dict(legend)["band-siaga"].strip() == "Siaga ≥ 2,40 m"
        assert "Siaga diperkirakan" in page.locator(f"{view} .gauge-forecast").inner_text()
        assert page.locator(f"{view} canvas").count() == 2, "the water level and the rain"
        assert (
            page.locator(f'{view} .gauge-spans button[aria-pressed="true"]').inner_text()
            == "24 jam"
        )
        assert _serious_violations(page) == []
        if SCREENSHOTS:
            page.screenshot(path=str(Path(SCREENSHOTS) / "city-page.png"), full_page=True)
        # The last six hours: the same thresholds and forecast, closer.
        page.click(f'{view} .gauge-spans button[data-hours="6"]')
        page.wait_for_selector(f'{view}[data-hours="6"][data-forecast="2"] canvas')
        assert 340 <= int(figure.get_attribute("data-readings") or 0) <= 365, "minutes of 6 h"
        if SCREENSHOTS:
            page.locator("#sensor-card").screenshot(path=str(Path(SCREENSHOTS) / "gauge-view.png"))
    _assert_clean(page_watch)


def test_an_operator_acknowledges_with_a_note_assigns_and_the_history_shows_both(
    flood_db: Flood, page: Any, page_watch: PageWatch, conn: psycopg.Connection
) -> None:
    key = keys.add_key(conn, "duty-1", holder="Budi Santoso")
    with serve(api_settings(flood_db.url)) as base:
        page.goto(f"{base}/control", wait_until="load")
        page.fill("#api-key", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_function(
            "document.getElementById('key-state').textContent.includes('Budi Santoso')"
        )
        row = page.locator(
            "#alerts tbody tr", has=page.locator("td", has_text="Tinggi muka air")
        ).first
        row.wait_for(timeout=10_000)
        alert_id = int(row.get_attribute("data-alert") or "0")
        row.locator("button.ack").click()
        page.fill("#ack-note", "BPBD dihubungi, tim menuju lokasi")
        page.click("#ack-submit")
        history = "#alert-panel #history"
        page.wait_for_selector(f'{history} li[data-kind="acknowledged"]')
        page.fill("#assignee", "Siti Aminah")
        page.fill("#assign-note", "Cek pintu air")
        page.click("#assign-submit")
        page.wait_for_selector(f'{history} li[data-kind="assigned"]')
        acknowledged = page.locator(f'{history} li[data-kind="acknowledged"]').inner_text()
        assert (
            "Budi Santoso" in acknowledged and "BPBD dihubungi, tim menuju lokasi" in acknowledged
        )
        assigned = page.locator(f'{history} li[data-kind="assigned"]').inner_text()
        assert "Siti Aminah" in assigned and "Cek pintu air" in assigned
        # The alert's own changes and the commands it sent to the warning posts come first.
        sources = page.eval_on_selector_all(f"{history} li", "l => l.map(x => x.dataset.source)")
        assert sources[0] == "alert_service" and "warning_post" in sources
        assert sources[-2:] == ["operator", "operator"]
        handling = page.locator(f'#alerts tr[data-alert="{alert_id}"] .handling')
        page.wait_for_function(
            f"document.querySelector('#alerts tr[data-alert=\"{alert_id}\"] .handling')"
            ".textContent.includes('Siti Aminah')"
        )
        assert "Dikonfirmasi: Budi Santoso" in handling.inner_text()
        # The control page shows each gauge's level as the city page does (from /city/status,
        # though it has no kecamatan table of its own).
        with psycopg.connect(flood_db.url) as db:
            levels = dict(db.execute("SELECT sensor_id, level FROM gauge_status").fetchall())
        names = ["Normal", "Waspada", "Siaga", "Awas"]
        for gauge, level in levels.items():
            badge = f'#rivers .gauge[data-sensor="{gauge}"] .badge'
            page.wait_for_function(
                f"document.querySelector('{badge}')?.textContent === '{names[level]}'",
                timeout=10_000,
            )
        assert _serious_violations(page) == []
        if SCREENSHOTS:
            page.screenshot(path=str(Path(SCREENSHOTS) / "control-page.png"), full_page=True)
    trail = conn.execute(
        "SELECT action, operator, assignee, note FROM pantau_private.alert_actions "
        "WHERE alert_id = %s ORDER BY id",
        [alert_id],
    ).fetchall()
    assert trail == [
        ("acknowledged", "Budi Santoso", None, "BPBD dihubungi, tim menuju lokasi"),
        ("assigned", "Budi Santoso", "Siti Aminah", "Cek pintu air"),
    ]
    _assert_clean(page_watch)


def test_a_reading_published_over_mqtt_appears_within_two_seconds(
    api_url: str,
    page: Any,
    page_watch: PageWatch,
    city_db: str,
    mqtt_settings: MqttSettings,
    ingest_factory: IngestFactory,
) -> None:
    ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    _open(page, f"{api_url}/")
    page.wait_for_function("document.getElementById('live-dot').classList.contains('on')")
    value_shown = "document.querySelector('.gauge[data-sensor=\"fg-welang-2\"] .value').textContent"
    assert page.evaluate(value_shown) == "–"
    payload = {"ts": datetime.now(UTC).isoformat(), "values": {"water_level": 2.345}}
    published = time.monotonic()
    publish_all(mqtt_settings, [(mqtt_settings.uplink_topic("fg-welang-2"), orjson.dumps(payload))])
    # Siaga on this gauge starts at 2.2 m: the level badge follows the value (written the
    # Indonesian way).
    page.wait_for_function(f"{value_shown} === '2,35 m'", timeout=2_000)
    assert time.monotonic() - published < 2.0
    # Siaga on this gauge starts at 2.2 m: the level badge follows, from /city/status (with no
    # alert service, from the latest value against the thresholds).
    row = '#sensors tr[data-sensor="fg-welang-2"] .latest'
    page.wait_for_function(
        f"document.querySelector('{row}').textContent.includes('Siaga')", timeout=5_000
    )
    _assert_clean(page_watch)


def test_static_files_stay_inside_their_folder(http: Any) -> None:
    assert http.get("/static/vendor/leaflet/leaflet.js").status_code == 200
    for path in ("/static/../routes/pages.py", "/static/%2e%2e/web/index.html"):
        response = http.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json")
    assert http.get("/static/%00").status_code in {400, 404}


def _flood_hours_to_last_awas(city: City) -> float:
    """Hours from a flood scenario's start until its last Welang gauge reaches Awas."""
    fleet = Fleet(city, seed=3)
    scenario = get_scenario("flood")
    start = 0.0
    scenario.apply(fleet, start)
    assert isinstance(scenario, FloodScenario)
    last = 0.0
    for model in scenario.gauges(fleet):
        t = start
        while model.thresholds.level(model.level(t)) is not FloodLevel.AWAS:
            t += 60.0
            assert t < start + 86_400, f"{model.sensor.id} never reaches Awas"
        last = max(last, t)
    return (last - start) / 3_600


@pytest.mark.slow
def test_a_flood_warning_appears_and_an_operator_acknowledges_it(
    api_url: str,
    page: Any,
    page_watch: PageWatch,
    city_db: str,
    mini_city: City,
    mqtt_settings: MqttSettings,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
    operator_key: str,
) -> None:
    ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    alerts_factory(database_url=city_db, mqtt=mqtt_settings)
    # The flood scenario in accelerated time, ending while the last gauge is at Awas.
    length = timedelta(hours=_flood_hours_to_last_awas(mini_city) + 0.25)
    config = RunConfig(scenario="flood", backfill=length, duration=length, seed=3)
    assert Simulation(city=mini_city, mqtt=mqtt_settings, config=config).run().errors == 0

    # The public page shows the Awas warning, live, with no reload.
    _open(page, f"{api_url}/")
    awas = '#warnings li[data-rule="flood_level"] .badge.lvl-3'
    page.wait_for_selector(awas, timeout=90_000)

    control = page.context.new_page()
    control.goto(f"{api_url}/control", wait_until="load")
    control.fill("#api-key", operator_key)
    control.click("#key-form button[type=submit]")
    row = control.locator("#alerts tbody tr", has=control.locator(".badge.lvl-3")).first
    row.wait_for(timeout=30_000)
    alert_id = int(row.get_attribute("data-alert") or "0")
    row.locator("button.ack").click()
    control.fill("#ack-note", "Tim BPBD menuju lokasi")
    control.click("#ack-submit")
    handling = f'#alerts tr[data-alert="{alert_id}"] .handling .acked'
    control.wait_for_function(
        f"document.querySelector('{handling}')?.textContent.includes('tester')", timeout=10_000
    )
    assert control.locator("#ack-submit").is_disabled()
    with psycopg.connect(city_db) as conn:
        acknowledged = conn.execute(
            "SELECT acknowledged_by FROM alerts WHERE id = %s", [alert_id]
        ).fetchone()
    assert acknowledged == ("tester",)
    _assert_clean(page_watch)


def test_the_control_page_links_to_alertmanager_only_where_it_is_set(
    city_db: str, page: Any, page_watch: PageWatch
) -> None:
    settings = api_settings(city_db)
    with serve(settings) as base:
        hidden = httpx.get(f"{base}/control", timeout=10).text
    assert '<p id="notifications" hidden>' in hidden
    notify = NotifySettings(alertmanager_external_url="http://alertmanager.example.org:9093")
    with serve(settings.model_copy(update={"notify": notify})) as base:
        shown = httpx.get(f"{base}/control", timeout=10).text
        _open(page, f"{base}/control")
        link = page.locator("#alertmanager-link")
        assert link.is_visible()
        assert link.get_attribute("href") == "http://alertmanager.example.org:9093/#/alerts"
        assert link.inner_text() == "Notifikasi dan senyap (Alertmanager)"
        # A notification's link brings its gauge into view on the city page.
        _open(page, f"{base}/?sensor=fg-welang-2")
        page.wait_for_selector('.gauge.focused[data-sensor="fg-welang-2"]', timeout=5_000)
    assert '<p id="notifications" hidden>' not in shown


def test_a_stale_gauge_shows_no_data_never_its_last_level(
    api_url: str, page: Any, page_watch: PageWatch, conn: psycopg.Connection, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(minutes=20)  # three intervals of 60 s are long past
    store.prepare(conn)
    store.store(
        conn,
        [
            Reading.at(old, "fg-welang-1", "water_level", 2.7),
            Reading.at(now, "fg-welang-3", "water_level", 0.9),
        ],
    )
    conn.cursor().executemany(
        "INSERT INTO gauge_status (sensor_id, level, since, observed_at, value, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        [("fg-welang-1", 3, old, old, 2.7, old), ("fg-welang-3", 0, now, now, 0.9, now)],
    )
    _open(page, f"{api_url}/")
    stale = '.gauge[data-sensor="fg-welang-1"]'
    page.wait_for_selector(f"{stale} .badge.no-data", timeout=10_000)
    assert page.locator(f"{stale} .badge").inner_text() == "Tidak ada data"
    assert page.locator(f"{stale} .stale").inner_text().startswith("data terakhir ")
    assert page.locator('.gauge[data-sensor="fg-welang-3"] .badge').inner_text() == "Normal"
    # Nowhere on the page is the dead gauge's Awas shown as now.
    row = page.locator('#sensors tr[data-sensor="fg-welang-1"] .latest')
    assert "Tidak ada data" in row.inner_text() and "Awas" not in row.inner_text()
    purwosari = page.locator('#city-status tr[data-kecamatan="Purwosari"]')
    assert purwosari.locator(".badge.no-data").inner_text() == "Tidak ada data"
    page.click("#lang")
    assert page.locator(f"{stale} .badge").inner_text() == "No data"
    assert page.locator(f"{stale} .stale").inner_text().startswith("last reading ")
    page.click("#lang")
    page.locator("#rivers").screenshot(path=str(tmp_path / "stale-gauge.png"))
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / "stale-gauge.png"), full_page=True)
    _assert_clean(page_watch)


def test_warnings_are_ordered_by_urgency_and_a_forecast_stands_out(
    api_url: str, page: Any, page_watch: PageWatch, add_alert: AddAlert, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    offline = add_alert(sensor="sn-bangil-1", rule="offline", levels=(2,), start=now)
    siaga = add_alert(sensor="fg-welang-2", levels=(1, 2), start=now - timedelta(minutes=20))
    upstream = add_alert(
        sensor="fg-welang-3",
        rule="upstream",
        levels=(2,),
        start=now,
        predicted=(2, now + timedelta(minutes=90)),
    )
    awas_soon = add_alert(
        sensor="fg-welang-3",
        rule="rising_fast",
        levels=(3,),
        start=now - timedelta(minutes=5),
        predicted=(3, now + timedelta(minutes=25, seconds=20)),
    )
    _open(page, f"{api_url}/")
    page.wait_for_selector("#warnings li[data-alert]", timeout=10_000)
    order = page.eval_on_selector_all(
        "#warnings li[data-alert]", "l => l.map(x => +x.dataset.alert)"
    )
    assert order == [awas_soon, siaga, upstream, offline]
    first = page.locator(f'#warnings li[data-alert="{awas_soon}"]')
    assert "forecast-3" in (first.get_attribute("class") or "")
    assert (
        first.locator(".forecast-note")
        .inner_text()
        .startswith("Awas diperkirakan dalam sekitar 25 menit")
    )
    assert first.locator(".badge").inner_text() == "Naik cepat, menuju Awas"
    assert first.locator(".badge.lvl-3").count() == 1
    page.locator("#warnings").screenshot(path=str(tmp_path / "warnings.png"))
    page.click("#lang")
    assert first.locator(".badge").inner_text() == "Rising fast towards Awas"
    assert (
        first.locator(".forecast-note")
        .inner_text()
        .startswith("Awas (danger) expected in about 25")
    )
    upstream_badge = page.locator(f'#warnings li[data-alert="{upstream}"] .badge')
    assert upstream_badge.inner_text() == "Siaga upstream"
    _assert_clean(page_watch)


def test_the_control_page_lists_suspect_readings(
    api_url: str, page: Any, page_watch: PageWatch, conn: psycopg.Connection, operator_key: str
) -> None:
    now = datetime.now(UTC)
    conn.execute(
        "INSERT INTO reading_flags (sensor_id, metric, time, value, reason) VALUES "
        "('fg-welang-1', 'water_level', %s, 3.3, 'spike'), "
        "('fg-welang-3', 'water_level', %s, -0.4, 'range')",
        [now - timedelta(minutes=5), now - timedelta(minutes=2)],
    )
    _open(page, f"{api_url}/control")
    assert page.locator("#suspect").inner_text() == "Masukkan kunci API untuk melihat."
    page.fill("#api-key", operator_key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#suspect tr[data-reason]", timeout=10_000)
    rows = page.eval_on_selector_all(
        "#suspect tr[data-reason]", "r => r.map(x => [x.dataset.sensor, x.innerText])"
    )
    assert [sensor for sensor, _ in rows] == ["fg-welang-3", "fg-welang-1"]
    assert "di luar rentang sensor" in rows[0][1] and "lonjakan sesaat" in rows[1][1]
    _assert_clean(page_watch)
