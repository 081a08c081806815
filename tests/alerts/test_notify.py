"""The notifier against a real Alertmanager (the installed binary, the generated configuration)
and real receivers: e-mail over SMTP, the Telegram Bot API stand-in and webhooks.

Alerts are written into the database as the alert service writes them; the notifier reads them
from there, as it does in the service.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import psycopg
from prometheus_client import CollectorRegistry

from alerts.notify import WATERMARK_KEY, Batch, Links, Notifier, build
from pantau.settings import NotifySettings, Settings
from pantau.tools.services import PrivateAlertmanager, wait_until
from tests.fixtures.alertmanager import AlertmanagerFactory, Inbox, Receivers, amtool
from tests.fixtures.operators import T0, AddAlert, add_event


@contextmanager
def notifying(
    city_db: str, settings: NotifySettings, server: PrivateAlertmanager
) -> Iterator[tuple[Notifier, CollectorRegistry]]:
    registry = CollectorRegistry()
    notify = settings.model_copy(update={"alertmanager_url": server.url})
    notifier = Notifier(Settings(database_url=city_db, notify=notify), registry=registry)
    notifier.start()
    try:
        yield notifier, registry
    finally:
        notifier.stop()


def posts(registry: CollectorRegistry, outcome: str = "ok") -> float:
    value = registry.get_sample_value("pantau_alerts_notify_posts_total", {"outcome": outcome})
    return value or 0.0


def settle(registry: CollectorRegistry, more: int = 3) -> None:
    """Wait until the notifier has sent everything again ``more`` times: anything Alertmanager
    was going to send about it has been sent (its group interval is shorter than a resend)."""
    target = posts(registry) + more
    wait_until(lambda: posts(registry) >= target, timeout_s=30, what=f"{more} more posts")


def change(conn: psycopg.Connection, alert_id: int, kind: str, level: int, at: datetime) -> None:
    """An escalation, de-escalation or resolution, written as the alert service writes it."""
    resolved = kind == "resolved"
    row = conn.execute(
        "UPDATE alerts SET level = %s, updated_at = %s, message = %s, message_en = %s, "
        "state = CASE WHEN %s THEN 'resolved' ELSE state END, "
        "resolved_at = CASE WHEN %s THEN %s END WHERE id = %s RETURNING sensor_id, rule",
        [level, at, f"{kind} level {level}", f"{kind} level {level}", resolved, resolved, at,
         alert_id],
    ).fetchone()  # fmt: skip
    assert row is not None
    add_event(conn, alert_id, row[0], row[1], kind, level, at)


def delivered(inboxes: tuple[Inbox, ...], *key: object) -> bool:
    sensor, rule, level, status = key
    return all(inbox.of(str(sensor), str(rule), int(str(level)), str(status)) for inbox in inboxes)


def test_every_receiver_gets_the_awas_once_and_its_end_in_indonesian(
    city_db: str,
    conn: psycopg.Connection,
    add_alert: AddAlert,
    receivers: Receivers,
    alertmanager_factory: AlertmanagerFactory,
) -> None:
    settings = receivers.settings()
    server = alertmanager_factory(settings)
    alert = add_alert(levels=(1, 2, 3))
    everyone = receivers.everyone_inboxes
    with notifying(city_db, settings, server) as (notifier, registry):
        wait_until(
            lambda: delivered(everyone, "fg-welang-2", "flood_level", 3, "firing"),
            timeout_s=30,
            what="the Awas on every channel",
        )
        change(conn, alert, "resolved", 3, T0 + timedelta(hours=2))
        notifier.poke()
        wait_until(
            lambda: delivered(everyone, "fg-welang-2", "flood_level", 3, "resolved"),
            timeout_s=30,
            what="its end on every channel",
        )
        settle(registry)
    for inbox in everyone:
        rows = inbox.snapshot()
        assert [(d.sensor, d.level, d.status) for d in rows] == [
            ("fg-welang-2", 3, "firing"),
            ("fg-welang-2", 3, "resolved"),
        ], inbox.channel
        assert {d.alert_id for d in rows} == {alert}
    mail = receivers.smtp.raw
    assert [str(m["Subject"]) for m in mail] == [
        "Banjir Awas: Pos Duga Air Welang Pohjentrek, Kec. Pohjentrek",
        "SELESAI: Banjir Awas: Pos Duga Air Welang Pohjentrek, Kec. Pohjentrek",
    ]
    assert str(mail[0]["To"]) == "semua@bpbd.example.org"
    firing = receivers.telegram.of("fg-welang-2", "flood_level", 3, "firing")[0].text
    # Indonesian first, the English text below; the link to the gauge on the city page.
    assert firing.index("⚠️ Banjir Awas") < firing.index("English: Flood Awas (danger)")
    assert (
        "PERINGATAN: Banjir Awas"
        in receivers.smtp.of("fg-welang-2", "flood_level", 3, "firing")[0].text
    )
    assert "Sejak 10/01/2026 15:20 WIB" in firing
    assert "http://pantau.example.org/?sensor=fg-welang-2" in firing
    assert receivers.telegram.raw[0]["chat_id"] in (str(receivers.chat_id), receivers.chat_id)
    assert receivers.telegram.raw[0]["parse_mode"] == "HTML"
    ended = receivers.everyone.raw[-1]["alerts"][0]
    assert ended["annotations"]["resolution"] == "resolved level 3 di fg-welang-2"
    assert ended["labels"]["level_name"] == "Awas"
    assert ended["labels"] | {"alert_id": "x"} == {
        "alertname": "PantauFloodLevel", "alert_id": "x", "sensor": "fg-welang-2",
        "rule": "flood_level", "level": "3", "level_name": "Awas", "kecamatan": "Pohjentrek",
        "river": "Welang", "family": "flood_gauge",
    }  # fmt: skip
    # Pantau's own record, for the alert's history: each level and end once, however often the
    # open alert was sent again.
    handed = conn.execute(
        "SELECT level, status, count(*) FROM alert_notifications WHERE alert_id = %s "
        "GROUP BY level, status ORDER BY level, status",
        [alert],
    ).fetchall()
    assert (3, "firing", 1) in handed and (3, "resolved", 1) in handed, handed
    assert all(count == 1 for _, _, count in handed), handed
    # The duty officer is told of every level: Waspada and Siaga were never in force while the
    # notifier ran, so only the Awas and its end.
    assert {(d.level, d.status) for d in receivers.duty.snapshot()} == {
        (3, "firing"),
        (3, "resolved"),
    }


def test_a_higher_level_silences_the_end_of_the_lower_one_and_the_gauges_forecasts(
    city_db: str,
    conn: psycopg.Connection,
    add_alert: AddAlert,
    receivers: Receivers,
    alertmanager_factory: AlertmanagerFactory,
) -> None:
    settings = receivers.settings()
    server = alertmanager_factory(settings)
    flood = add_alert(levels=(1, 2))
    rising = add_alert(rule="rising_fast", levels=(3,), predicted=(3, T0 + timedelta(hours=1)))
    elsewhere = add_alert(sensor="fg-welang-3", rule="upstream", levels=(2,))
    duty = (receivers.duty,)
    with notifying(city_db, settings, server) as (notifier, registry):
        wait_until(
            lambda: (
                delivered(duty, "fg-welang-2", "flood_level", 2, "firing")
                and delivered(receivers.everyone_inboxes, "fg-welang-2", "rising_fast", 3, "firing")
                and delivered(duty, "fg-welang-3", "upstream", 2, "firing")
            ),
            timeout_s=30,
            what="Siaga, the forecast and the advisory",
        )
        later = T0 + timedelta(hours=1)
        change(conn, flood, "escalated", 3, later)
        change(conn, rising, "resolved", 3, later)
        change(conn, elsewhere, "resolved", 2, later)
        # The wave from upstream reaches the gauge while it is at Awas: nothing to add.
        add_alert(rule="upstream", levels=(3,), start=later)
        notifier.poke()
        wait_until(
            lambda: (
                delivered(receivers.everyone_inboxes, "fg-welang-2", "flood_level", 3, "firing")
                and delivered(duty, "fg-welang-3", "upstream", 2, "resolved")
            ),
            timeout_s=30,
            what="the Awas, and the end of the advisory elsewhere",
        )
        settle(registry)
    for inbox in (*receivers.everyone_inboxes, receivers.duty):
        assert inbox.of("fg-welang-2", "flood_level", 2, "resolved") == [], inbox.channel
        assert inbox.of("fg-welang-2", "rising_fast", 3, "resolved") == [], inbox.channel
        assert inbox.of("fg-welang-2", "upstream", 3, "firing") == [], inbox.channel
    # Alertmanager holds it, inhibited: Pantau told it everything, Alertmanager decided.
    inhibited = json.loads(amtool(server, "alert", "query", "--inhibited", "-o", "json"))
    assert [(a["labels"]["rule"], a["status"]["inhibitedBy"] != []) for a in inhibited] == [
        ("upstream", True)
    ]


def test_a_silence_on_a_gauge_under_maintenance_suppresses_its_notifications(
    city_db: str,
    add_alert: AddAlert,
    receivers: Receivers,
    alertmanager_factory: AlertmanagerFactory,
) -> None:
    settings = receivers.settings()
    server = alertmanager_factory(settings)
    silence = amtool(
        server, "silence", "add", "sensor=fg-welang-2", "--duration=2h",
        "--author=operator", "--comment=pemeliharaan pos duga air",
    ).strip()  # fmt: skip
    assert silence
    add_alert(levels=(3,))
    add_alert(sensor="fg-welang-3", levels=(3,))
    with notifying(city_db, settings, server) as (_, registry):
        wait_until(
            lambda: delivered(
                receivers.everyone_inboxes, "fg-welang-3", "flood_level", 3, "firing"
            ),
            timeout_s=30,
            what="the other gauge's Awas",
        )
        settle(registry)
    for inbox in (*receivers.everyone_inboxes, receivers.duty):
        assert {d.sensor for d in inbox.snapshot()} == {"fg-welang-3"}, inbox.channel
    assert "fg-welang-2" in amtool(server, "silence", "query")


def test_alertmanager_away_stalls_nothing_and_hears_everything_when_back(
    city_db: str,
    add_alert: AddAlert,
    receivers: Receivers,
    alertmanager_factory: AlertmanagerFactory,
) -> None:
    settings = receivers.settings()
    server = alertmanager_factory(settings, start=False)  # its port, nothing listening yet
    add_alert(levels=(3,))
    with notifying(city_db, settings, server) as (notifier, registry):
        wait_until(lambda: posts(registry, "failed") >= 3, timeout_s=30, what="failed posts")
        started = time.perf_counter()
        for _ in range(1_000):
            notifier.poke()
        assert time.perf_counter() - started < 0.1  # the evaluation loop never waits on it
        server.start()
        wait_until(
            lambda: delivered(
                receivers.everyone_inboxes, "fg-welang-2", "flood_level", 3, "firing"
            ),
            timeout_s=30,
            what="the Awas once Alertmanager is back",
        )
        settle(registry)
    for inbox in receivers.everyone_inboxes:
        assert len(inbox.snapshot()) == 1, inbox.channel


def test_an_end_not_yet_delivered_is_delivered_by_the_next_instance(
    city_db: str,
    conn: psycopg.Connection,
    add_alert: AddAlert,
    receivers: Receivers,
    alertmanager_factory: AlertmanagerFactory,
) -> None:
    settings = receivers.settings()
    server = alertmanager_factory(settings)
    alert = add_alert(levels=(3,))
    webhook = (receivers.everyone,)
    with notifying(city_db, settings, server) as (notifier, registry):
        wait_until(
            lambda: delivered(webhook, "fg-welang-2", "flood_level", 3, "firing"),
            timeout_s=30,
            what="the Awas",
        )
        server.stop()  # SIGTERM: it saves its notification log
        change(conn, alert, "resolved", 3, T0 + timedelta(hours=3))
        notifier.poke()
        failed = posts(registry, "failed")
        wait_until(lambda: posts(registry, "failed") > failed, timeout_s=30, what="a failed post")
    # The service stopped before Alertmanager heard of the end; the next instance tells it.
    ended = _last_event(conn, alert)
    assert _watermark(conn) < ended
    server.start()
    with notifying(city_db, settings, server) as (_, registry):
        wait_until(
            lambda: delivered(webhook, "fg-welang-2", "flood_level", 3, "resolved"),
            timeout_s=30,
            what="the end, after the restart",
        )
        wait_until(lambda: _watermark(conn) >= ended, timeout_s=30, what="the end done")
        settle(registry)
    assert [(d.level, d.status) for d in receivers.everyone.snapshot()] == [
        (3, "firing"),
        (3, "resolved"),
    ]


def _last_event(conn: psycopg.Connection, alert_id: int) -> int:
    row = conn.execute("SELECT max(id) FROM alert_events WHERE alert_id = %s", [alert_id])
    found = row.fetchone()
    assert found is not None
    return int(found[0])


def _watermark(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT value FROM alert_service_state WHERE key = %s", [WATERMARK_KEY]
    ).fetchone()
    return -1 if row is None else int(row[0])


def _open(alert_id: int, rule: str, level: int, sensor: str = "fg-welang-2") -> dict:
    return {
        "alert_id": alert_id, "sensor_id": sensor, "rule": rule, "level": level,
        "entered_at": T0, "value": 4.2, "predicted_level": None, "predicted_at": None,
        "message": "m", "message_en": "m", "name": sensor, "family": "flood_gauge",
        "kecamatan": "Bangil", "river": None,
    }  # fmt: skip


def _end(event_id: int, row: dict, previous_level: int) -> dict:
    return row | {
        "id": event_id, "previous_level": previous_level, "observed_at": T0,
        "level_message": "m", "level_message_en": "m",
    }  # fmt: skip


def _sent(batch: Batch) -> list[tuple[str, str, str, bool]]:
    return [
        (a["labels"]["alert_id"], a["labels"]["rule"], a["labels"]["level"], "endsAt" in a)
        for a in batch.alerts
    ]


def test_what_a_new_level_silences_waits_until_alertmanager_holds_that_level() -> None:
    """Alertmanager's inhibitor may read a new Awas after it has flushed what the Awas
    silences when both come in one post: those wait for the next post."""
    awas, upstream = _open(1, "flood_level", 3), _open(2, "upstream", 3)
    elsewhere = _open(3, "upstream", 2, sensor="fg-welang-3")
    ends = [_end(10, awas, 2), _end(11, _open(4, "rising_fast", 3), 3)]
    first = build([awas, upstream, elsewhere], ends, Links())
    assert _sent(first) == [("1", "flood_level", "3", False), ("3", "upstream", "2", False)]
    assert (first.ends, first.deferred) == ({}, [10, 11])
    known = frozenset({(1, 3), (3, 2)})
    second = build([awas, upstream, elsewhere], ends, Links(), known=known)
    assert _sent(second) == [
        ("1", "flood_level", "3", False),
        ("2", "upstream", "3", False),
        ("3", "upstream", "2", False),
        ("1", "flood_level", "2", True),
        ("4", "rising_fast", "3", True),
    ]
    assert (second.ends, second.deferred) == ({(1, 2): 10, (4, 3): 11}, [])
