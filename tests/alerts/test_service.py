"""The alert service end to end: the simulator in accelerated time through real Mosquitto,
ingest and PostgreSQL, with `python -m alerts` as a subprocess."""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pantau.catalogue import Family
from pantau.city import City
from pantau.db import registry
from pantau.settings import AlertSettings, MqttSettings
from pantau.tools.services import PrivateMosquitto, wait_until
from simulators.config import RunConfig
from simulators.faults import FaultConfig
from simulators.fleet import Fleet
from simulators.runner import Simulation
from simulators.scenarios import OutageScenario
from simulators.send import send_reading
from simulators.signals import FloodModel
from tests.fixtures.alerts import AlertsFactory, AlertWatcher, alert_events
from tests.fixtures.ingest import IngestFactory
from tests.fixtures.netproxy import FreezableProxy, through

WELANG = ("fg-welang-1", "fg-welang-2", "fg-welang-3")
FLOOD_RULES = ("flood_level", "rising_fast", "upstream")


def _simulate(
    city: City,
    mqtt: MqttSettings,
    scenario: str,
    hours: float,
    seed: int = 3,
    faults: FaultConfig | None = None,
) -> Simulation:
    length = timedelta(hours=hours)
    config = RunConfig(
        scenario=scenario,
        backfill=length,
        duration=length,
        seed=seed,
        faults=faults or FaultConfig(),
    )
    simulation = Simulation(city=city, mqtt=mqtt, config=config)
    stats = simulation.run()
    assert stats.errors == 0
    return simulation


def _settled(conninfo: str, watcher: AlertWatcher, alerts: Any, simulation: Simulation) -> None:
    """Wait until the service's clock reached the end of the run and every committed event has
    been published."""
    assert simulation.end is not None
    end = simulation.end - 120

    def done() -> bool:
        if alerts.metric("pantau_alerts_clock_timestamp_seconds") < end:
            return False
        stored = {e["id"] for e in alert_events(conninfo)}
        published, _ = watcher.snapshot()
        return stored <= {e["id"] for e in published}

    try:
        wait_until(done, timeout_s=180, what="alert service to evaluate the whole run")
    except TimeoutError as error:
        state = {
            name: alerts.metric(name)
            for name in (
                "pantau_alerts_clock_timestamp_seconds",
                "pantau_alerts_messages_received_total",
                "pantau_alerts_active",
            )
        }
        raise AssertionError(f"{error}: run ends {simulation.end}, service at {state}") from None


def assert_chains(events: list[dict[str, Any]]) -> None:
    """Every alert's changes form one chain: opened, then each change starting from the level
    the previous one left, resolved at most once and last. A lost or repeated transition
    breaks the chain."""
    by_alert: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_alert[event["alert_id"]].append(event)
    for alert_id, chain in by_alert.items():
        changes = [e["change"] for e in chain]
        assert changes[0] == "opened" and chain[0]["previous_level"] is None, (alert_id, changes)
        assert "opened" not in changes[1:], (alert_id, changes)
        assert "resolved" not in changes[:-1], (alert_id, changes)
        for before, after in itertools.pairwise(chain):
            assert after["previous_level"] == before["level"], (alert_id, chain)
            if after["change"] == "escalated":
                assert after["level"] > before["level"]
            elif after["change"] == "de-escalated":
                assert after["level"] < before["level"]
            assert after["observed_at"] >= before["observed_at"]


def assert_flood_cycle(events: list[dict[str, Any]], gauge: str) -> None:
    """Waspada, Siaga, Awas in that order, then back down to resolved, one change per level."""
    chain = [(e["change"], e["level"]) for e in events if e["sensor_id"] == gauge]
    assert chain[:3] == [("opened", 1), ("escalated", 2), ("escalated", 3)], (gauge, chain)
    down = chain[3:]
    assert down and down[-1][0] == "resolved", (gauge, chain)
    levels = [3] + [level for _, level in down[:-1]]
    assert all(a > b for a, b in itertools.pairwise(levels)), (gauge, chain)
    assert all(change == "de-escalated" for change, _ in down[:-1]), (gauge, chain)


