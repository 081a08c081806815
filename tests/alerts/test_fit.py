"""The robust rise-rate fit: known slopes, outliers ignored, too few points refused."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from alerts.fit import US_PER_H, Window, theil_sen

T0 = 1_800_000_000_000_000


@given(
    slope=st.floats(min_value=-3, max_value=3, allow_nan=False),
    base=st.floats(min_value=0, max_value=10, allow_nan=False),
    n=st.integers(min_value=6, max_value=60),
)
def test_a_straight_rise_gives_its_slope(slope: float, base: float, n: int) -> None:
    times = T0 + np.arange(n, dtype=np.int64) * 60_000_000
    values = base + slope * (times - T0) / US_PER_H
    fit = theil_sen(times, values, min_points=6)
    assert fit is not None
    assert abs(fit.rate_m_per_h - slope) < 1e-6
    assert abs(fit.level_m - values[-1]) < 1e-6
    assert fit.at_us == times[-1]


def test_a_few_wild_values_do_not_swing_the_slope() -> None:
    times = T0 + np.arange(30, dtype=np.int64) * 60_000_000
    values = 1.0 + 0.6 * (times - T0) / US_PER_H
    values[[5, 17, 23]] += [3.0, -2.0, 4.0]  # a log, a wave, a bird on the sensor
    fit = theil_sen(times, values, min_points=6)
    assert fit is not None
    assert abs(fit.rate_m_per_h - 0.6) < 0.02
    least_squares = np.polyfit((times - T0) / US_PER_H, values, 1)[0]
    assert abs(least_squares - 0.6) > abs(fit.rate_m_per_h - 0.6)


def test_too_few_points_or_one_instant_give_no_fit() -> None:
    times = T0 + np.arange(4, dtype=np.int64) * 60_000_000
    assert theil_sen(times, np.ones(4), min_points=6) is None
    assert theil_sen(np.full(6, T0), np.arange(6.0), min_points=6) is None


def test_eta_of_a_level_ahead_behind_and_when_falling() -> None:
    times = T0 + np.arange(10, dtype=np.int64) * 60_000_000
    rising = theil_sen(times, 1.0 + 0.5 * (times - T0) / US_PER_H, min_points=6)
    assert rising is not None
    # 0.5 m/h: another 0.25 m is half an hour away.
    assert rising.eta_us(rising.level_m + 0.25) == rising.at_us + US_PER_H // 2
    assert rising.eta_us(0.0) == rising.at_us
    falling = theil_sen(times, 2.0 - 0.5 * (times - T0) / US_PER_H, min_points=6)
    assert falling is not None and falling.eta_us(5.0) is None


def test_the_window_keeps_its_span_and_places_late_readings() -> None:
    window = Window(span_us=30 * 60_000_000)
    for minute in range(0, 60, 2):
        window.add(T0 + minute * 60_000_000, minute / 60)
    window.add(T0 + 41 * 60_000_000, 41 / 60)  # late, in its place
    window.add(T0 + 41 * 60_000_000, 41 / 60)  # redelivered: kept once
    assert len(window) == 17  # minutes 28 to 58 every two, and 41
    fit = window.fit(min_points=6)
    assert fit is not None and abs(fit.rate_m_per_h - 1.0) < 1e-6
    capped = Window(span_us=10**12, max_points=5)
    for second in range(100):
        capped.add(T0 + second * 1_000_000, float(second))
    assert len(capped) == 5
