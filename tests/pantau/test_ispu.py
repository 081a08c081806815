"""ISPU (PermenLHK 14/2020) from PM2.5 and PM10: breakpoints, categories, worst pollutant."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pantau import ispu
from pantau.ispu import Category


@pytest.mark.parametrize(
    ("pollutant", "concentration", "expected"),
    [
        ("pm25", 0.0, 0.0),
        ("pm25", 15.5, 50.0),
        ("pm25", 55.4, 100.0),
        ("pm25", 150.4, 200.0),
        ("pm25", 250.4, 300.0),
        ("pm25", 500.0, 500.0),
        ("pm10", 50.0, 50.0),
        ("pm10", 100.0, 75.0),
        ("pm10", 350.0, 200.0),
        ("pm10", 420.0, 300.0),
    ],
)
def test_breakpoints_map_to_their_index(
    pollutant: str, concentration: float, expected: float
) -> None:
    assert ispu.index(pollutant, concentration) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "category"),
    [
        (0, Category.BAIK),
        (50, Category.BAIK),
        (51, Category.SEDANG),
        (100, Category.SEDANG),
        (101, Category.TIDAK_SEHAT),
        (200, Category.TIDAK_SEHAT),
        (201, Category.SANGAT_TIDAK_SEHAT),
        (300, Category.SANGAT_TIDAK_SEHAT),
        (301, Category.BERBAHAYA),
        (900, Category.BERBAHAYA),
    ],
)
def test_categories_follow_the_regulation(value: float, category: Category) -> None:
    assert ispu.category(value) is category


def test_labels_in_both_languages() -> None:
    assert Category.TIDAK_SEHAT.label == "Tidak Sehat"
    assert Category.BERBAHAYA.label_en == "Hazardous"


@given(st.floats(min_value=0, max_value=2_000), st.floats(min_value=0, max_value=2_000))
def test_the_index_rises_with_concentration(a: float, b: float) -> None:
    low, high = sorted((a, b))
    for pollutant in ("pm25", "pm10"):
        assert ispu.index(pollutant, low) <= ispu.index(pollutant, high)


def test_the_site_takes_its_worst_pollutant() -> None:
    site = ispu.worst({"pm25": 60.0, "pm10": 40.0, "noise": 80.0})
    assert site is not None
    assert site.pollutant == "pm25" and site.category is Category.TIDAK_SEHAT
    assert ispu.worst({"temperature": 30.0}) is None


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_concentrations_and_pollutants_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="concentration"):
        ispu.index("pm25", bad)
    with pytest.raises(ValueError, match="no ISPU breakpoints"):
        ispu.index("o3", 10.0)
