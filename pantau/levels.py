"""The names of every rule's levels, in Indonesian and English.

One table for everything that shows a level: the alert service's messages, the API
(`level_label`, `level_label_en`), the pages and the CAP feed. Each rule names the levels it
raises; any other level of any rule falls back to a general severity name, so that no level is
ever shown as a bare number or in the other language.
"""

from __future__ import annotations

from typing import Literal

from pantau.ispu import Category

Lang = Literal["id", "en"]

# Every rule of the alert service (docs/alerts.md), in the order the docs describe them.
RULES: tuple[str, ...] = (
    "flood_level",
    "rising_fast",
    "upstream",
    "congestion",
    "lamp",
    "air_quality",
    "offline",
    "stuck",
    "rejected",
)

FLOOD_LEVELS: dict[int, tuple[str, str]] = {
    0: ("Normal", "Normal"),
    1: ("Waspada", "Waspada (alert)"),
    2: ("Siaga", "Siaga (standby)"),
    3: ("Awas", "Awas (danger)"),
}

# Levels a rule does not name itself.
_GENERAL: dict[int, tuple[str, str]] = {
    0: ("Normal", "Normal"),
    1: ("Imbauan", "Advisory"),
    2: ("Peringatan", "Warning"),
    3: ("Bahaya", "Severe"),
}

_LEVELS: dict[str, dict[int, tuple[str, str]]] = {
    "flood_level": FLOOD_LEVELS,
    # The level is the highest flood level the rise is expected to reach within the horizon.
    "rising_fast": {
        1: ("Naik cepat, menuju Waspada", "Rising fast towards Waspada"),
        2: ("Naik cepat, menuju Siaga", "Rising fast towards Siaga"),
        3: ("Naik cepat, menuju Awas", "Rising fast towards Awas"),
    },
    # The upstream gauge's own flood level, or 1 when it is only rising fast.
    "upstream": {
        1: ("Hulu naik cepat", "Rising fast upstream"),
        2: ("Hulu Siaga", "Siaga upstream"),
        3: ("Hulu Awas", "Awas upstream"),
    },
    "congestion": {2: ("Macet", "Congested")},
    "lamp": {1: ("Lampu padam", "Lamp off at night"), 2: ("Daya tidak wajar", "Abnormal power")},
    # Level n is ISPU category n + 1 (Tidak Sehat and worse).
    "air_quality": {
        level: (category.label, category.label_en)
        for level, category in (
            (1, Category.TIDAK_SEHAT),
            (2, Category.SANGAT_TIDAK_SEHAT),
            (3, Category.BERBAHAYA),
        )
    },
    "offline": {2: ("Luring", "Offline")},
    "stuck": {1: ("Nilai macet", "Value stuck")},
    "rejected": {1: ("Data ditolak", "Payloads rejected")},
}

_RULE_NAMES: dict[str, tuple[str, str]] = {
    "flood_level": ("Status banjir", "Flood level"),
    "rising_fast": ("Air naik cepat", "Rising fast"),
    "upstream": ("Banjir kiriman dari hulu", "Flood wave from upstream"),
    "congestion": ("Kemacetan", "Congestion"),
    "lamp": ("Lampu jalan", "Street lamp"),
    "air_quality": ("Kualitas udara", "Air quality"),
    "offline": ("Sensor luring", "Sensor offline"),
    "stuck": ("Nilai macet", "Value stuck"),
    "rejected": ("Data ditolak", "Payloads rejected"),
}


def _pick(names: tuple[str, str], lang: Lang) -> str:
    return names[1] if lang == "en" else names[0]


def level_label(rule: str, level: int, lang: Lang = "id") -> str:
    """The name of ``rule``'s ``level`` in ``lang``: Waspada/Siaga/Awas for floods, ISPU
    categories for air, the rule's own words for the others, a general severity otherwise."""
    names = _LEVELS.get(rule, {}).get(level) or _GENERAL.get(level)
    return _pick(names, lang) if names else str(level)


def rule_label(rule: str, lang: Lang = "id") -> str:
    """The name of a rule in ``lang`` (the rule's id when it is unknown)."""
    names = _RULE_NAMES.get(rule)
    return _pick(names, lang) if names else rule