def _first(events: list[dict[str, Any]], gauge: str, rule: str, **match: Any) -> Any:
    for event in events:
        if (
            event["sensor_id"] == gauge
            and event["rule"] == rule
            and all(event[k] == v for k, v in match.items())
        ):
            return event["observed_at"]
    raise AssertionError(f"no {rule} {match} on {gauge}")


@pytest.mark.slow
def test_flood_scenario_warns_in_order_ahead_of_time_and_stands_down(
    city_db: str,
    mqtt_settings: MqttSettings,
    mini_city: City,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
    alert_watcher: AlertWatcher,
) -> None:
    ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    # Small batches: the retained topics show the state after each batch, and a backfill in
    # batches of hours would skip straight past Awas (the events never skip anything).
    alerts = alerts_factory(database_url=city_db, mqtt=mqtt_settings, batch_max_messages=20)
    simulation = _simulate(mini_city, mqtt_settings, "flood", hours=18)
    _settled(city_db, alert_watcher, alerts, simulation)

    events = alert_events(city_db)
    assert_chains(events)
    flood = [e for e in events if e["rule"] == "flood_level"]
    for gauge in WELANG:
        assert_flood_cycle(flood, gauge)
    for gauge in WELANG[1:]:
        awas = _first(events, gauge, "flood_level", level=3)
        rising = _first(events, gauge, "rising_fast", change="opened")
        assert rising <= awas - timedelta(minutes=15), (gauge, rising, awas)
        waspada = _first(events, gauge, "flood_level", level=1)
        advisory = _first(events, gauge, "upstream", change="opened")
        assert advisory < waspada, (gauge, advisory, waspada)
    # The warning posts: red and siren at Awas, off at the end; every event went out on MQTT.
    published, retained = alert_watcher.snapshot()
    assert sorted(e["id"] for e in published) == [e["id"] for e in events]
    root = mqtt_settings.topic_root
    for gauge in WELANG:
        assert retained[f"{root}/warning/{gauge}"]["light"] == "off"
        assert retained[f"{root}/status/{gauge}"]["flood_level"] == 0
    sirens = {e["sensor_id"] for e in published if e["rule"] == "flood_level" and e["level"] == 3}
    assert sirens == set(WELANG)
    with alert_watcher.lock:
        history = list(alert_watcher.history)
    for gauge in WELANG:
        commands = [d for topic, d in history if topic == f"{root}/warning/{gauge}"]
        lights = [(d["light"], d["siren"]) for d in commands]
        # Off at the start, yellow before red, red with the siren at Awas, off at the end.
        assert lights[0] == ("off", False) and lights[-1] == ("off", False)
        assert ("red", True) in lights
        assert lights.index(("yellow", False)) < lights.index(("red", True))
        awas = [
            d
            for topic, d in history
            if topic == f"{root}/status/{gauge}" and d.get("flood_level") == 3
        ]
        assert awas and all(a["alert_id"] is not None for a in awas[0]["alerts"])
    # Each command that changed was recorded, in the order it went out, with what caused it.
    with psycopg.connect(city_db) as conn:
        recorded = conn.execute(
            "SELECT gauge_id, command, alert_ids FROM warning_commands ORDER BY id"
        ).fetchall()
    for gauge in WELANG:
        sent = [d for topic, d in history if topic == f"{root}/warning/{gauge}"]
        changes = [d for i, d in enumerate(sent) if i == 0 or d != sent[i - 1]]
        assert [command for g, command, _ in recorded if g == gauge] == changes
    own = {(e["sensor_id"], e["alert_id"]) for e in events}
    assert all((g, a) in own for g, _, ids in recorded for a in ids)
    assert any(ids for _, command, ids in recorded if command["siren"])


