"""The live city page and the control page in a real headless Chromium, served by the real API."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from pantau.city import City, FloodLevel
from pantau.settings import MqttSettings, NotifySettings
from simulators.config import RunConfig
from simulators.fleet import Fleet
from simulators.runner import Simulation
from simulators.scenarios import FloodScenario, flood_levels, get_scenario
from tests.fixtures.alerts import AlertsFactory
from tests.fixtures.api import api_settings, serve
from tests.fixtures.browser import AXE, PageWatch
from tests.fixtures.ingest import IngestFactory
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
    # One map marker per sensor, and the gauges of every river.
    assert page.locator("#map path.leaflet-interactive").count() >= len(mini_city.sensors)
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


@pytest.mark.parametrize("path", ["/", "/control"])
def test_pages_have_no_serious_accessibility_violations(
    api_url: str, page: Any, page_watch: PageWatch, path: str
) -> None:
    _open(page, f"{api_url}{path}")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => JSON.stringify(await axe.run(document))")
    violations = [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in json.loads(result)["violations"]
        if v["impact"] in {"serious", "critical"}
    ]
    assert violations == []
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
    # Siaga on this gauge starts at 2.2 m: the level badge follows the value.
    page.wait_for_function(f"{value_shown} === '2.35 m'", timeout=2_000)
    assert time.monotonic() - published < 2.0
    row = page.locator('#sensors tr[data-sensor="fg-welang-2"] .latest')
    assert "Siaga" in row.inner_text()
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
        while flood_levels(model, t) is not FloodLevel.AWAS:
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
    button = f'#alerts tr[data-alert="{alert_id}"] button.ack'
    control.wait_for_function(
        f"document.querySelector('{button}')?.textContent.includes('tester')", timeout=10_000
    )
    assert control.locator(button).is_disabled()
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / "city-page.png"), full_page=True)
        control.screenshot(path=str(Path(SCREENSHOTS) / "control-page.png"), full_page=True)
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
    _assert_clean(page_watch)
