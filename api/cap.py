"""CAP 1.2 flood warnings and their Atom feed.

Each change of a flood alert (an ``alert_events`` row of the rules in :data:`FLOOD_RULES`) is one
CAP message, in Indonesian (``id-ID``) with an English ``info`` block (``en-US``). The lifecycle
maps onto CAP's message types as CAP 1.2 (section 3.2.1) and the common practice of public alert
feeds expect:

* ``opened`` is an ``Alert``;
* ``escalated`` and ``de-escalated`` are an ``Update`` whose ``references`` list every earlier
  message of the same alert;
* ``resolved`` is a ``Cancel`` of those earlier messages (CAP 1.2: "cancels the earlier
  message(s) identified in <references>"; a message that was wrong would be an ``Error``),
  with ``responseType`` ``AllClear``, ``urgency`` ``Past`` and a short ``expires``, so that a
  reader that shows it at all shows it as the all-clear.

Every message meets the rules of Google's public-alert CAP profile (``GoogleProfile.java`` of
google/cap-library; tests/api/test_cap_profile.py re-expresses each one): an ``info`` in
each language with a ``description``, ``web``, ``expires`` (``effective`` never after it),
urgency, severity and certainty, ``senderName``, ``instruction``, ``responseType``, a headline
of at most 140 characters, times with their offset, and an ``area`` with a circle around the
gauge and the kecamatan as ``geocode``. A warning expires ``Publisher.expires`` after its last
change: an Update or the Cancel follows well before, unless Pantau itself has stopped.

Urgency, severity and certainty (CAP 1.2, section 3.2.2):

* severity follows the level: Awas (or a rule's level 3) is ``Extreme`` ("extraordinary threat to
  life or property"), Siaga ``Severe``, Waspada ``Moderate``; an all-clear is ``Minor``. A
  prediction ("Awas expected in 25 minutes") is rated by the level it predicts;
* urgency says when to act: at Awas ``Immediate``, at Siaga ``Expected`` (within the hour), at
  Waspada ``Future``. A predicted level sharpens it: due within 30 minutes is ``Immediate``,
  within the hour ``Expected``;
* certainty: a level measured at the gauge is ``Observed``; a prediction from the rate of rise or
  an upstream gauge is ``Likely``.

Messages are built as XML trees (lxml), never by pasting text together: alert texts come from
the database and are escaped by the serializer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from lxml import etree

from pantau.city import FloodLevel, Thresholds
from pantau.levels import level_label

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"
CAP_MEDIA_TYPE = "application/cap+xml"
ATOM_MEDIA_TYPE = "application/atom+xml"

# Rules whose alerts are flood warnings (the others stay internal to operators).
FLOOD_RULES = frozenset({"flood_level", "rising_fast", "upstream"})
# Changes that are CAP messages; an operator's acknowledgement is not news to the public.
CAP_CHANGES = frozenset({"opened", "escalated", "de-escalated", "resolved"})
# Google's profile recommends headlines under 140 characters.
HEADLINE_MAX = 140
# The Atom feed stays small (Google asks for feeds under 100 KB, never over 900 KB): the CAP
# messages of the first entries go inline up to this size, the others are linked only.
FEED_INLINE_BYTES = 90_000

# CAP times carry a numeric offset, never "Z" (CAP 1.2, section 3.3.2); Pasuruan is on WIB.
WIB = timezone(timedelta(hours=7), "WIB")
ALL_CLEAR_EXPIRES = timedelta(hours=1)

# PUPR's gauge numbering runs the other way round: Siaga IV is Normal, Siaga I is Awas.
GAUGE_NUMBERING = {
    FloodLevel.NORMAL: "Siaga IV",
    FloodLevel.WASPADA: "Siaga III",
    FloodLevel.SIAGA: "Siaga II",
    FloodLevel.AWAS: "Siaga I",
}

_EVENT_NAMES = {
    "flood_level": ("Peringatan Banjir", "Flood warning"),
    "rising_fast": ("Kenaikan Muka Air Cepat", "Fast-rising river"),
    "upstream": ("Banjir Kiriman dari Hulu", "Flood wave from upstream"),
}
_SEVERITY = {3: "Extreme", 2: "Severe", 1: "Moderate"}
_RESPONSE = {3: "Evacuate", 2: "Prepare", 1: "Monitor"}
_INSTRUCTIONS = {
    "Evacuate": (
        "Segera mengungsi ke tempat yang lebih tinggi dan ikuti arahan BPBD.",
        "Move to higher ground now and follow the instructions of BPBD.",
    ),
    "Prepare": (
        "Bersiap mengungsi: amankan dokumen dan barang berharga, pantau informasi resmi.",
        "Be ready to evacuate: secure documents and valuables, follow official information.",
    ),
    "Monitor": (
        "Waspadai kenaikan air sungai dan pantau informasi resmi.",
        "Keep watching the river and follow official information.",
    ),
    "AllClear": (
        "Kondisi kembali normal. Tetap ikuti informasi resmi.",
        "Conditions are back to normal. Keep following official information.",
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Gauge:
    """The flood gauge an alert is about."""

    id: str
    name: str
    kecamatan: str
    lat: float
    lon: float
    river: str | None = None
    thresholds: Thresholds | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertChange:
    """One ``alert_events`` row."""

    id: int
    alert_id: int
    rule: str
    change: str
    level: int
    recorded_at: datetime
    observed_at: datetime
    message: str
    message_en: str
    previous_level: int | None = None
    value: float | None = None
    predicted_level: int | None = None
    predicted_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AlertChange:
        """From a row of ``alert_events`` (a dict)."""
        return cls(
            id=row["id"],
            alert_id=row["alert_id"],
            rule=row["rule"],
            change=row["change"],
            level=row["level"],
            recorded_at=row["recorded_at"],
            observed_at=row["observed_at"],
            message=row["message"],
            message_en=row["message_en"],
            previous_level=row.get("previous_level"),
            value=row.get("value"),
            predicted_level=row.get("predicted_level"),
            predicted_at=row.get("predicted_at"),
            details=row.get("details") or {},
        )

    @property
    def is_cap(self) -> bool:
        """Whether this change is published as a CAP message."""
        return self.rule in FLOOD_RULES and self.change in CAP_CHANGES


@dataclass(frozen=True, slots=True, kw_only=True)
class Publisher:
    """Who sends the messages and where their web pages are."""

    sender: str
    base_url: str
    sender_name: str = "Pantau"
    area_radius_km: float = 2.0
    # How long a warning holds after its last change unless updated or cancelled.
    expires: timedelta = timedelta(hours=12)
    contact: str | None = None


def cap_time(moment: datetime) -> str:
    """A CAP 1.2 date-time: whole seconds, in WIB, with a numeric offset."""
    return moment.astimezone(WIB).replace(microsecond=0).isoformat()


def identifier(change: AlertChange) -> str:
    """The message's CAP identifier: unique per sender, the same however often it is built."""
    return f"pantau-{change.alert_id}-{change.id}"


