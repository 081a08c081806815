"""The store on a real database: commits that a replay cannot repeat, the state a restart is
rebuilt from, the evaluation lock, and the contract's tables."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from alerts.evaluator import Evaluator
from alerts.model import Rule
from alerts.store import AlertStore, LockLostError, StoreError, transition_json
from pantau.city import City, CityFileError, load_city
from pantau.db import registry
from pantau.db import store as db_store
from pantau.payload import Reading
from pantau.settings import AlertSettings
from pantau.tools.services import free_port
from tests.fixtures.alerts import RULES_ONLY, alert_events
from tests.fixtures.database import MINI_CITY
from tests.fixtures.netproxy import FreezableProxy, through

US = 1_000_000
T0 = datetime(2027, 1, 15, 8, tzinfo=UTC)
WALL_US = round(T0.timestamp() * US) + 3_600 * US


def _unlocked(url: str, *, lock_timeout_s: float = 20) -> AlertStore:
    return AlertStore(conninfo=url, connect_timeout_s=5, lock_timeout_s=lock_timeout_s)


def _store(url: str) -> AlertStore:
    store = _unlocked(url)
    assert store.acquire(retry_s=0.1, stop=lambda: False)
    return store


def _evaluator(store: AlertStore) -> Evaluator:
    snapshot = store.snapshot(window_s=1_800, live_window_s=120)
    return Evaluator(
        # Readings a minute apart jump from level to level here: the rules alone.
        settings=AlertSettings(**RULES_ONLY),
        sensors=snapshot.sensors,
        states=snapshot.states,
        open_alerts=snapshot.open_alerts,
        gauges=snapshot.gauges,
        windows=snapshot.windows,
        clock_us=snapshot.clock_us,
    )


def _flood(minutes_and_levels: list[tuple[int, float]]) -> list[Reading]:
    return [
        Reading.at(T0 + timedelta(minutes=m), "fg-welang-1", "water_level", v)
        for m, v in minutes_and_levels
    ]


def _feed(store: AlertStore, evaluator: Evaluator, readings: list[Reading]) -> list[str]:
    for reading in readings:
        evaluator.observe([reading], received_us=WALL_US, wall_us=WALL_US)
    stored = store.commit(evaluator.take(), published_event_id=0)
    return [f"{t.sensor_id} {t.rule} {t.change} {t.level}" for t in stored]


def test_a_replay_after_a_restart_repeats_nothing(city_db: str) -> None:
    readings = _flood([(0, 1.0), (1, 1.6), (2, 2.1), (3, 2.6)])
    store = _store(city_db)
    try:
        first = _feed(store, _evaluator(store), readings[:3])
        assert first == [
            "fg-welang-1 flood_level opened 1",
            "fg-welang-1 flood_level escalated 2",
            "fg-welang-2 upstream opened 2",
        ]
    finally:
        store.close()
    # A restart: the broker redelivers everything, committed or not.
    store = _store(city_db)
    try:
        evaluator = _evaluator(store)
        assert evaluator.open[("fg-welang-1", Rule.FLOOD_LEVEL)].level == 2
        assert _feed(store, evaluator, readings) == [
            "fg-welang-1 flood_level escalated 3",
            "fg-welang-2 upstream escalated 3",
        ]
    finally:
        store.close()
    events = alert_events(city_db)
    assert [(e["sensor_id"], e["change"], e["level"]) for e in events] == [
        ("fg-welang-1", "opened", 1),
        ("fg-welang-1", "escalated", 2),
        ("fg-welang-2", "opened", 2),
        ("fg-welang-1", "escalated", 3),
        ("fg-welang-2", "escalated", 3),
    ]
    assert events[0]["observed_at"] == T0 + timedelta(minutes=1)
    assert events[0]["value"] == 1.6 and "Waspada" in events[0]["message"]
    with psycopg.connect(city_db) as conn:
        gauge = conn.execute(
            "SELECT level, value, observed_at FROM gauge_status WHERE sensor_id = 'fg-welang-1'"
        ).fetchone()
        alert = conn.execute(
            "SELECT level, state, opened_at, updated_at FROM alerts WHERE rule = 'flood_level'"
        ).fetchone()
    assert gauge == (3, 2.6, T0 + timedelta(minutes=3))
    assert alert == (3, "open", T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))


def test_the_same_transition_committed_twice_is_stored_once(city_db: str) -> None:
    store = _store(city_db)
    try:
        evaluator = _evaluator(store)
        evaluator.observe(_flood([(0, 2.6)]), received_us=WALL_US, wall_us=WALL_US)
        outcome = evaluator.take()
        stored = store.commit(outcome, published_event_id=0)
        assert len(stored) == 2
        assert transition_json(stored[0])["id"] == alert_events(city_db)[0]["id"]
        assert store.commit(outcome, published_event_id=0) == []
        assert len(alert_events(city_db)) == 2
        # What a crash may have left unpublished is found again.
        assert [e["id"] for e in store.events_after(0)] == [e.event_id for e in stored]
    finally:
        store.close()


def test_acknowledgements_are_never_overwritten(city_db: str) -> None:
    store = _store(city_db)
    try:
        evaluator = _evaluator(store)
        _feed(store, evaluator, _flood([(0, 1.6)]))
        with psycopg.connect(city_db, autocommit=True) as conn:
            conn.execute(
                "UPDATE alerts SET acknowledged_at = now(), acknowledged_by = 'operator-1'"
            )
        _feed(store, evaluator, _flood([(1, 2.6)]))
    finally:
        store.close()
    with psycopg.connect(city_db) as conn:
        row = conn.execute(
            "SELECT level, acknowledged_by FROM alerts WHERE rule = 'flood_level'"
        ).fetchone()
    assert row == (3, "operator-1")


def test_a_second_instance_waits_until_the_first_lets_go(city_db: str) -> None:
    first = _store(city_db)
    second = _unlocked(city_db)
    stop = threading.Event()
    got: list[bool] = []
    waiter = threading.Thread(
        target=lambda: got.append(second.acquire(retry_s=0.05, stop=stop.is_set))
    )
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive() and got == []  # standing by
    first.close()
    waiter.join(timeout=10)
    assert got == [True]
    second.close()
    # Told to stop while waiting, a standby gives up.
    holder = _store(city_db)
    try:
        assert not _unlocked(city_db).acquire(retry_s=0.05, stop=lambda: True)
    finally:
        holder.close()


def test_losing_the_lock_connection_stops_the_commits(city_db: str) -> None:
    store = _store(city_db)
    try:
        evaluator = _evaluator(store)
        pid = store.lock.backend_pid
        with psycopg.connect(city_db, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        evaluator.observe(_flood([(0, 2.6)]), received_us=WALL_US, wall_us=WALL_US)
        with pytest.raises(LockLostError):
            store.commit(evaluator.take(), published_event_id=0)
    finally:
        store.close()
    assert alert_events(city_db) == []


def test_a_frozen_path_ends_the_lease_and_the_server_frees_the_lock(
    city_db: str, db_proxy: FreezableProxy
) -> None:
    bound_s = 2.0
    store = _unlocked(through(db_proxy, city_db), lock_timeout_s=bound_s)
    standby = _unlocked(city_db)
    try:
        assert store.acquire(retry_s=0.1, stop=lambda: False)
        store.lock.keep()
        assert store.lock.holds()
        db_proxy.freeze()
        started = time.monotonic()
        # The next confirmation hangs on the frozen path: the watchdog cuts it within the lease.
        time.sleep(store.lock.heartbeat_in_s())
        with pytest.raises(LockLostError):
            store.lock.keep()
        assert time.monotonic() - started <= bound_s * 0.75 + 0.5
        assert not store.lock.holds()
        with pytest.raises(LockLostError):
            store.lock.ensure()
        # Nobody told the server; it ends the idle session by itself, and the lock with it.
        assert standby.acquire(retry_s=0.1, stop=lambda: time.monotonic() - started > 30)
        assert time.monotonic() - started <= bound_s + 1.0
    finally:
        store.close()
        standby.close()


def test_a_restart_resumes_the_live_flag_or_infers_it_from_ingest(city_db: str) -> None:
    store = _store(city_db)
    try:
        assert store.snapshot(window_s=1_800, live_window_s=120).live is False  # nothing yet
        with psycopg.connect(city_db, autocommit=True) as conn:
            # Ingest stored its newest reading moments after it was taken: a live stream.
            conn.execute(
                "INSERT INTO latest_readings (sensor_id, metric, time, value, updated_at) "
                "VALUES ('fg-welang-1', 'water_level', now() - interval '5 s', 1.0, now())"
            )
        assert store.snapshot(window_s=1_800, live_window_s=120).live is True
        # What the last instance committed wins over the inference.
        evaluator = _evaluator(store)
        evaluator.observe(_flood([(0, 1.0)]), received_us=WALL_US, wall_us=WALL_US)
        outcome = evaluator.take()
        assert outcome.live is False  # a reading an hour old: a backfill, not live
        store.commit(outcome, published_event_id=0)
        assert store.snapshot(window_s=1_800, live_window_s=120).live is False
    finally:
        store.close()


def _flags(conninfo: str) -> list[tuple[int, str]]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT time, reason FROM reading_flags ORDER BY time").fetchall()
    return [(round((t - T0).total_seconds() / 60), reason) for t, reason in rows]


def test_suspect_readings_are_flagged_relabelled_and_believed(city_db: str) -> None:
    levels = [(0, 1.0), (1, 1.01), (2, 3.3), (3, 1.02), (4, 1.02), (5, 2.5), (6, 2.52)]
    with psycopg.connect(city_db, autocommit=True) as conn:
        db_store.prepare(conn)
        db_store.store(conn, _flood(levels))
    store = _store(city_db)
    try:
        snapshot = store.snapshot(window_s=1_800, live_window_s=120)
        evaluator = Evaluator(settings=AlertSettings(), sensors=snapshot.sensors)
        _feed(store, evaluator, _flood(levels[:3]))
        assert _flags(city_db) == [(2, "gradient")]
        _feed(store, evaluator, _flood(levels[3:]))
        assert _flags(city_db) == [(2, "spike"), (5, "gradient"), (6, "gradient")]
        # A delivery of the spike again leaves it a spike; the rise fit after a restart
        # leaves the flagged readings out.
        _feed(store, evaluator, _flood(levels[2:3]))
        assert _flags(city_db)[0] == (2, "spike")
        windows = store.snapshot(window_s=1_800, live_window_s=120).windows["fg-welang-1"]
        assert [round((t / US - T0.timestamp()) / 60) for t, _ in windows] == [0, 1, 3, 4]
        # The step stays: believed on its third reading, its readings are no longer suspect.
        _feed(store, evaluator, _flood([(7, 2.55)]))
        assert _flags(city_db) == [(2, "spike")]
    finally:
        store.close()


def test_a_failed_statement_is_a_store_error_not_a_driver_exception(city_db: str) -> None:
    store = _store(city_db)
    try:
        with pytest.raises(StoreError, match="UndefinedTable"), store.lock.use("a test") as conn:
            conn.execute("SELECT * FROM no_such_table")
    finally:
        store.close()


def test_the_read_only_role_reads_the_alert_tables(city_db: str) -> None:
    with psycopg.connect(city_db) as conn:
        conn.execute("SET ROLE pantau_readonly")
        for table in ("alerts", "alert_events", "gauge_status", "alert_rule_state"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM alerts")


def test_the_registry_carries_downstream_links(city_db: str, mini_city: City) -> None:
    store = _store(city_db)
    try:
        sensors = store.load_sensors()
    finally:
        store.close()
    assert sensors["fg-welang-1"].downstream == ("fg-welang-2",)
    assert sensors["fg-welang-3"].downstream == ()
    assert sensors["fg-welang-1"].thresholds_at(0) == mini_city.sensor("fg-welang-1").thresholds
    with psycopg.connect(city_db, autocommit=True) as conn:
        changed = mini_city.model_copy(
            update={
                "sensors": tuple(
                    s.model_copy(update={"travel_time_min": 30.0}) if s.id == "fg-welang-2" else s
                    for s in mini_city.sensors
                )
            }
        )
        registry.load_city(conn, changed)
    store = _store(city_db)
    try:
        assert store.load_sensors()["fg-welang-2"].travel_time_min == 30.0
    finally:
        store.close()


def test_a_city_file_may_not_link_to_an_unknown_gauge(tmp_path: Path) -> None:
    text = MINI_CITY.read_text().replace("downstream: [fg-welang-3]", "downstream: [fg-nowhere]")
    path = tmp_path / "city.yaml"
    path.write_text(text)
    with pytest.raises(CityFileError, match="downstream of unknown sensors: fg-nowhere"):
        load_city(path)


def test_an_unreachable_database_is_waited_for_not_a_crash() -> None:
    attempts: list[int] = []

    def stop() -> bool:
        attempts.append(1)
        return len(attempts) > 3

    store = AlertStore(
        conninfo=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
        connect_timeout_s=1,
        lock_timeout_s=20,
    )
    assert not store.acquire(retry_s=0.01, stop=stop)
    assert len(attempts) > 3
