"""The rules as pure functions: levels, hysteresis and dwell, predictions, messages."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts import rules
from alerts.fit import US_PER_H, theil_sen
from alerts.model import Target
from pantau.city import Thresholds

US = rules.US
MIN = 60 * US
T0 = 1_800_000_000 * US  # 2027-01-15 08:00 UTC = 15:00 WIB
THRESHOLDS = Thresholds(waspada=1.5, siaga=2.0, awas=2.5)


def _flood(state: dict[str, Any], minute: int, value: float, dwell_s: float = 600) -> int:
    return rules.flood_level(
        state, T0 + minute * MIN, value, THRESHOLDS, name="G", margin_m=0.05, dwell_s=dwell_s
    ).level


def test_flood_level_rises_at_once_and_can_skip_levels() -> None:
    state: dict[str, Any] = {}
    assert _flood(state, 0, 1.0) == 0
    assert _flood(state, 1, 2.1) == 2
    assert _flood(state, 2, 2.6) == 3
    assert state["since"] == T0 + 2 * MIN


def test_flood_level_steps_down_only_after_the_dwell_below_the_margin() -> None:
    state: dict[str, Any] = {}
    _flood(state, 0, 2.6)
    # Just under Awas but within the margin: stays Awas however long.
    assert [_flood(state, m, 2.47) for m in range(1, 30)] == [3] * 29
    # Clearly below: Awas until ten minutes have passed, then the highest level seen meanwhile.
    levels = [_flood(state, m, 2.3 if m < 35 else 1.7) for m in range(30, 41)]
    assert levels == [3] * 10 + [2]
    # A reading back up in between restarts the dwell.
    assert [_flood(state, m, v) for m, v in [(41, 1.6), (45, 1.98), (46, 1.6)]] == [2, 2, 2]
    assert _flood(state, 55, 1.6) == 2
    assert _flood(state, 56, 1.0) == 1


@settings(max_examples=200, deadline=None)
@given(
    threshold=st.sampled_from([1.5, 2.0, 2.5]),
    noise=st.lists(st.floats(min_value=-0.049, max_value=0.049), min_size=10, max_size=400),
)
def test_noise_hovering_at_a_threshold_never_flaps(threshold: float, noise: list[float]) -> None:
    """Within the step-down margin, a level is entered once and never left."""
    state: dict[str, Any] = {}
    levels = [_flood(state, minute, threshold + e, dwell_s=0) for minute, e in enumerate(noise)]
    changes = sum(1 for a, b in itertools.pairwise([0, *levels]) if a != b)
    assert changes <= 1 if threshold == 1.5 else changes <= 2


@settings(max_examples=100, deadline=None)
@given(
    noise=st.lists(st.floats(min_value=-0.3, max_value=0.3), min_size=10, max_size=300),
    dwell_min=st.integers(min_value=1, max_value=30),
)
def test_any_noise_steps_down_at_most_once_per_dwell(noise: list[float], dwell_min: int) -> None:
    state: dict[str, Any] = {}
    downs = []
    previous = 0
    for minute, e in enumerate(noise):
        level = _flood(state, minute, 2.0 + e, dwell_s=dwell_min * 60)
        if level < previous:
            downs.append(minute)
        previous = level
    assert all(b - a >= dwell_min for a, b in itertools.pairwise(downs))


def _fit(rate_m_per_h: float, level: float, points: int = 20) -> Any:
    times = T0 + np.arange(points, dtype=np.int64) * MIN
    values = level + rate_m_per_h * (times - times[-1]) / US_PER_H
    return theil_sen(times, values, min_points=6)


def _rising(state: dict[str, Any], fit: Any, level: int, minute: int = 19) -> Target:
    return rules.rising_fast(
        state, T0 + minute * MIN, fit.level_m, fit, level, THRESHOLDS, name="Pos Welang",
        rate_m_per_h=0.5, horizon_s=3_600, clear_rate_m_per_h=0.1, clear_s=900,
    )  # fmt: skip


def test_rising_fast_says_when_awas_is_expected() -> None:
    state: dict[str, Any] = {}
    # 2.0 m (Siaga) rising 1.2 m/h: Awas (2.5 m) in 25 minutes.
    target = _rising(state, _fit(1.2, 2.0), level=2)
    assert target.level == 3 and target.predicted_level == 3
    assert target.predicted_at_us == T0 + 19 * MIN + 25 * MIN
    assert target.message == (
        "Pos Welang: air naik cepat (1.20 m/jam); Awas diperkirakan dalam sekitar 25 menit"
    )
    assert target.message_en == (
        "Pos Welang: rising fast (1.20 m/h); Awas expected in about 25 minutes"
    )


def test_rising_fast_needs_both_rate_and_a_level_within_the_horizon() -> None:
    assert _rising({}, _fit(0.4, 1.45), level=0).level == 0  # too slow
    assert _rising({}, _fit(0.6, 0.5), level=0).level == 0  # Waspada 100 minutes away
    assert _rising({}, _fit(0.6, 1.0), level=0).level == 1  # Waspada in 50 minutes


def test_rising_fast_ends_at_awas_or_after_a_slow_spell() -> None:
    state: dict[str, Any] = {}
    assert _rising(state, _fit(1.0, 2.2), level=2).level == 3
    assert _rising(state, _fit(0.3, 2.3), level=2, minute=20).level == 3  # slower, not slow
    assert _rising(state, _fit(0.05, 2.3), level=2, minute=21).level == 3
    assert _rising(state, _fit(0.05, 2.3), level=2, minute=35).level == 3
    assert _rising(state, _fit(0.05, 2.3), level=2, minute=36).level == 0
    again: dict[str, Any] = {}
    assert _rising(again, _fit(1.0, 2.2), level=2).level == 3
    assert _rising(again, _fit(1.0, 2.6), level=3, minute=20).level == 0


def test_upstream_takes_the_worst_source_and_ends_with_the_last() -> None:
    state: dict[str, Any] = {}
    t = T0

    def signal(source: str, level: int, flood: int, arrival_min: int | None) -> Target:
        arrival = None if arrival_min is None else t + arrival_min * MIN
        return rules.upstream(
            state, source, level, arrival, t, 1.0, name="D", source_name=source.upper(),
            source_flood_level=flood,
        )  # fmt: skip

    first = signal("u1", 1, 0, 180)
    assert first.level == 1 and first.predicted_at_us == t + 180 * MIN
    assert first.predicted_level is None
    assert (
        first.message == "D: hulu (U1) naik cepat; banjir diperkirakan tiba dalam sekitar 180 menit"
    )
    worst = signal("u2", 2, 2, 60)
    assert worst.level == 2 and worst.details["upstream"] == "u2"
    assert worst.predicted_level == 2 and "upstream (U2) Siaga" in worst.message_en
    assert signal("u2", 0, 0, None).level == 1
    assert signal("u1", 0, 0, None).level == 0


def _jam(state: dict[str, Any], minute: int, occupancy: float, speed: float) -> int:
    return rules.congestion(
        state, T0 + minute * MIN, occupancy, speed, name="Jl. Raya", occupancy_min=0.7,
        speed_max_kmh=20, duration_s=600,
    ).level  # fmt: skip


def test_congestion_needs_both_conditions_for_the_whole_duration() -> None:
    state: dict[str, Any] = {}
    assert [_jam(state, m, 0.8, 15) for m in range(10)] == [0] * 10
    assert _jam(state, 10, 0.8, 15) == 2
    assert _jam(state, 11, 0.8, 35) == 2  # fast again, but not for long
    assert _jam(state, 21, 0.5, 35) == 0
    assert [_jam({}, m, 0.5, 10) for m in range(0, 30, 5)] == [0] * 6  # slow, not full
    assert [_jam({}, m, 0.9, 0) for m in range(0, 30, 5)] == [0] * 6  # no vehicles at all


def _lamp(state: dict[str, Any], wib_hour: float, power: float) -> int:
    # T0 is 15:00 WIB.
    return rules.lamp(
        state, T0 + round((wib_hour - 15) * 60) * MIN, power, name="Lampu", night_start_h=18.5,
        night_end_h=5.0, power_min_w=20, power_max_w=250, duration_s=900,
    ).level  # fmt: skip


def test_a_lamp_dark_at_night_alerts_and_by_day_does_not() -> None:
    by_day: dict[str, Any] = {}
    assert [_lamp(by_day, 15 + m / 60, 0.0) for m in range(0, 60, 5)] == [0] * 12
    night: dict[str, Any] = {}
    assert [_lamp(night, 20 + m / 60, 0.0) for m in range(0, 20, 5)] == [0, 0, 0, 1]
    assert [_lamp(night, 20.5 + m / 60, 120.0) for m in range(0, 20, 5)] == [1, 1, 1, 0]
    abnormal: dict[str, Any] = {}
    assert [_lamp(abnormal, 22 + m / 60, 400.0) for m in range(0, 20, 5)] == [0, 0, 0, 2]


def test_night_wraps_midnight_in_wib() -> None:
    wib_midnight = T0 + 9 * 60 * MIN
    assert rules.is_night(wib_midnight, 18.5, 5.0)
    assert rules.is_night(wib_midnight + 4 * 60 * MIN, 18.5, 5.0)
    assert not rules.is_night(wib_midnight + 6 * 60 * MIN, 18.5, 5.0)
    assert rules.is_night(wib_midnight + 2 * 60 * MIN, 1.0, 3.0)


def test_air_quality_follows_the_ispu_of_the_average() -> None:
    state: dict[str, Any] = {}
    level = 0
    for minute in range(0, 240, 5):
        target = rules.air_quality(
            state, T0 + minute * MIN, "pm25", 180.0, name="Alun-alun", average_s=3_600,
            clear_s=1_800,
        )  # fmt: skip
        assert target.level >= level  # a steady rise of the average
        level = target.level
    assert level == 2 and "Sangat Tidak Sehat" in target.message
    # One clean reading does not clear it; a long clean spell does.
    clean = [
        rules.air_quality(
            state, T0 + (240 + m) * MIN, "pm25", 5.0, name="A", average_s=600, clear_s=1_800
        ).level
        for m in range(0, 120, 5)
    ]
    assert clean[0] == 2 and clean[-1] == 0


def test_offline_after_k_intervals_of_the_clock() -> None:
    state: dict[str, Any] = {"last_seen": T0}
    offline = rules.offline(state, T0 + 180 * US, name="S", interval_s=60, k=3)
    assert offline is not None and offline.level == 0
    offline = rules.offline(state, T0 + 181 * US, name="S", interval_s=60, k=3)
    assert offline is not None and offline.level == 2 and "3 menit" in offline.message
    assert rules.offline({}, T0, name="S", interval_s=60, k=3) is None


def test_stuck_when_the_very_same_value_repeats_long_enough() -> None:
    state: dict[str, Any] = {}
    levels = [
        rules.stuck(state, T0 + m * MIN, "water_level", 1.234, name="S", duration_s=3_600).level
        for m in range(0, 61, 10)
    ]
    assert levels == [0] * 6 + [1]
    assert (
        rules.stuck(state, T0 + 61 * MIN, "water_level", 1.235, name="S", duration_s=3_600).level
        == 0
    )


def test_rejections_within_the_window() -> None:
    state: dict[str, Any] = {}
    window = dict(name="S", count_min=3, window_s=600)
    assert rules.rejected(state, T0, 2, **window).level == 0  # type: ignore[arg-type]
    assert rules.rejected(state, T0 + MIN, 1, **window).level == 1  # type: ignore[arg-type]
    assert rules.rejected(state, T0 + 9 * MIN, 0, **window).level == 1  # type: ignore[arg-type]
    # The first two drop out of the window.
    assert rules.rejected(state, T0 + 10 * MIN, 0, **window).level == 0  # type: ignore[arg-type]


def test_debounce_rises_after_on_and_falls_after_off() -> None:
    state: dict[str, Any] = {}
    got = [
        rules.debounce(state, T0 + m * MIN, up=want, down=want, on_s=120, off_s=180)
        for m, want in enumerate([1, 1, 1, 0, 0, 0, 0, 1])
    ]
    assert got == [0, 0, 1, 1, 1, 1, 0, 0]