def incident(alert_id: int) -> str:
    """The CAP ``incidents`` name shared by every message of one alert."""
    return f"pantau-{alert_id}"


def _effective_level(change: AlertChange) -> int:
    if change.rule != "flood_level" and change.predicted_level:
        return max(1, min(3, change.predicted_level))
    return max(1, min(3, change.level))


def urgency(change: AlertChange) -> str:
    """CAP urgency: when to act (see the module's notes)."""
    if change.change == "resolved":
        return "Past"
    by_level = {3: "Immediate", 2: "Expected", 1: "Future"}[_effective_level(change)]
    if change.predicted_at is None:
        return by_level
    lead = change.predicted_at - change.observed_at
    by_time = (
        "Immediate"
        if lead <= timedelta(minutes=30)
        else "Expected"
        if lead <= timedelta(hours=1)
        else "Future"
    )
    order = ["Future", "Expected", "Immediate"]
    return max(by_level, by_time, key=order.index)


def severity(change: AlertChange) -> str:
    """CAP severity from the (observed or predicted) level."""
    if change.change == "resolved":
        return "Minor"
    return _SEVERITY[_effective_level(change)]


def certainty(change: AlertChange) -> str:
    """Observed for a measured level, Likely for a prediction."""
    if change.change == "resolved" or change.rule == "flood_level":
        return "Observed"
    return "Likely"


def response_type(change: AlertChange) -> str:
    """What people are asked to do."""
    if change.change == "resolved":
        return "AllClear"
    return _RESPONSE[_effective_level(change)]


def msg_type(change: AlertChange) -> str:
    """Alert for an opening, Cancel for the end, Update for every change between."""
    if change.change == "opened":
        return "Alert"
    return "Cancel" if change.change == "resolved" else "Update"


def headline(text: str) -> str:
    """At most :data:`HEADLINE_MAX` characters, cut at a word with an ellipsis if longer."""
    if len(text) <= HEADLINE_MAX:
        return text
    return text[: HEADLINE_MAX - 1].rsplit(" ", 1)[0].rstrip(" ,;:") + "…"


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        element.text = text
    return element