def _storm_without_flood_seed(city: City, hours: float) -> int:
    """A seed whose last ``hours`` bring rain on the Welang (a rise of 0.3 m or more) that stays
    below Waspada at every gauge, and never rises as fast as `rising_fast` asks (a storm rising
    that fast towards Waspada is rightly forecast, whether or not it gets there): the normal
    scenario at its most tempting. The scenario follows the calendar, so the seed is chosen
    for today."""
    now = time.time()
    settings = AlertSettings()
    step_s = 300
    window = max(1, round(settings.rise_window_s / step_s))
    fastest_m_per_h = 0.8 * settings.rising_fast_rate_m_per_h
    for seed in range(80):
        fleet = Fleet(city, seed=seed)
        gauges = [m for m in fleet.models.values() if isinstance(m, FloodModel)]
        steps = [now - hours * 3_600 + i * step_s for i in range(int(hours * 3_600 / step_s))]
        rises, peaks, rates = [], [], []
        for model in gauges:
            levels = [model.level(t) for t in steps]
            rises.append(max(levels) - min(levels))
            peaks.append(max(levels) / model.thresholds.waspada)
            rates.append(
                max(b - a for a, b in zip(levels, levels[window:], strict=False))
                * 3_600
                / (window * step_s)
            )
        if max(rises) >= 0.3 and max(peaks) < 0.9 and max(rates) < fastest_m_per_h:
            return seed
    pytest.skip("no seed gives a slow storm below Waspada today")


@pytest.mark.slow
def test_a_normal_day_with_a_storm_raises_no_flood_alert(
    city_db: str,
    mqtt_settings: MqttSettings,
    mini_city: City,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
    alert_watcher: AlertWatcher,
) -> None:
    seed = _storm_without_flood_seed(mini_city, 24)
    ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    alerts = alerts_factory(database_url=city_db, mqtt=mqtt_settings)
    simulation = _simulate(mini_city, mqtt_settings, "normal", hours=24, seed=seed)
    _settled(city_db, alert_watcher, alerts, simulation)

    assert [e for e in alert_events(city_db) if e["rule"] in FLOOD_RULES] == []
    with psycopg.connect(city_db) as conn:
        rows = conn.execute(
            "SELECT sensor_id, level, rate_m_per_h FROM gauge_status ORDER BY 1"
        ).fetchall()
    # It did evaluate every gauge, with a rise rate, and found them Normal.
    assert [(r[0], r[1]) for r in rows] == [(g, 0) for g in WELANG]
    assert all(r[2] is not None for r in rows)


@pytest.mark.slow
def test_a_silenced_kecamatan_goes_offline_in_time_and_comes_back(
    city_db: str,
    mqtt_settings: MqttSettings,
    mini_city: City,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
    alert_watcher: AlertWatcher,
) -> None:
    k = 3.0
    ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    alerts = alerts_factory(database_url=city_db, mqtt=mqtt_settings, offline_intervals_k=k)
    simulation = _simulate(mini_city, mqtt_settings, "outage", hours=1)
    _settled(city_db, alert_watcher, alerts, simulation)
    scenario = simulation.scenario
    assert isinstance(scenario, OutageScenario)
    silent_from, silent_until = scenario.window

    events = alert_events(city_db, rule="offline")
    assert_chains(events)
    assert {e["sensor_id"] for e in events} == set(scenario.group)
    for sensor_id in scenario.group:
        interval = mini_city.sensor(sensor_id).interval_s
        opened, resolved = [e for e in events if e["sensor_id"] == sensor_id]
        assert (opened["change"], resolved["change"]) == ("opened", "resolved")
        # Within k intervals of its last reading, give or take one interval of the clock.
        deadline = silent_from + (k + 1) * interval + 60
        assert silent_from < opened["observed_at"].timestamp() <= deadline, sensor_id
        # Resolved when its backlog arrives: at the clock of that moment (the newest reading of
        # the sensors still reporting, at most one of their intervals before the return).
        assert resolved["observed_at"].timestamp() >= silent_until - 60, sensor_id
    _, retained = alert_watcher.snapshot()
    for sensor_id in scenario.group:
        assert retained[f"{mqtt_settings.topic_root}/status/{sensor_id}"]["alerts"] == []


@pytest.fixture
def private_mqtt(private_broker: PrivateMosquitto, test_id: str) -> MqttSettings:
    # A broker of the test's own queues everything for the session while the service is down.
    return MqttSettings(
        url=private_broker.url, topic_root=f"test-{test_id}", client_id=f"i-{test_id}"
    )


def _run_in_background(city: City, mqtt: MqttSettings, hours: float) -> tuple[Simulation, Any]:
    length = timedelta(hours=hours)
    simulation = Simulation(
        city=city, mqtt=mqtt, config=RunConfig(scenario="flood", backfill=length, duration=length)
    )
    thread = threading.Thread(target=simulation.run, daemon=True)
    thread.start()
    return simulation, thread


