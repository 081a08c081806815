"""Google's public-alert CAP profile, rule by rule (tests/fixtures/cap.py re-expresses
``GoogleProfile.java``): every message of a warning's life meets each rule, and each rule's
check is shown to catch the mistake it is about.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from lxml import etree

import tests.fixtures.cap as cap_checks
from api.cap import CAP_NS, HEADLINE_MAX, Publisher, cap_alert, headline, to_xml
from tests.api.test_cap import GAUGE, LIFECYCLE, T0, change
from tests.fixtures.cap import (
    ERRORS,
    assert_google_profile,
    assert_valid_cap,
    google_profile,
)

NS = {"cap": CAP_NS}
PUBLISHER = Publisher(
    sender="bpbd.example.org",
    base_url="http://api.example.org",
    sender_name="BPBD Kabupaten Pasuruan",
    contact="Pusdalops BPBD, telepon 112",
)
RISING = change(
    9, "opened", 2, rule="rising_fast", predicted_level=3,
    predicted_at=T0 + timedelta(minutes=40),
)  # fmt: skip


def _message(index: int = 1) -> etree._Element:
    return cap_alert(LIFECYCLE[index], GAUGE, PUBLISHER, LIFECYCLE[:index])


@pytest.mark.parametrize("index", range(len(LIFECYCLE)))
def test_every_message_of_a_warning_meets_the_profile(index: int) -> None:
    document = to_xml(_message(index))
    assert_valid_cap(document)
    assert_google_profile(document)
    kinds = ["Alert", "Update", "Update", "Update", "Cancel"]
    assert etree.fromstring(document).findtext("cap:msgType", namespaces=NS) == kinds[index]


def test_a_forecast_meets_the_profile() -> None:
    assert_google_profile(cap_alert(RISING, GAUGE, PUBLISHER))


def test_without_a_contact_the_profile_recommends_one() -> None:
    bare = Publisher(sender="bpbd.example.org", base_url="http://api.example.org")
    reasons = {reason for reason, _ in google_profile(cap_alert(LIFECYCLE[0], GAUGE, bare))}
    assert reasons == {"CONTACT_IS_RECOMMENDED"}


def _drop(tag: str, *, all_infos: bool = True) -> Callable[[etree._Element], None]:
    def mutate(alert: etree._Element) -> None:
        for info in alert.findall("cap:info", NS)[: None if all_infos else 1]:
            for element in info.findall(f".//cap:{tag}", NS):
                element.getparent().remove(element)  # type: ignore[union-attr]

    return mutate


def _set(path: str, value: str) -> Callable[[etree._Element], None]:
    def mutate(alert: etree._Element) -> None:
        for element in alert.findall(path, NS):
            element.text = value

    return mutate


def _remove(path: str) -> Callable[[etree._Element], None]:
    def mutate(alert: etree._Element) -> None:
        for element in alert.findall(path, NS):
            element.getparent().remove(element)  # type: ignore[union-attr]

    return mutate


def _second_info(path: str, value: str) -> Callable[[etree._Element], None]:
    def mutate(alert: etree._Element) -> None:
        info = alert.findall("cap:info", NS)[1]
        element = info.find(path, NS)
        if element is None:
            element = etree.SubElement(info, f"{{{CAP_NS}}}{path.rsplit(':', maxsplit=1)[-1]}")
        element.text = value

    return mutate


def _add_event_code(alert: etree._Element) -> None:
    info = alert.findall("cap:info", NS)[0]
    code = etree.Element(f"{{{CAP_NS}}}eventCode")
    etree.SubElement(code, f"{{{CAP_NS}}}valueName").text = "SAME"
    etree.SubElement(code, f"{{{CAP_NS}}}value").text = "FLW"
    info.find("cap:urgency", NS).addprevious(code)  # type: ignore[union-attr]


def _headline_is_description(alert: etree._Element) -> None:
    for info in alert.findall("cap:info", NS):
        info.find("cap:headline", NS).text = info.findtext("cap:description", namespaces=NS)  # type: ignore[union-attr]


def _instruction_is_description(alert: etree._Element) -> None:
    for info in alert.findall("cap:info", NS):
        info.find("cap:instruction", NS).text = info.findtext("cap:description", namespaces=NS)  # type: ignore[union-attr]


def _duplicate_language(alert: etree._Element) -> None:
    second = alert.findall("cap:info", NS)[1]
    second.find("cap:language", NS).text = "id-ID"  # type: ignore[union-attr]


# Each rule of the profile, with a change to a valid Update that breaks it alone.
BREAKS: dict[str, Callable[[etree._Element], None]] = {
    "UPDATE_OR_CANCEL_MUST_REFERENCE": _remove("cap:references"),
    "INFO_IS_REQUIRED": _remove("cap:info"),
    "CATEGORIES_MUST_MATCH": _second_info("cap:category", "Safety"),
    "EVENT_CODES_MUST_MATCH": _add_event_code,
    "DESCRIPTION_IS_REQUIRED": _drop("description"),
    "EFFECTIVE_NOT_AFTER_EXPIRES": _set("cap:info/cap:expires", "2026-01-10T14:00:00+07:00"),
    "WEB_IS_REQUIRED": _drop("web"),
    "EXPIRES_IS_REQUIRED": _drop("expires"),
    "AREA_IS_REQUIRED": _drop("area"),
    "URGENCY_IS_REQUIRED": _drop("urgency"),
    "SEVERITY_IS_REQUIRED": _drop("severity"),
    "CERTAINTY_IS_REQUIRED": _drop("certainty"),
    "CIRCLE_POLYGON_OR_GEOCODE_IS_REQUIRED": lambda a: (_drop("circle")(a), _drop("geocode")(a)),
    "TEST_ALERT_DISCOURAGED": _set("cap:status", "Test"),
    "SENDER_NAME_STRONGLY_RECOMMENDED": _drop("senderName"),
    "RESPONSE_TYPE_STRONGLY_RECOMMENDED": _drop("responseType"),
    "INSTRUCTION_STRONGLY_RECOMMENDED": _drop("instruction"),
    "HEADLINE_TOO_LONG": _set("cap:info/cap:headline", "Banjir " * 30),
    "HEADLINE_AND_DESCRIPTION_SHOULD_DIFFER": _headline_is_description,
    "DESCRIPTION_AND_INSTRUCTION_SHOULD_DIFFER": _instruction_is_description,
    "UNKNOWN_URGENCY_DISCOURAGED": _set("cap:info/cap:urgency", "Unknown"),
    "UNKNOWN_SEVERITY_DISCOURAGED": _set("cap:info/cap:severity", "Unknown"),
    "UNKNOWN_CERTAINTY_DISCOURAGED": _set("cap:info/cap:certainty", "Unknown"),
    "CONTACT_IS_RECOMMENDED": _drop("contact"),
    "NONZERO_CIRCLE_RADIUS_RECOMMENDED": _set("cap:info/cap:area/cap:circle", "-7.665,112.862 0"),
    "CIRCLE_POLYGON_ENCOURAGED": _drop("circle"),
    "EVENTS_IN_SAME_LANGUAGE_SHOULD_MATCH": _duplicate_language,
    "EMPTY_GEOCODE_FIELD": _set("cap:info/cap:area/cap:geocode/cap:value", ""),
    "SENT_INCLUDES_UTC_TIMEZONE": _set("cap:sent", "2026-01-10T08:02:00+00:00"),
    "EFFECTIVE_INCLUDES_UTC_TIMEZONE": _set("cap:info/cap:effective", "2026-01-10T08:02:00Z"),
    "ONSET_INCLUDES_UTC_TIMEZONE": _set("cap:info/cap:onset", "2026-01-10T08:02:00+00:00"),
    "EXPIRES_INCLUDES_UTC_TIMEZONE": _set("cap:info/cap:expires", "2026-01-10T20:02:00+00:00"),
}


def test_every_rule_of_the_profile_has_its_check() -> None:
    # The rules as the checker's module lists them (every ReasonType of GoogleProfile.java).
    listed = set(re.findall(r"\b[A-Z][A-Z_]{8,}\b", cap_checks.__doc__ or ""))
    assert set(ERRORS) <= listed
    assert set(BREAKS) == listed
    assert len(listed) == 32


@pytest.mark.parametrize("reason", sorted(BREAKS))
def test_each_check_catches_its_mistake(reason: str) -> None:
    alert = _message(1)
    assert google_profile(alert) == []
    BREAKS[reason](alert)
    assert reason in {found for found, _ in google_profile(alert)}, google_profile(alert)


def test_long_headlines_are_cut_at_a_word() -> None:
    long = "Pos Duga Air Welang Pohjentrek: status Awas, tinggi muka air 2.95 m " * 4
    cut = headline(long)
    assert len(cut) <= HEADLINE_MAX and cut.endswith("…") and long.startswith(cut[:-1])
    assert headline("pendek") == "pendek"
    document = cap_alert(change(2, "escalated", 2, message=long), GAUGE, PUBLISHER, LIFECYCLE[:1])
    assert_google_profile(document)