def _pair(parent: etree._Element, tag: str, name: str, value: str) -> None:
    element = _sub(parent, tag)
    _sub(element, "valueName", name)
    _sub(element, "value", value)


def _metres(value: float) -> str:
    return f"{value:.2f}"


def _describe(change: AlertChange, gauge: Gauge, english: bool) -> str:
    river = f" ({'Kali' if not english else 'river'} {gauge.river})" if gauge.river else ""
    parts = []
    if change.value is not None:
        parts.append(
            f"Water level {_metres(change.value)} m at {gauge.name}{river}, {gauge.kecamatan}."
            if english
            else f"Tinggi muka air {_metres(change.value)} m di {gauge.name}{river}, "
            f"Kecamatan {gauge.kecamatan}."
        )
    if gauge.thresholds is not None:
        t = gauge.thresholds
        label = "Thresholds" if english else "Ambang batas"
        parts.append(
            f"{label}: Waspada {_metres(t.waspada)} m, Siaga {_metres(t.siaga)} m, "
            f"Awas {_metres(t.awas)} m."
        )
    if change.predicted_level and change.predicted_at and change.change != "resolved":
        level = FloodLevel(max(0, min(3, change.predicted_level))).label
        clock = change.predicted_at.astimezone(WIB).strftime("%H:%M")
        parts.append(
            f"Expected to reach {level} at about {clock} WIB."
            if english
            else f"Diperkirakan mencapai {level} sekitar pukul {clock} WIB."
        )
    return " ".join(parts) or (change.message_en if english else change.message)


def _parameters(info: etree._Element, change: AlertChange, gauge: Gauge, *, english: bool) -> None:
    _pair(info, "parameter", "rule", change.rule)
    _pair(info, "parameter", "change", change.change)
    _pair(info, "parameter", "sensor_id", gauge.id)
    # The level's name in this block's language, whatever the rule (pantau.levels).
    shown = 0 if change.change == "resolved" else change.level
    _pair(
        info, "parameter", "level_label", level_label(change.rule, shown, "en" if english else "id")
    )
    if change.rule == "flood_level":
        level = FloodLevel(0 if change.change == "resolved" else max(0, min(3, change.level)))
        _pair(info, "parameter", "level", level.label)
        _pair(info, "parameter", "level_gauge_numbering", GAUGE_NUMBERING[level])
    else:
        _pair(info, "parameter", "rule_level", str(change.level))
    if change.predicted_level and change.predicted_at:
        predicted = FloodLevel(max(0, min(3, change.predicted_level)))
        _pair(info, "parameter", "predicted_level", predicted.label)
        _pair(info, "parameter", "predicted_level_gauge_numbering", GAUGE_NUMBERING[predicted])
        _pair(info, "parameter", "predicted_at", cap_time(change.predicted_at))
    if change.value is not None:
        _pair(info, "parameter", "water_level_m", _metres(change.value))
    if gauge.thresholds is not None:
        for name in ("waspada", "siaga", "awas"):
            _pair(
                info,
                "parameter",
                f"threshold_{name}_m",
                _metres(getattr(gauge.thresholds, name)),
            )


def _info(
    alert: etree._Element,
    change: AlertChange,
    gauge: Gauge,
    publisher: Publisher,
    *,
    english: bool,
) -> None:
    info = _sub(alert, "info")
    _sub(info, "language", "en-US" if english else "id-ID")
    _sub(info, "category", "Met")  # CAP 1.2: "Met - Meteorological (inc. flood)"
    names = _EVENT_NAMES.get(change.rule, ("Peringatan Banjir", "Flood warning"))
    _sub(info, "event", names[1] if english else names[0])
    response = response_type(change)
    _sub(info, "responseType", response)
    _sub(info, "urgency", urgency(change))
    _sub(info, "severity", severity(change))
    _sub(info, "certainty", certainty(change))
    _sub(info, "effective", cap_time(change.recorded_at))
    onset = change.predicted_at if change.predicted_at and change.change != "resolved" else None
    _sub(info, "onset", cap_time(onset or change.observed_at))
    lasts = ALL_CLEAR_EXPIRES if change.change == "resolved" else publisher.expires
    _sub(info, "expires", cap_time(change.recorded_at + lasts))
    _sub(info, "senderName", publisher.sender_name)
    _sub(info, "headline", headline(change.message_en if english else change.message))
    _sub(info, "description", _describe(change, gauge, english))
    _sub(info, "instruction", _INSTRUCTIONS[response][1 if english else 0])
    _sub(info, "web", f"{publisher.base_url.rstrip('/')}/alerts/{change.alert_id}")
    if publisher.contact:
        _sub(info, "contact", publisher.contact)
    _parameters(info, change, gauge, english=english)
    area = _sub(info, "area")
    _sub(
        area,
        "areaDesc",
        f"Around {gauge.name}, {gauge.kecamatan} district"
        if english
        else f"Sekitar {gauge.name}, Kecamatan {gauge.kecamatan}",
    )
    # CAP circles are "lat,lon radius" in WGS 84 with the radius in kilometres.
    _sub(area, "circle", f"{gauge.lat:.5f},{gauge.lon:.5f} {publisher.area_radius_km:g}")
    _pair(area, "geocode", "kecamatan", gauge.kecamatan)