def _finish_flood_run(
    conninfo: str, watcher: AlertWatcher, alerts: Any, simulation: Simulation, thread: Any
) -> list[dict[str, Any]]:
    """Let the background run end and the service catch up; every alert's chain holds and each
    Welang gauge went through one full flood cycle. Returns the events."""
    thread.join(timeout=300)
    _settled(conninfo, watcher, alerts, simulation)
    watcher.stop()
    events = alert_events(conninfo)
    assert_chains(events)
    for gauge in WELANG:
        assert_flood_cycle([e for e in events if e["rule"] == "flood_level"], gauge)
    return events


@pytest.mark.slow
def test_kill_9_and_restart_neither_loses_nor_repeats_a_transition(
    city_db: str,
    private_mqtt: MqttSettings,
    mini_city: City,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
) -> None:
    mqtt = private_mqtt
    watcher = AlertWatcher(mqtt)
    watcher.start()
    ingest_factory(database_url=city_db, mqtt=mqtt)
    alerts = alerts_factory(database_url=city_db, mqtt=mqtt, batch_max_messages=20)
    simulation, thread = _run_in_background(mini_city, mqtt, hours=18)
    for count in (3, 12, 20):
        wait_until(
            lambda n=count: len(alert_events(city_db)) >= n,  # type: ignore[misc]
            timeout_s=120,
            what=f"{count} alert events",
        )
        alerts.kill()
        alerts.start()
    events = _finish_flood_run(city_db, watcher, alerts, simulation, thread)

    keys = [(e["alert_id"], e["change"], e["level"]) for e in events]
    assert len(keys) == len(set(keys))
    # Everything committed went out; a few may have gone out twice (same event id).
    published, _ = watcher.snapshot()
    assert {e["id"] for e in published} == {e["id"] for e in events}


@pytest.mark.slow
def test_a_standby_takes_over_and_two_instances_never_both_emit(
    city_db: str,
    private_mqtt: MqttSettings,
    mini_city: City,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
) -> None:
    mqtt = private_mqtt
    ingest_factory(database_url=city_db, mqtt=mqtt)
    first = alerts_factory(database_url=city_db, mqtt=mqtt, batch_max_messages=20)
    second = alerts_factory(database_url=city_db, mqtt=mqtt, start=False, batch_max_messages=20)
    second.start(active=False)
    simulation, thread = _run_in_background(mini_city, mqtt, hours=18)
    watcher = AlertWatcher(mqtt)
    watcher.start()

    def leader_only() -> bool:
        assert not second.active(), "the standby evaluates while the leader holds the lock"
        assert second.metric("pantau_alerts_messages_received_total") == 0
        return len(alert_events(city_db)) >= 8

    wait_until(leader_only, timeout_s=120, what="the leader's first alerts")
    first.kill()
    second.wait_active(timeout_s=30)
    _finish_flood_run(city_db, watcher, second, simulation, thread)
    assert second.metric("pantau_alerts_messages_received_total") > 0


@pytest.mark.slow
def test_a_frozen_path_to_the_database_hands_over_within_the_bound(
    city_db: str,
    db_proxy: FreezableProxy,
    private_mqtt: MqttSettings,
    mini_city: City,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
) -> None:
    """The active instance's path to PostgreSQL hangs (not closed: a cut-off host). It stops
    publishing and exits 1 within its lease; the server ends its session, and with it the
    lock, so the standby takes over within the bound; nothing is lost or repeated."""
    mqtt, bound_s, retry_s = private_mqtt, 3.0, 0.2
    ingest_factory(database_url=city_db, mqtt=mqtt)
    first = alerts_factory(
        database_url=through(db_proxy, city_db),
        mqtt=mqtt,
        batch_max_messages=20,
        lock_timeout_s=bound_s,
    )
    second = alerts_factory(
        database_url=city_db, mqtt=mqtt, start=False, batch_max_messages=20, lock_timeout_s=bound_s
    )
    second.start(active=False)
    watcher = AlertWatcher(mqtt)
    watcher.start()
    simulation, thread = _run_in_background(mini_city, mqtt, hours=18)
    wait_until(lambda: len(alert_events(city_db)) >= 8, timeout_s=120, what="the first alerts")
    assert not second.active()

    frozen_at = time.monotonic()
    db_proxy.freeze()
    second.wait_active(timeout_s=60)
    took_s = time.monotonic() - frozen_at
    assert first.process is not None
    assert first.process.wait(timeout=bound_s) == 1
    # The server let go of the frozen session by itself: the standby evaluates.
    assert took_s <= bound_s + retry_s + 1.5, took_s
    log = first.log()
    assert "evaluation lock lost" in log and "Traceback" not in log

    events = _finish_flood_run(city_db, watcher, second, simulation, thread)
    keys = [(e["alert_id"], e["change"], e["level"]) for e in events]
    assert len(keys) == len(set(keys))
    published, _ = watcher.snapshot()
    assert {e["id"] for e in published} == {e["id"] for e in events}
    assert second.metric("pantau_alerts_messages_received_total") > 0


