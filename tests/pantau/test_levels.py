"""The one table of level names: every level of every rule named in both languages."""

from __future__ import annotations

from typing import get_args

from alerts.model import Rule
from api.routes.alerts import Rule as ApiRule
from pantau import levels

ENGLISH_ONLY = {"advisory", "warning", "severe", "rising fast"}


def test_the_rules_are_the_alert_services_and_the_apis() -> None:
    assert tuple(r.value for r in Rule) == levels.RULES
    assert get_args(ApiRule) == levels.RULES


def test_every_level_of_every_rule_has_an_indonesian_and_an_english_name() -> None:
    for rule in levels.RULES:
        for level in (1, 2, 3):
            indonesian = levels.level_label(rule, level, "id")
            english = levels.level_label(rule, level, "en")
            assert indonesian and english and not indonesian.isdigit(), (rule, level)
            assert indonesian.lower() not in ENGLISH_ONLY, (rule, level, indonesian)
        assert levels.rule_label(rule, "id") != rule
        assert levels.rule_label(rule, "en") != rule


def test_names_of_the_flood_and_forecast_levels() -> None:
    assert [levels.level_label("flood_level", n) for n in range(4)] == [
        "Normal",
        "Waspada",
        "Siaga",
        "Awas",
    ]
    assert levels.level_label("flood_level", 3, "en") == "Awas (danger)"
    assert levels.level_label("rising_fast", 3) == "Naik cepat, menuju Awas"
    assert levels.level_label("upstream", 2, "en") == "Siaga upstream"
    assert levels.level_label("air_quality", 1) == "Tidak Sehat"
    # A level a rule does not raise still reads as a severity, in the language asked.
    assert levels.level_label("offline", 3) == "Bahaya"
    assert levels.level_label("offline", 3, "en") == "Severe"
    assert levels.level_label("no-such-rule", 7) == "7"
