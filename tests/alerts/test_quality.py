"""Quality control of water levels: range, gradient and spike checks, and real steps let
through; then the evaluator on simulated days with spikes and dropouts on every gauge."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts import quality
from alerts.evaluator import Evaluator
from alerts.model import Change, Rule, Transition
from pantau.city import City
from pantau.settings import AlertSettings
from simulators.faults import FaultConfig
from simulators.scenarios import FloodScenario, Scenario
from tests.fixtures.alerts import ScenarioRun, run_scenario, sensor_infos

US = 1_000_000
MIN = 60 * US
T0 = 1_800_000_000 * US
LIMITS = quality.Limits(max_rate_m_per_h=3.0, tolerance_m=0.1, step_readings=3)
GLITCHES = FaultConfig(spikes=0.01, dropouts=0.01)
WELANG = ("fg-welang-1", "fg-welang-2", "fg-welang-3")
FLOOD_RULES = (Rule.FLOOD_LEVEL, Rule.RISING_FAST, Rule.UPSTREAM)


def _series(values: list[float], limits: quality.Limits = LIMITS) -> list[quality.Verdict]:
    state: dict[str, Any] = {}
    return [quality.check(state, T0 + i * MIN, v, limits) for i, v in enumerate(values)]


def test_a_one_or_two_reading_spike_is_suspect_then_labelled_a_spike() -> None:
    for spike in ([3.3], [3.3, 3.4], [-0.3]):
        verdicts = _series([1.0, 1.01, *spike, 1.02, 1.03])
        accepted = [v.accepted for v in verdicts]
        assert accepted == [True, True, *([False] * len(spike)), True, True], spike
        assert {v.reason for v in verdicts[2 : 2 + len(spike)]} == {quality.Reason.GRADIENT}
        back = verdicts[2 + len(spike)]
        assert back.settled == "spike"
        assert back.spikes == [(T0 + (2 + i) * MIN, v) for i, v in enumerate(spike)]
        assert back.reference == (T0 + MIN, 1.01)


def test_a_rise_the_river_can_make_passes_and_a_gap_allows_more() -> None:
    # 0.1 m a minute (6 m/h) is within a minute's tolerance plus rate: all accepted.
    assert all(v.accepted for v in _series([1.0 + 0.1 * i for i in range(30)]))
    # Twice the tolerance plus rate in one minute is not; after an hour's gap it is.
    state: dict[str, Any] = {}
    quality.check(state, T0, 1.0, LIMITS)
    assert not quality.check(state, T0 + MIN, 1.3, LIMITS).accepted
    state = {}
    quality.check(state, T0, 1.0, LIMITS)
    assert quality.check(state, T0 + 60 * MIN, 3.0, LIMITS).accepted


def test_outside_the_sensors_range_is_suspect_and_moves_nothing() -> None:
    limits = quality.Limits(
        max_rate_m_per_h=3.0, tolerance_m=0.1, step_readings=3, range_min_m=0.0, range_max_m=8
    )
    state: dict[str, Any] = {}
    assert quality.check(state, T0, 1.0, limits).accepted
    before = dict(state)
    verdict = quality.check(state, T0 + MIN, -0.2, limits)
    assert (verdict.accepted, verdict.reason) == (False, quality.Reason.RANGE)
    assert quality.check(state, T0 + 2 * MIN, 8.5, limits).reason is quality.Reason.RANGE
    assert state["ref"] == before["ref"]
    assert quality.check(state, T0 + 3 * MIN, 1.0, limits).accepted


def test_a_real_step_is_believed_after_it_stays_never_suppressed() -> None:
    verdicts = _series([1.0, 1.0, 2.5, 2.52, 2.55, 2.57])
    assert [v.accepted for v in verdicts] == [True, True, False, False, True, True]
    believed = verdicts[4]
    assert believed.settled == "step"
    assert believed.believed == [(T0 + 2 * MIN, 2.5), (T0 + 3 * MIN, 2.52)]
    # A flash flood climbing faster than the limit, reading after reading, gets through too.
    flash = _series([1.0, *[1.0 + 0.4 * i for i in range(1, 8)]])
    assert [v.accepted for v in flash[:4]] == [True, False, False, True]
    assert all(v.accepted for v in flash[4:])
    # Crossing to the other side of the accepted level starts the count again.
    zigzag = _series([1.0, 3.0, -0.5, 3.0, 3.1, 3.2])
    assert [v.accepted for v in zigzag] == [True, False, False, False, False, True]


def test_a_late_or_repeated_reading_is_only_compared() -> None:
    state: dict[str, Any] = {}
    for i, v in enumerate([1.0, 1.0, 3.0]):
        quality.check(state, T0 + i * MIN, v, LIMITS)
    before = {k: list(v) if isinstance(v, list) else v for k, v in state.items()}
    assert quality.check(state, T0 + 2 * MIN, 3.0, LIMITS).reason is quality.Reason.GRADIENT
    assert quality.check(state, T0 - 5 * MIN, 1.02, LIMITS).accepted
    assert not quality.check(state, T0 - 5 * MIN, 2.0, LIMITS).accepted
    assert state == before


@settings(max_examples=100, deadline=None)
@given(
    base=st.floats(min_value=0.2, max_value=2.0),
    noise=st.lists(st.floats(min_value=-0.02, max_value=0.02), min_size=8, max_size=40),
    at=st.integers(min_value=1, max_value=5),
    length=st.integers(min_value=1, max_value=2),
    height=st.floats(min_value=0.3, max_value=5.0),
    up=st.booleans(),
)
def test_no_spike_of_one_or_two_readings_is_ever_accepted(
    base: float, noise: list[float], at: int, length: int, height: float, up: bool
) -> None:
    values = [base + e for e in noise]
    for i in range(at, at + length):
        values[i] = base + (height if up else -height)
    verdicts = _series(values)
    assert not any(v.accepted for v in verdicts[at : at + length])
    assert all(v.accepted for i, v in enumerate(verdicts) if not at <= i < at + length)
    assert verdicts[at + length].settled == "spike"


# -------------------------------------------------------------------- on simulated days


def _run(city: City, scenario: Scenario, hours: float, **overrides: object) -> ScenarioRun:
    evaluator = Evaluator(settings=AlertSettings(**overrides), sensors=sensor_infos(city))
    run = ScenarioRun()
    run_scenario(evaluator, city, scenario, hours=hours, faults=GLITCHES, run=run)
    return run


def _sirens(transitions: list[Transition]) -> list[Transition]:
    return [t for t in transitions if t.rule is Rule.FLOOD_LEVEL and t.level >= 3]


def test_a_day_of_spikes_and_dropouts_opens_no_flood_alert(mini_city: City) -> None:
    run = _run(mini_city, Scenario(), hours=24)
    assert run.faults["spike"] >= 30 and run.faults["dropout"] >= 10
    assert [t for t in run.transitions if t.rule in FLOOD_RULES] == []
    assert _sirens(run.transitions) == []
    # Every wild value sent was recorded as suspect; nothing else was.
    for gauge in WELANG:
        thresholds = mini_city.sensor(gauge).thresholds
        assert thresholds is not None
        wild = {t for t, v in run.sent[gauge] if v >= thresholds.waspada or v < 0}
        flagged = {f.time_us for f in run.flags.values() if f.sensor_id == gauge}
        assert wild and flagged == wild, gauge
    reasons = Counter((f.sensor_id == "fg-welang-3", f.reason) for f in run.flags.values())
    # The one gauge with a measuring range calls readings below its zero out of range.
    assert reasons[(True, "range")] > 0 and reasons[(False, "range")] == 0
    assert reasons[(False, "spike")] > 0


def test_a_flood_with_spikes_still_warns_in_order_confirmed_and_ahead(mini_city: City) -> None:
    run = _run(mini_city, FloodScenario(), hours=18)
    interval_us = 60 * US
    for gauge in WELANG:
        chain = [
            (t.change, t.level)
            for t in run.transitions
            if t.sensor_id == gauge and t.rule is Rule.FLOOD_LEVEL
        ]
        assert chain[:3] == [(Change.OPENED, 1), (Change.ESCALATED, 2), (Change.ESCALATED, 3)]
        awas = next(
            t.observed_us
            for t in run.transitions
            if t.sensor_id == gauge and t.rule is Rule.FLOOD_LEVEL and t.level == 3
        )
        thresholds = mini_city.sensor(gauge).thresholds
        assert thresholds is not None
        # The crossing: the first accepted reading at Awas; confirmed by the next one.
        flagged = {f.time_us for f in run.flags.values() if f.sensor_id == gauge}
        crossing = next(t for t, v in run.sent[gauge] if v >= thresholds.awas and t not in flagged)
        assert crossing < awas <= crossing + interval_us * 1.05, gauge
        rising = next(
            t.observed_us
            for t in run.transitions
            if t.sensor_id == gauge and t.rule is Rule.RISING_FAST and t.change is Change.OPENED
        )
        assert rising <= awas - 15 * 60 * US, gauge