def test_a_database_error_in_the_loop_ends_the_instance_cleanly(
    city_db: str, mqtt_settings: MqttSettings, alerts_factory: AlertsFactory
) -> None:
    alerts = alerts_factory(database_url=city_db, mqtt=mqtt_settings, registry_refresh_s=0.2)
    # The registry reload, inside the loop, now fails with an error of the database.
    with psycopg.connect(city_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE flood_thresholds RENAME TO flood_thresholds_gone")
    assert alerts.process is not None
    assert alerts.process.wait(timeout=30) == 1
    log = alerts.log()
    assert "database error; stopping without emitting more" in log
    assert "flood_thresholds" in log and "Traceback" not in log


# One plausible value of each family, for a sensor that says it is alive.
ALIVE = {
    Family.FLOOD_GAUGE: {"water_level": 1.0},
    Family.TRAFFIC_COUNTER: {"occupancy": 0.2, "avg_speed": 40.0},
    Family.STREET_NODE: {"lamp_power": 120.0},
}


def test_a_restart_during_a_city_wide_silence_raises_offline_by_the_wall_clock(
    db_url: str,
    mqtt_settings: MqttSettings,
    mini_city: City,
    alerts_factory: AlertsFactory,
    alert_watcher: AlertWatcher,
) -> None:
    # Sensors reporting every 2 s, offline after 3 intervals: a silence is quickly long.
    city = mini_city.model_copy(
        update={
            "sensors": tuple(s.model_copy(update={"interval_s": 2.0}) for s in mini_city.sensors)
        }
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        registry.load_city(conn, city)
    alerts = alerts_factory(database_url=db_url, mqtt=mqtt_settings, live_window_s=1.0)
    sent = {}
    for sensor in city.sensors:
        _, payload = send_reading(
            mqtt=mqtt_settings, city=city, sensor_id=sensor.id, values=ALIVE[sensor.family]
        )
        sent[sensor.id] = payload

    def seen_live() -> bool:
        with psycopg.connect(db_url) as conn:
            seen = conn.execute(
                "SELECT count(*) FROM alert_rule_state WHERE rule = 'offline'"
            ).fetchone()
            live = conn.execute(
                "SELECT value FROM alert_service_state WHERE key = 'live'"
            ).fetchone()
        return seen == (len(city.sensors),) and live == (True,)

    wait_until(seen_live, timeout_s=30, what="the service to see every sensor, live")
    # Down during the silence, back up: not one reading arrives from now on.
    alerts.kill()
    assert alert_events(db_url, rule="offline") == []
    alerts.start()

    def all_offline() -> bool:
        opened = {e["sensor_id"] for e in alert_events(db_url, rule="offline")}
        return opened == {s.id for s in city.sensors}

    wait_until(all_offline, timeout_s=30, what="every silent sensor to go offline")
    assert alerts.metric("pantau_alerts_messages_received_total") == 0
    # The retained status says so: no current level, and when the last reading was.
    root = mqtt_settings.topic_root
    wait_until(
        lambda: alert_watcher.snapshot()[1].get(f"{root}/status/fg-welang-1", {}).get("no_data"),
        timeout_s=10,
        what="the gauge's retained status to say no data",
    )
    status = alert_watcher.snapshot()[1][f"{root}/status/fg-welang-1"]
    assert status["flood_level"] is None
    assert status["last_reading_at"] is not None
    assert [a["rule"] for a in status["alerts"]] == ["offline"]


# A glitch on one flood-gauge reading in a hundred: a spike or a dropout.
GLITCHES = FaultConfig(spikes=0.01, dropouts=0.01)


def _unflagged_levels(conninfo: str, gauge: str) -> list[tuple[Any, float]]:
    """The gauge's stored water levels that quality control did not mark suspect."""
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "SELECT r.time, r.value FROM readings r WHERE r.sensor_id = %s "
            "AND r.metric = 'water_level' AND NOT EXISTS (SELECT 1 FROM reading_flags f "
            "WHERE (f.sensor_id, f.metric, f.time) = (r.sensor_id, r.metric, r.time)) "
            "ORDER BY r.time",
            [gauge],
        ).fetchall()


def _flags(conninfo: str) -> dict[tuple[str, str], int]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT sensor_id, reason, count(*) FROM reading_flags GROUP BY 1, 2"
        ).fetchall()
    return {(sensor, reason): count for sensor, reason, count in rows}


