"""The sensor registry: loading a city is idempotent and keeps the history of thresholds; gateways
report only for the sensors linked to them."""

from __future__ import annotations

from datetime import datetime

import psycopg
import pytest

from pantau.catalogue import Family
from pantau.city import City, Gateway, Sensor, Thresholds, load_city
from pantau.db.registry import (
    LoadResult,
    RegistryError,
    gateway_sensors,
    register_gateway,
    sensor_families,
    snapshot,
    unlink_gateway,
)
from pantau.db.registry import load_city as load_into_registry
from pantau.settings import DEFAULT_CITY_FILE


def _snapshot(conn: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        for table in ("kecamatan", "sensors", "flood_thresholds", "gateways", "gateway_sensors")
    }


def _with_sensor(city: City, sensor_id: str, **changes: object) -> City:
    sensors = tuple(s.model_copy(update=changes) if s.id == sensor_id else s for s in city.sensors)
    return city.model_copy(update={"sensors": sensors})


def _current(conn: psycopg.Connection, sensor_id: str) -> tuple[float, float, float]:
    row = conn.execute(
        "SELECT waspada, siaga, awas FROM current_flood_thresholds WHERE sensor_id = %s",
        [sensor_id],
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_loading_twice_changes_nothing(db_url: str, mini_city: City) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        first = load_into_registry(conn, mini_city)
        assert first == LoadResult(kecamatan=3, sensors=7, thresholds_changed=3, gateways=3)
        before = _snapshot(conn)
        second = load_into_registry(conn, mini_city)
        assert second == LoadResult(kecamatan=3, sensors=7, thresholds_changed=0, gateways=3)
        # Not even updated_at moves: unchanged rows are not rewritten.
        assert _snapshot(conn) == before
        sensors = conn.execute("SELECT id, family, road_class FROM sensors ORDER BY id").fetchall()
    assert ("tc-bangil-1", "traffic_counter", "national") in sensors
    assert len(sensors) == 7


def test_changed_thresholds_add_a_version(city_db: str, mini_city: City) -> None:
    with psycopg.connect(city_db, autocommit=True) as conn:
        assert _current(conn, "fg-welang-1") == (1.5, 2.0, 2.5)
        raised = _with_sensor(
            mini_city, "fg-welang-1", thresholds=Thresholds(waspada=1.7, siaga=2.3, awas=2.9)
        )
        result = load_into_registry(conn, raised)
        assert result.thresholds_changed == 1
        assert _current(conn, "fg-welang-1") == (1.7, 2.3, 2.9)
        history = conn.execute(
            "SELECT valid_from, waspada FROM flood_thresholds WHERE sensor_id = 'fg-welang-1' "
            "ORDER BY valid_from"
        ).fetchall()
        assert [w for _, w in history] == [1.5, 1.7]
        assert isinstance(history[0][0], datetime)
        assert history[0][0] < history[1][0]
        # Other gauges keep their single version.
        assert _current(conn, "fg-welang-2") == (1.6, 2.2, 2.8)
        # Going back to the old values is a change too: a third version, the newest current.
        assert load_into_registry(conn, mini_city).thresholds_changed == 1
        assert _current(conn, "fg-welang-1") == (1.5, 2.0, 2.5)
        count = conn.execute(
            "SELECT count(*) FROM flood_thresholds WHERE sensor_id = 'fg-welang-1'"
        ).fetchone()
        assert count == (3,)


def test_changed_sensor_fields_are_updated(city_db: str, mini_city: City) -> None:
    with psycopg.connect(city_db, autocommit=True) as conn:
        before = conn.execute(
            "SELECT name, updated_at FROM sensors WHERE id = 'sn-bangil-2'"
        ).fetchone()
        assert before is not None
        renamed = _with_sensor(mini_city, "sn-bangil-2", name="Lampu Jalan Stasiun Bangil")
        load_into_registry(conn, renamed)
        after = conn.execute(
            "SELECT name, updated_at FROM sensors WHERE id = 'sn-bangil-2'"
        ).fetchone()
        assert after is not None
        assert after[0] == "Lampu Jalan Stasiun Bangil"
        assert after[1] > before[1]


def test_sensors_left_out_of_the_file_stay(city_db: str, mini_city: City) -> None:
    smaller = mini_city.model_copy(update={"sensors": mini_city.sensors[:2]})
    with psycopg.connect(city_db, autocommit=True) as conn:
        load_into_registry(conn, smaller)
        assert len(sensor_families(conn)) == 7


def test_sensor_families(conn: psycopg.Connection) -> None:
    families = sensor_families(conn)
    assert families == {
        "fg-welang-1": Family.FLOOD_GAUGE,
        "fg-welang-2": Family.FLOOD_GAUGE,
        "fg-welang-3": Family.FLOOD_GAUGE,
        "tc-bangil-1": Family.TRAFFIC_COUNTER,
        "tc-bangil-2": Family.TRAFFIC_COUNTER,
        "sn-bangil-1": Family.STREET_NODE,
        "sn-bangil-2": Family.STREET_NODE,
    }


def test_default_city_loads_into_the_registry(db_url: str) -> None:
    city = load_city(DEFAULT_CITY_FILE)
    gauges = [s for s in city.sensors if s.thresholds is not None]
    with psycopg.connect(db_url, autocommit=True) as conn:
        result = load_into_registry(conn, city)
        assert result == LoadResult(
            kecamatan=24, sensors=48, thresholds_changed=len(gauges), gateways=len(city.gateways)
        )
        assert len(sensor_families(conn)) == 48
        assert gateway_sensors(conn) == city.gateway_sensors()
        row = conn.execute("SELECT count(*) FROM current_flood_thresholds").fetchone()
    assert row == (len(gauges),)
    assert all(isinstance(s, Sensor) for s in gauges)


def test_city_gateways_are_registered_with_their_sensors(city_db: str, mini_city: City) -> None:
    with psycopg.connect(city_db, autocommit=True) as conn:
        assert gateway_sensors(conn) == mini_city.gateway_sensors()
        assert gateway_sensors(conn)["gw-purwosari"] == {"fg-welang-1"}
        known = snapshot(conn)
    assert known.gateways == mini_city.gateway_sensors()
    assert set(known.families) == {s.id for s in mini_city.sensors}


def test_links_are_added_by_the_file_and_revoked_by_hand(city_db: str, mini_city: City) -> None:
    with psycopg.connect(city_db, autocommit=True) as conn:
        assert register_gateway(conn, "gw-purwosari", ["fg-welang-1", "fg-welang-2"]) == [
            "fg-welang-2"
        ]
        # Loading the file again keeps a link added by hand; the file only adds.
        load_into_registry(conn, mini_city)
        assert gateway_sensors(conn)["gw-purwosari"] == {"fg-welang-1", "fg-welang-2"}
        assert unlink_gateway(conn, "gw-purwosari", ["fg-welang-2", "tc-bangil-1"]) == [
            "fg-welang-2"
        ]
        assert gateway_sensors(conn)["gw-purwosari"] == {"fg-welang-1"}
        name = conn.execute("SELECT name FROM gateways WHERE id = 'gw-purwosari'").fetchone()
    assert name == ("Gateway LoRaWAN Kecamatan Purwosari",)  # registering kept the file's name


def test_a_sensor_is_never_a_gateway(city_db: str) -> None:
    with psycopg.connect(city_db, autocommit=True) as conn:
        with pytest.raises(RegistryError, match="reports only for itself"):
            register_gateway(conn, "sn-bangil-1", ["fg-welang-1"])
        with pytest.raises(RegistryError, match="fg-nowhere-1"):
            register_gateway(conn, "gw-new", ["fg-welang-1", "fg-nowhere-1"])
        # Even a link made behind the registry's back gives a sensor no right to speak for others.
        conn.execute("INSERT INTO gateways (id, name) VALUES ('sn-bangil-2', 'x')")
        conn.execute(
            "INSERT INTO gateway_sensors (gateway_id, sensor_id) VALUES ('sn-bangil-2', 'fg-welang-1')"
        )
        assert "sn-bangil-2" not in gateway_sensors(conn)
        assert "gw-new" not in gateway_sensors(conn)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gateways": (Gateway(id="fg-welang-1", name="x", sensors=("fg-welang-2",)),)},
         "gateway ids that are sensor ids"),
        ({"gateways": (Gateway(id="gw-x", name="x", sensors=("fg-nowhere",)),)},
         "gateways list unknown sensors"),
        ({"gateways": (Gateway(id="gw-x", name="x", kecamatan="Atlantis", sensors=("fg-welang-1",)),)},
         "unknown kecamatan"),
        ({"gateways": (Gateway(id="gw-x", name="x", sensors=("fg-welang-1",)),) * 2},
         "duplicate gateway ids"),
    ],
)  # fmt: skip
def test_city_files_keep_gateways_consistent(
    mini_city: City, change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        City.model_validate({**mini_city.model_dump(), **change})
