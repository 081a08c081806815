"""Robust rise rate of a gauge: the Theil–Sen slope over its recent readings.

The median of the slopes between every pair of readings ignores a few wild values (a wave, a
floating log) that would swing a least-squares line, and needs no tuning.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

US_PER_H = 3_600_000_000


@dataclass(frozen=True, slots=True)
class Fit:
    """A line through recent readings: rate (m/h) and the level on it at ``at_us``."""

    rate_m_per_h: float
    level_m: float
    at_us: int
    points: int

    def eta_us(self, level_m: float) -> int | None:
        """When the line reaches ``level_m`` (epoch µs), or None when it is not heading there."""
        if level_m <= self.level_m:
            return self.at_us
        if self.rate_m_per_h <= 0:
            return None
        return self.at_us + round((level_m - self.level_m) / self.rate_m_per_h * US_PER_H)


def theil_sen(times_us: np.ndarray, values: np.ndarray, *, min_points: int) -> Fit | None:
    """The Theil–Sen line of readings (times in epoch µs), at the newest time; None if too few."""
    n = len(times_us)
    if n < min_points:
        return None
    hours = (times_us - times_us[-1]).astype(np.float64) / US_PER_H
    i, j = _pairs(n)
    dt = hours[j] - hours[i]
    usable = dt != 0
    if not usable.any():
        return None
    slope = float(np.median((values[j] - values[i])[usable] / dt[usable]))
    intercept = float(np.median(values - slope * hours))
    return Fit(rate_m_per_h=slope, level_m=intercept, at_us=int(times_us[-1]), points=n)


@lru_cache(maxsize=256)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every index pair (i < j) of ``n`` points."""
    return np.triu_indices(n, k=1)


class Window:
    """The readings of one gauge within ``span_us`` of its newest, in time order (a late
    reading is put in its place; a repeated time keeps one value).

    At most ``max_points`` are kept, the newest: a gauge reports every minute or so, and the cap
    only bounds the cost of one that floods the stream (the fit is quadratic in its points).
    """

    __slots__ = ("_fit", "_times", "_values", "max_points", "reuse_us", "span_us")

    def __init__(self, span_us: int, *, max_points: int = 120, reuse_us: int = 10_000_000) -> None:
        self.span_us = span_us
        self.max_points = max_points
        # A line over half an hour does not move in a few seconds: a gauge reporting many
        # times within ``reuse_us`` reuses its last fit instead of paying for a new one.
        self.reuse_us = reuse_us
        self._fit: Fit | None = None
        self._times: list[int] = []
        self._values: list[float] = []

    def add(self, time_us: int, value: float) -> None:
        times = self._times
        at = bisect.bisect_left(times, time_us)
        if at < len(times) and times[at] == time_us:
            self._values[at] = value
            return
        times.insert(at, time_us)
        self._values.insert(at, value)
        oldest = times[-1] - self.span_us
        drop = max(len(times) - self.max_points, bisect.bisect_left(times, oldest))
        if drop > 0:
            del times[:drop]
            del self._values[:drop]

    def __len__(self) -> int:
        return len(self._times)

    def fit(self, *, min_points: int) -> Fit | None:
        cached = self._fit
        if (
            cached is not None
            and self._times
            and 0 <= self._times[-1] - cached.at_us < self.reuse_us
        ):
            return cached
        times = np.asarray(self._times, dtype=np.int64)
        values = np.asarray(self._values, dtype=np.float64)
        self._fit = theil_sen(times, values, min_points=min_points)
        return self._fit