def test_a_day_of_spikes_and_dropouts_on_every_gauge_sounds_no_siren(
    city_db: str,
    mqtt_settings: MqttSettings,
    mini_city: City,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
    alert_watcher: AlertWatcher,
) -> None:
    ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    alerts = alerts_factory(database_url=city_db, mqtt=mqtt_settings)
    simulation = _simulate(mini_city, mqtt_settings, "normal", hours=24, faults=GLITCHES)
    assert simulation.stats.faults["spike"] >= 30 and simulation.stats.faults["dropout"] >= 10
    _settled(city_db, alert_watcher, alerts, simulation)

    assert [e for e in alert_events(city_db) if e["rule"] in FLOOD_RULES] == []
    with alert_watcher.lock:
        commands = [d for topic, d in alert_watcher.history if "/warning/" in topic]
    assert commands and not any(d["siren"] for d in commands)
    assert {d["light"] for d in commands} == {"off"}
    # Every gauge's spikes were recorded as suspect, and counted.
    flags = _flags(city_db)
    for gauge in WELANG:
        assert flags.get((gauge, "spike"), 0) + flags.get((gauge, "range"), 0) > 0, flags
        thresholds = mini_city.sensor(gauge).thresholds
        assert thresholds is not None
        assert all(v < thresholds.waspada for _, v in _unflagged_levels(city_db, gauge))
    assert alerts.metric("pantau_alerts_suspect_series_total", verdict="spike") > 0
    assert alerts.metric("pantau_alerts_suspect_readings_total") >= sum(flags.values())


def test_a_flood_with_spikes_and_dropouts_still_warns_in_order_and_in_time(
    city_db: str,
    mqtt_settings: MqttSettings,
    mini_city: City,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
    alert_watcher: AlertWatcher,
) -> None:
    ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    alerts = alerts_factory(database_url=city_db, mqtt=mqtt_settings, batch_max_messages=20)
    simulation = _simulate(mini_city, mqtt_settings, "flood", hours=18, faults=GLITCHES)
    assert simulation.stats.faults["spike"] >= 20
    _settled(city_db, alert_watcher, alerts, simulation)

    events = alert_events(city_db)
    assert_chains(events)
    flood = [e for e in events if e["rule"] == "flood_level"]
    for gauge in WELANG:
        assert_flood_cycle(flood, gauge)
        thresholds = mini_city.sensor(gauge).thresholds
        assert thresholds is not None
        # Awas within one reporting interval of the crossing the next reading confirmed.
        crossing = next(t for t, v in _unflagged_levels(city_db, gauge) if v >= thresholds.awas)
        awas = _first(events, gauge, "flood_level", level=3)
        interval = timedelta(seconds=mini_city.sensor(gauge).interval_s * 1.05)
        assert crossing < awas <= crossing + interval, (gauge, crossing, awas)
        rising = _first(events, gauge, "rising_fast", change="opened")
        assert rising <= awas - timedelta(minutes=15), (gauge, rising, awas)
    # The upstream advisory of a gauge resolves once the gauge itself reached what it announced.
    for gauge in WELANG[1:]:
        resolved = _first(events, gauge, "upstream", change="resolved")
        assert resolved <= _first(events, gauge, "flood_level", level=3), gauge
    published, _ = alert_watcher.snapshot()
    sirens = {e["sensor_id"] for e in published if e["rule"] == "flood_level" and e["level"] == 3}
    assert sirens == set(WELANG)
