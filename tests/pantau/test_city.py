"""City files: the default and test cities load; bad files fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pantau.catalogue import Family
from pantau.city import CityFileError, FloodLevel, Thresholds, load_city
from pantau.settings import DEFAULT_CITY_FILE

MINI_CITY = Path(__file__).parent.parent / "data" / "mini-city.yaml"

KECAMATAN = {
    "Purwodadi", "Tutur", "Puspo", "Tosari", "Lumbang", "Pasrepan", "Kejayan", "Wonorejo",
    "Purwosari", "Prigen", "Sukorejo", "Pandaan", "Gempol", "Beji", "Bangil", "Rembang",
    "Kraton", "Pohjentrek", "Gondangwetan", "Rejoso", "Winongan", "Grati", "Lekok", "Nguling",
}  # fmt: skip
# Kabupaten Pasuruan lies roughly within this box (degrees).
LAT_RANGE = (-7.95, -7.55)
LON_RANGE = (112.55, 113.10)


def test_default_city_has_every_kecamatan() -> None:
    city = load_city(DEFAULT_CITY_FILE)
    assert city.name == "Kabupaten Pasuruan"
    assert city.timezone == "Asia/Jakarta"
    assert {k.name for k in city.kecamatan} == KECAMATAN
    assert len(city.kecamatan) == 24


def test_default_city_gauges_cover_the_watched_rivers() -> None:
    city = load_city(DEFAULT_CITY_FILE)
    gauges = city.of_family(Family.FLOOD_GAUGE)
    assert {g.river for g in gauges} >= {
        "Welang", "Petung", "Kedunglarangan", "Rejoso", "Wrati", "Gembong"
    }  # fmt: skip
    for gauge in gauges:
        assert gauge.thresholds is not None
        assert gauge.river_km is not None
    # Gauges on one river are ordered upstream to downstream by river_km, the first at 0.
    for river in {g.river for g in gauges}:
        kms = sorted(g.river_km or 0.0 for g in gauges if g.river == river)
        assert kms[0] == 0
        assert len(set(kms)) == len(kms)


def test_default_city_counts_traffic_on_the_main_roads() -> None:
    city = load_city(DEFAULT_CITY_FILE)
    counters = city.of_family(Family.TRAFFIC_COUNTER)
    national = {
        c.kecamatan
        for c in counters
        if c.road_class == "national" and c.road and "Surabaya" in c.road
    }
    assert national >= {"Gempol", "Bangil", "Kraton", "Rejoso", "Grati", "Nguling"}
    assert any(c.road and "Pandaan" in c.road and "Prigen" in c.road for c in counters)
    assert city.of_family(Family.STREET_NODE)
    assert len(city.sensors) == 48


@pytest.mark.parametrize("path", [DEFAULT_CITY_FILE, MINI_CITY], ids=["pasuruan", "mini"])
def test_coordinates_lie_in_the_regency(path: Path) -> None:
    city = load_city(path)
    places = [(k.name, k.lat, k.lon) for k in city.kecamatan]
    places += [(s.id, s.lat, s.lon) for s in city.sensors]
    for name, lat, lon in places:
        assert LAT_RANGE[0] <= lat <= LAT_RANGE[1], name
        assert LON_RANGE[0] <= lon <= LON_RANGE[1], name


def test_mini_city_loads() -> None:
    city = load_city(MINI_CITY)
    assert [s.id for s in city.sensors] == [
        "fg-welang-1", "fg-welang-2", "fg-welang-3",
        "tc-bangil-1", "tc-bangil-2", "sn-bangil-1", "sn-bangil-2",
    ]  # fmt: skip
    assert city.sensor("tc-bangil-1").road_class == "national"
    with pytest.raises(KeyError):
        city.sensor("nope-1")


def _mini() -> dict[str, object]:
    raw = yaml.safe_load(MINI_CITY.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def _sensors(raw: dict[str, object]) -> list[dict[str, object]]:
    sensors = raw["sensors"]
    assert isinstance(sensors, list)
    return sensors


def test_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "city.yaml"
    path.write_text("city: {name: [unclosed\n", encoding="utf-8")
    with pytest.raises(CityFileError, match="not valid YAML") as caught:
        load_city(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(CityFileError, match="No such file") as caught:
        load_city(path)
    assert str(path) in str(caught.value)


def test_not_a_city(tmp_path: Path) -> None:
    with pytest.raises(CityFileError, match="`city` section"):
        load_city(_write(tmp_path, ["a", "list"]))


def test_unknown_kecamatan(tmp_path: Path) -> None:
    raw = _mini()
    _sensors(raw)[0]["kecamatan"] = "Atlantis"
    with pytest.raises(CityFileError, match="unknown kecamatan: Atlantis"):
        load_city(_write(tmp_path, raw))


def test_duplicate_sensor_id(tmp_path: Path) -> None:
    raw = _mini()
    _sensors(raw)[1]["id"] = "fg-welang-1"
    with pytest.raises(CityFileError, match="duplicate sensor ids: fg-welang-1"):
        load_city(_write(tmp_path, raw))


def test_thresholds_must_rise(tmp_path: Path) -> None:
    raw = _mini()
    _sensors(raw)[0]["thresholds"] = {"waspada": 2.0, "siaga": 1.5, "awas": 2.5}
    with pytest.raises(CityFileError, match="thresholds must rise") as caught:
        load_city(_write(tmp_path, raw))
    assert "sensors.0" in str(caught.value)


def test_gauge_without_thresholds(tmp_path: Path) -> None:
    raw = _mini()
    del _sensors(raw)[0]["thresholds"]
    with pytest.raises(CityFileError, match="needs river and thresholds"):
        load_city(_write(tmp_path, raw))


def test_unknown_family_and_field(tmp_path: Path) -> None:
    raw = _mini()
    _sensors(raw)[3]["family"] = "weather_station"
    _sensors(raw)[4]["colour"] = "red"
    with pytest.raises(CityFileError) as caught:
        load_city(_write(tmp_path, raw))
    message = str(caught.value)
    assert "sensors.3.family" in message
    assert "sensors.4.colour" in message


def test_threshold_levels() -> None:
    thresholds = Thresholds(waspada=1.5, siaga=2.0, awas=2.5)
    assert thresholds.level(0.3) is FloodLevel.NORMAL
    assert thresholds.level(1.49) is FloodLevel.NORMAL
    assert thresholds.level(1.5) is FloodLevel.WASPADA
    assert thresholds.level(1.99) is FloodLevel.WASPADA
    assert thresholds.level(2.0) is FloodLevel.SIAGA
    assert thresholds.level(2.5) is FloodLevel.AWAS
    assert thresholds.level(9.0) is FloodLevel.AWAS
    assert FloodLevel.AWAS > FloodLevel.SIAGA > FloodLevel.WASPADA > FloodLevel.NORMAL
    assert FloodLevel.SIAGA.label == "Siaga"


def test_equal_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="must rise"):
        Thresholds(waspada=1.0, siaga=1.0, awas=2.0)
