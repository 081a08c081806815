"""The evaluator on simulated runs fed straight in (no broker): rule wiring, the alert
lifecycle, the clock, late readings, and the warning-post command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.evaluator import Evaluator
from alerts.model import Change, OpenAlert, Rule, Transition
from pantau.city import City, Thresholds
from pantau.payload import Reading
from pantau.settings import AlertSettings
from simulators.scenarios import FloodScenario, get_scenario
from tests.fixtures.alerts import RULES_ONLY, run_scenario, sensor_infos

US = 1_000_000
T0 = datetime(2027, 1, 15, 8, tzinfo=UTC)
WALL_US = round(T0.timestamp() * US) + 86_400 * US


def _evaluator(city: City, **overrides: object) -> Evaluator:
    return Evaluator(settings=AlertSettings(**overrides), sensors=sensor_infos(city))


def _observe(evaluator: Evaluator, minute: float, sensor: str, metric: str, value: float) -> None:
    reading = Reading.at(T0 + timedelta(minutes=minute), sensor, metric, value)
    evaluator.observe([reading], received_us=WALL_US, wall_us=WALL_US)


def _of(transitions: list[Transition], sensor: str, rule: Rule) -> list[tuple[Change, int]]:
    return [(t.change, t.level) for t in transitions if t.sensor_id == sensor and t.rule == rule]


def _at(transitions: list[Transition], sensor: str, rule: Rule, level: int) -> int:
    return next(
        t.observed_us
        for t in transitions
        if t.sensor_id == sensor and t.rule == rule and t.level == level
    )


def test_a_flood_runs_up_and_down_every_welang_gauge_with_warnings_ahead(
    mini_city: City,
) -> None:
    evaluator = _evaluator(mini_city)
    transitions = run_scenario(evaluator, mini_city, FloodScenario(), hours=18)
    for gauge in ("fg-welang-1", "fg-welang-2", "fg-welang-3"):
        chain = _of(transitions, gauge, Rule.FLOOD_LEVEL)
        assert chain[:3] == [(Change.OPENED, 1), (Change.ESCALATED, 2), (Change.ESCALATED, 3)]
        assert chain[-1][0] is Change.RESOLVED
        assert all(change is Change.DE_ESCALATED for change, _ in chain[3:-1])
    for gauge in ("fg-welang-2", "fg-welang-3"):
        awas = _at(transitions, gauge, Rule.FLOOD_LEVEL, 3)
        rising = next(t for t in transitions if t.sensor_id == gauge and t.rule is Rule.RISING_FAST)
        assert rising.observed_us <= awas - 15 * 60 * US
        assert rising.target.predicted_at_us is not None
        advisory = _at(transitions, gauge, Rule.UPSTREAM, 1)
        assert advisory < _at(transitions, gauge, Rule.FLOOD_LEVEL, 1)
    # Everything that opened has closed again.
    assert evaluator.open == {}
    assert all(g.level == 0 for g in evaluator.gauges.values())


def test_a_late_reading_feeds_the_fit_but_never_moves_a_gauge_back(mini_city: City) -> None:
    evaluator = _evaluator(mini_city)
    for minute in range(0, 20):
        _observe(evaluator, minute, "fg-welang-1", "water_level", 1.0 + minute * 0.001)
    evaluator.take()
    # An old reading arrives late: it feeds the fit, the gauge's level is unchanged.
    _observe(evaluator, 5.5, "fg-welang-1", "water_level", 1.1)
    outcome = evaluator.take()
    assert outcome.transitions == [] and outcome.flags == {}
    assert evaluator.gauges["fg-welang-1"].value == 1.0 + 19 * 0.001
    assert len(evaluator.windows["fg-welang-1"]) == 21
    # One far above Awas is suspect as well as late: recorded, and kept out of the fit.
    _observe(evaluator, 6.5, "fg-welang-1", "water_level", 3.0)
    outcome = evaluator.take()
    assert outcome.transitions == []
    assert [(f.time_us, f.reason) for f in outcome.flags.values()] == [
        (round((T0 + timedelta(minutes=6.5)).timestamp() * US), "gradient")
    ]
    assert len(evaluator.windows["fg-welang-1"]) == 21
    # Redelivered in-order readings change nothing either.
    for minute in range(0, 20):
        _observe(evaluator, minute, "fg-welang-1", "water_level", 1.0 + minute * 0.001)
    assert evaluator.take().transitions == []


def test_upstream_travel_time_comes_from_the_city_file_or_river_km(mini_city: City) -> None:
    evaluator = _evaluator(mini_city, wave_speed_km_per_h=6.0, **RULES_ONLY)
    _observe(evaluator, 0, "fg-welang-1", "water_level", 2.1)  # Siaga at km 0
    advisory = next(t for t in evaluator.take().transitions if t.rule is Rule.UPSTREAM)
    assert advisory.sensor_id == "fg-welang-2" and advisory.level == 2
    # 12 km at 6 km/h.
    assert advisory.target.predicted_at_us == round(T0.timestamp() * US) + 2 * 3_600 * US
    assert advisory.target.details["travel_time_min"] == 120

    given = mini_city.model_copy(
        update={
            "sensors": tuple(
                s.model_copy(update={"travel_time_min": 45.0}) if s.id == "fg-welang-1" else s
                for s in mini_city.sensors
            )
        }
    )
    evaluator = _evaluator(given, **RULES_ONLY)
    _observe(evaluator, 0, "fg-welang-1", "water_level", 2.1)
    advisory = next(t for t in evaluator.take().transitions if t.rule is Rule.UPSTREAM)
    assert advisory.target.details["travel_time_min"] == 45


def test_the_clock_follows_the_stream_and_the_wall_only_when_live(mini_city: City) -> None:
    evaluator = _evaluator(mini_city, live_window_s=60)
    old = Reading.at(T0, "fg-welang-1", "water_level", 1.0)
    evaluator.observe([old], received_us=WALL_US, wall_us=WALL_US)
    assert evaluator.clock_us == old.time_us and not evaluator.live
    evaluator.tick(wall_us=WALL_US)
    assert evaluator.clock_us == old.time_us  # an accelerated run: no wall clock
    live = Reading.at(T0 + timedelta(days=1), "fg-welang-1", "water_level", 1.0)
    evaluator.observe([live], received_us=WALL_US, wall_us=WALL_US)
    assert evaluator.live
    evaluator.tick(wall_us=WALL_US + 600 * US)
    assert evaluator.clock_us == WALL_US + 540 * US
    # Quiet for ten minutes, live: every sensor seen is now offline (k = 3 × 60 s).
    offline = {t.sensor_id for t in evaluator.take().transitions if t.rule is Rule.OFFLINE}
    assert offline == {"fg-welang-1"}
    # A reading from the future never moves the clock past the wall clock and max_future.
    future = Reading.at(T0 + timedelta(days=30), "fg-welang-2", "water_level", 1.0)
    evaluator.observe([future], received_us=WALL_US, wall_us=WALL_US + 600 * US)
    assert evaluator.clock_us == WALL_US + 600 * US + 300 * US


def test_the_warning_post_command_follows_the_gauge(mini_city: City) -> None:
    evaluator = _evaluator(mini_city, **RULES_ONLY)
    assert evaluator.warning("fg-welang-1")["light"] == "off"
    _observe(evaluator, 0, "fg-welang-1", "water_level", 1.6)
    command = evaluator.warning("fg-welang-1")
    assert (command["light"], command["siren"], command["level"]) == ("yellow", False, "Waspada")
    _observe(evaluator, 1, "fg-welang-1", "water_level", 2.6)
    command = evaluator.warning("fg-welang-1")
    assert (command["light"], command["siren"], command["level"]) == ("red", True, "Awas")
    assert "Awas" in command["reason"]
    # Downstream, the advisory alone lights yellow.
    downstream = evaluator.warning("fg-welang-2")
    assert (downstream["light"], downstream["rules"]) == ("yellow", ["upstream"])


def test_thresholds_in_force_at_the_reading_time_are_used(mini_city: City) -> None:
    sensors = sensor_infos(mini_city)
    gauge = sensors["fg-welang-1"]
    recalibrated = Thresholds(waspada=1.0, siaga=1.2, awas=1.4)
    change_us = round((T0 + timedelta(minutes=10)).timestamp() * US)
    sensors["fg-welang-1"] = type(gauge)(
        **{
            **{f: getattr(gauge, f) for f in gauge.__dataclass_fields__},
            "thresholds": (*gauge.thresholds, (change_us, recalibrated)),
        }
    )
    evaluator = Evaluator(settings=AlertSettings(**RULES_ONLY), sensors=sensors)
    _observe(evaluator, 5, "fg-welang-1", "water_level", 1.3)
    assert evaluator.take().transitions == []
    _observe(evaluator, 11, "fg-welang-1", "water_level", 1.3)
    assert _of(evaluator.take().transitions, "fg-welang-1", Rule.FLOOD_LEVEL) == [
        (Change.OPENED, 2)
    ]


def test_a_restored_open_alert_is_not_opened_again(mini_city: City) -> None:
    opened = round(T0.timestamp() * US)
    evaluator = Evaluator(
        settings=AlertSettings(**RULES_ONLY),
        sensors=sensor_infos(mini_city),
        open_alerts={
            ("fg-welang-1", "flood_level"): OpenAlert(
                level=2, opened_us=opened, updated_us=opened, message="m", message_en="m"
            )
        },
    )
    _observe(evaluator, 1, "fg-welang-1", "water_level", 2.1)
    assert _of(evaluator.take().transitions, "fg-welang-1", Rule.FLOOD_LEVEL) == []
    _observe(evaluator, 2, "fg-welang-1", "water_level", 2.6)
    escalated = [
        (t.change, t.previous_level, t.level)
        for t in evaluator.take().transitions
        if t.rule is Rule.FLOOD_LEVEL
    ]
    assert escalated == [(Change.ESCALATED, 2, 3)]


def test_city_rules_on_a_rush_hour_and_rejected_payloads(mini_city: City) -> None:
    evaluator = _evaluator(mini_city)
    transitions = run_scenario(evaluator, mini_city, get_scenario("rush-hour"), hours=4)
    jams = {t.sensor_id for t in transitions if t.rule is Rule.CONGESTION}
    # Occupancy up and speed down for ten minutes on at least one road, and only on roads.
    assert jams and jams <= {"tc-bangil-1", "tc-bangil-2"}
    evaluator.rejected({"sn-bangil-1": 10, "gw-unknown": 50})
    assert [(t.sensor_id, t.rule) for t in evaluator.take().transitions] == [
        ("sn-bangil-1", Rule.REJECTED)
    ]


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(list(range(40))), repeats=st.integers(min_value=1, max_value=2))
def test_any_delivery_order_only_moves_a_gauge_forward(
    order: list[int], repeats: int, mini_city: City
) -> None:
    """Whatever order readings come in (and redelivered), a flood transition is only ever
    caused by the newest reading so far."""
    evaluator = _evaluator(mini_city)
    newest = -1
    for minute in order * repeats:
        _observe(evaluator, minute, "fg-welang-1", "water_level", 1.0 + minute * 0.05)
        for t in evaluator.take().transitions:
            if t.rule is Rule.FLOOD_LEVEL:
                assert minute > newest
                assert t.observed_us == round((T0 + timedelta(minutes=minute)).timestamp() * US)
        newest = max(newest, minute)
    assert evaluator.gauges["fg-welang-1"].observed_us == round(
        (T0 + timedelta(minutes=39)).timestamp() * US
    )


def test_a_level_needs_two_readings_and_a_suspect_one_moves_nothing(mini_city: City) -> None:
    evaluator = _evaluator(mini_city)
    for minute, value in enumerate([1.45, 1.55]):
        _observe(evaluator, minute, "fg-welang-1", "water_level", value)
    assert evaluator.take().transitions == []  # Waspada reached once: not yet confirmed
    _observe(evaluator, 2, "fg-welang-1", "water_level", 1.62)
    assert _of(evaluator.take().transitions, "fg-welang-1", Rule.FLOOD_LEVEL) == [
        (Change.OPENED, 1)
    ]
    # A wild reading far above Awas: suspect, no level, no siren; the next one is back.
    _observe(evaluator, 3, "fg-welang-1", "water_level", 3.4)
    outcome = evaluator.take()
    assert outcome.transitions == [] and evaluator.warning("fg-welang-1")["siren"] is False
    assert [f.reason for f in outcome.flags.values()] == ["gradient"]
    _observe(evaluator, 4, "fg-welang-1", "water_level", 1.63)
    outcome = evaluator.take()
    assert [f.reason for f in outcome.flags.values()] == ["spike"]
    assert outcome.settled == {"spike": 1}
    assert evaluator.gauges["fg-welang-1"].value == 1.63


def test_an_upstream_advisory_is_folded_once_the_gauge_reaches_it(mini_city: City) -> None:
    evaluator = _evaluator(mini_city)
    transitions = run_scenario(evaluator, mini_city, FloodScenario(), hours=18)
    for gauge in ("fg-welang-2", "fg-welang-3"):
        advisories = [t for t in transitions if t.sensor_id == gauge and t.rule is Rule.UPSTREAM]
        announced = max(t.target.predicted_level or 1 for t in advisories)
        reached = _at(transitions, gauge, Rule.FLOOD_LEVEL, announced)
        resolved = next(t for t in advisories if t.change is Change.RESOLVED)
        # Resolved the moment the gauge itself reached what upstream announced, and said so.
        assert resolved.observed_us == reached, gauge
        assert resolved.target.message.startswith("Selesai: banjir kiriman dari hulu")
        assert all(t.observed_us <= reached for t in advisories), gauge