def cap_alert(
    change: AlertChange,
    gauge: Gauge,
    publisher: Publisher,
    earlier: Sequence[AlertChange] = (),
) -> etree._Element:
    """The CAP 1.2 ``alert`` element of one change; ``earlier``: the alert's earlier messages."""
    references = [
        f"{publisher.sender},{identifier(e)},{cap_time(e.recorded_at)}"
        for e in earlier
        if e.is_cap and e.id < change.id
    ]
    # An Update or Cancel must say what it updates (CAP 1.2, Google's profile): without an
    # earlier message to refer to, the change is announced as a new Alert.
    kind = msg_type(change) if references else "Alert"
    alert = etree.Element(f"{{{CAP_NS}}}alert", nsmap={None: CAP_NS})  # type: ignore[dict-item]
    _sub(alert, "identifier", identifier(change))
    _sub(alert, "sender", publisher.sender)
    _sub(alert, "sent", cap_time(change.recorded_at))
    _sub(alert, "status", "Actual")
    _sub(alert, "msgType", kind)
    _sub(alert, "source", "Pantau")
    _sub(alert, "scope", "Public")
    if kind != "Alert":
        _sub(alert, "references", " ".join(references))
    _sub(alert, "incidents", incident(change.alert_id))
    _info(alert, change, gauge, publisher, english=False)
    _info(alert, change, gauge, publisher, english=True)
    return alert


def to_xml(element: etree._Element) -> bytes:
    """Serialise with an XML declaration, UTF-8."""
    return etree.tostring(element, xml_declaration=True, encoding="UTF-8", pretty_print=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedEntry:
    """One alert in the Atom feed: its newest CAP message."""

    change: AlertChange
    gauge: Gauge
    earlier: Sequence[AlertChange] = ()


def _atom(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ATOM_NS}}}{tag}")
    if text is not None:
        element.text = text
    return element


def atom_feed(
    entries: Sequence[FeedEntry],
    publisher: Publisher,
    *,
    feed_url: str,
    title: str = "Pantau: peringatan banjir (CAP 1.2)",
    now: datetime,
    inline_bytes: int = FEED_INLINE_BYTES,
) -> bytes:
    """An Atom feed (RFC 4287) with one entry per alert, its newest CAP message inline while
    the messages inlined stay within ``inline_bytes`` (every entry links to its message).

    Entry ids stay the same across an alert's updates (the entry is updated, as RFC 4287
    intends); the CAP message inside carries the message's own identifier.
    """
    base = publisher.base_url.rstrip("/")
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})  # type: ignore[dict-item]
    _atom(feed, "id", feed_url)
    _atom(feed, "title", title)
    updated = max((e.change.recorded_at for e in entries), default=now)
    _atom(feed, "updated", cap_time(updated))
    author = _atom(feed, "author")
    _atom(author, "name", publisher.sender_name)
    link = _atom(feed, "link")
    link.set("rel", "self")
    link.set("type", ATOM_MEDIA_TYPE)
    link.set("href", feed_url)
    inline = 0
    for item in entries:
        change = item.change
        entry = _atom(feed, "entry")
        _atom(entry, "id", f"{base}/alerts/{change.alert_id}")
        _atom(entry, "title", change.message)
        _atom(entry, "updated", cap_time(change.recorded_at))
        alternate = _atom(entry, "link")
        alternate.set("rel", "alternate")
        alternate.set("type", CAP_MEDIA_TYPE)
        alternate.set("href", f"{base}/alerts/{change.alert_id}/cap.xml")
        summary = _atom(entry, "summary", change.message_en)
        summary.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        message = cap_alert(change, item.gauge, publisher, item.earlier)
        inline += len(etree.tostring(message))
        if inline <= inline_bytes:  # beyond it, readers follow the link to the message
            content = _atom(entry, "content")
            content.set("type", CAP_MEDIA_TYPE)
            content.append(message)
    return to_xml(feed)
