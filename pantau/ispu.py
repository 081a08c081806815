"""ISPU (Indeks Standar Pencemar Udara, PermenLHK 14/2020): index and category of PM2.5 and PM10.

The index of one pollutant is interpolated linearly between the regulation's breakpoints
(concentrations in µg/m³ at index 0, 50, 100, 200, 300 and 500); a site's ISPU is the worst of
its pollutants' indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

INDEX_POINTS: tuple[float, ...] = (0.0, 50.0, 100.0, 200.0, 300.0, 500.0)
BREAKPOINTS_UG_M3: dict[str, tuple[float, ...]] = {
    "pm25": (0.0, 15.5, 55.4, 150.4, 250.4, 500.0),
    "pm10": (0.0, 50.0, 150.0, 350.0, 420.0, 500.0),
}


class Category(IntEnum):
    """ISPU categories, best first."""

    BAIK = 0
    SEDANG = 1
    TIDAK_SEHAT = 2
    SANGAT_TIDAK_SEHAT = 3
    BERBAHAYA = 4

    @property
    def label(self) -> str:
        """The Indonesian name, as the regulation writes it."""
        return _LABELS[self][0]

    @property
    def label_en(self) -> str:
        return _LABELS[self][1]


_LABELS = {
    Category.BAIK: ("Baik", "Good"),
    Category.SEDANG: ("Sedang", "Moderate"),
    Category.TIDAK_SEHAT: ("Tidak Sehat", "Unhealthy"),
    Category.SANGAT_TIDAK_SEHAT: ("Sangat Tidak Sehat", "Very unhealthy"),
    Category.BERBAHAYA: ("Berbahaya", "Hazardous"),
}


def index(pollutant: str, concentration_ug_m3: float) -> float:
    """The ISPU index of one pollutant's concentration (above the table: extrapolated).

    Raises ValueError for an unknown pollutant or a negative or non-finite concentration.
    """
    points = BREAKPOINTS_UG_M3.get(pollutant)
    if points is None:
        raise ValueError(f"no ISPU breakpoints for {pollutant!r}; known: pm25, pm10")
    if not math.isfinite(concentration_ug_m3) or concentration_ug_m3 < 0:
        raise ValueError(f"concentration must be a finite number >= 0: {concentration_ug_m3!r}")
    for i in range(1, len(points)):
        if concentration_ug_m3 <= points[i]:
            low, high = points[i - 1], points[i]
            share = (concentration_ug_m3 - low) / (high - low)
            return INDEX_POINTS[i - 1] + share * (INDEX_POINTS[i] - INDEX_POINTS[i - 1])
    slope = (INDEX_POINTS[-1] - INDEX_POINTS[-2]) / (points[-1] - points[-2])
    return INDEX_POINTS[-1] + (concentration_ug_m3 - points[-1]) * slope


def category(ispu: float) -> Category:
    """The category of an index: Baik up to 50, Sedang to 100, Tidak Sehat to 200, ..."""
    # The regulation's bands are whole numbers (51 to 100 ...): round before comparing.
    value = round(ispu)
    if value <= 50:
        return Category.BAIK
    if value <= 100:
        return Category.SEDANG
    if value <= 200:
        return Category.TIDAK_SEHAT
    if value <= 300:
        return Category.SANGAT_TIDAK_SEHAT
    return Category.BERBAHAYA


@dataclass(frozen=True, slots=True)
class Ispu:
    """A site's ISPU: the worst pollutant's index, its category and which pollutant it was."""

    index: float
    category: Category
    pollutant: str


def worst(concentrations: dict[str, float]) -> Ispu | None:
    """The ISPU of a site from whichever of ``pm25``/``pm10`` it measured (None: neither)."""
    best: Ispu | None = None
    for pollutant, value in concentrations.items():
        if pollutant not in BREAKPOINTS_UG_M3:
            continue
        value_index = index(pollutant, value)
        if best is None or value_index > best.index:
            best = Ispu(value_index, category(value_index), pollutant)
    return best
