"""Notifications of a whole simulated flood, end to end: the simulator (accelerated) through a
real Mosquitto to ingest and `python -m alerts`, which sends to a real Alertmanager running the
generated configuration, which tells an SMTP server, the Telegram Bot API stand-in and webhooks.

The flood runs at 1,500 times real time (18 simulated hours in about 45 s): every level of a
gauge then lasts seconds of real time, longer than Alertmanager's test timers, as minutes are
longer than the production ones.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pantau.city import City
from pantau.settings import MqttSettings
from pantau.tools.services import PrivateMosquitto, wait_until
from simulators.config import RunConfig
from simulators.runner import Simulation
from tests.fixtures.alertmanager import AlertmanagerFactory, Inbox, Receivers, amtool
from tests.fixtures.alerts import AlertProcess, AlertsFactory
from tests.fixtures.ingest import IngestFactory

WELANG = ("fg-welang-1", "fg-welang-2", "fg-welang-3")
SPEED = 1_500.0
OUTAGE_S = 120.0


class PausableWall:
    """A wall clock for the simulator that can stand still: paused, the simulation waits."""

    def __init__(self) -> None:
        self._paused_s = 0.0
        self._since: float | None = None

    def __call__(self) -> float:
        now = time.time()
        held = self._paused_s + (now - self._since if self._since is not None else 0.0)
        return now - held

    def pause(self) -> None:
        self._since = time.time()

    def resume(self) -> None:
        assert self._since is not None
        self._paused_s += time.time() - self._since
        self._since = None


def _flood(city: City, mqtt: MqttSettings, wall: PausableWall) -> tuple[Simulation, Any]:
    config = RunConfig(scenario="flood", duration=timedelta(hours=18), speed=SPEED)
    simulation = Simulation(city=city, mqtt=mqtt, config=config, wall=wall)
    thread = threading.Thread(target=simulation.run, daemon=True)
    thread.start()
    return simulation, thread


def _event_at(conninfo: str, gauge: str, rule: str, level: int, change: str) -> float | None:
    """When (wall clock) the first such change was committed, if it was."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM min(recorded_at)) FROM alert_events "
            "WHERE sensor_id = %s AND rule = %s AND level = %s AND change = %s",
            [gauge, rule, level, change],
        ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _wait_for_event(conninfo: str, gauge: str, rule: str, level: int, change: str) -> float:
    found: list[float] = []

    def committed() -> bool:
        at = _event_at(conninfo, gauge, rule, level, change)
        if at is not None:
            found.append(at)
        return at is not None

    wait_until(committed, timeout_s=180, what=f"{gauge} {rule} {change} {level}")
    return found[0]


def _posts(alerts: AlertProcess) -> float:
    try:
        return alerts.metric("pantau_alerts_notify_posts_total", outcome="ok")
    except KeyError:
        return 0.0


def _finish(
    conninfo: str, receivers: Receivers, alerts: AlertProcess, thread: Any, last_gauge: str
) -> None:
    """Let the run end, the last gauge's Awas end reach every channel, and the service send
    everything again a few times (anything Alertmanager would repeat has come by then)."""
    thread.join(timeout=300)
    assert not thread.is_alive(), "the simulation did not finish"
    _wait_for_event(conninfo, "fg-welang-3", "flood_level", 1, "resolved")
    wait_until(
        lambda: all(
            inbox.of(last_gauge, "flood_level", 3, "resolved")
            for inbox in receivers.everyone_inboxes
        ),
        timeout_s=120,
        what=f"the end of {last_gauge}'s Awas on every channel",
    )
    target = _posts(alerts) + 4
    wait_until(lambda: _posts(alerts) >= target, timeout_s=60, what="four more posts")


def _assert_once_each(inbox: Inbox) -> None:
    """No alert level is told twice in the same state (Alertmanager deduplicates resends and
    restarts; a repeat would take the hour of the test's repeat interval)."""
    counts = Counter((d.alert_id, d.rule, d.level, d.status) for d in inbox.snapshot())
    assert [key for key, n in counts.items() if n > 1] == [], inbox.channel


def _assert_awas_once_and_its_end(inbox: Inbox, gauge: str) -> tuple[float, float]:
    firing = inbox.of(gauge, "flood_level", 3, "firing")
    ended = inbox.of(gauge, "flood_level", 3, "resolved")
    assert (len(firing), len(ended)) == (1, 1), (inbox.channel, gauge, firing, ended)
    assert firing[0].at < ended[0].at
    return firing[0].at, ended[0].at


def _assert_inhibition(receivers: Receivers, gauge: str, awas_ended_at: float) -> None:
    """The end of the gauge's Siaga when it became Awas, and the end of its forecasts while it
    was at Awas, were never told; the Siaga's end when the water went down was."""
    for inbox in receivers.everyone_inboxes:
        assert inbox.of(gauge, "rising_fast", 3, "resolved") == [], (inbox.channel, gauge)
    siaga_ended = receivers.duty.of(gauge, "flood_level", 2, "resolved")
    assert len(siaga_ended) == 1 and siaga_ended[0].at > awas_ended_at, (gauge, siaga_ended)
    assert receivers.duty.of(gauge, "rising_fast", 3, "resolved") == []


@pytest.mark.slow
def test_a_flood_is_told_once_per_gauge_on_every_channel_silences_and_restarts_included(
    city_db: str,
    mqtt_settings: MqttSettings,
    mini_city: City,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
    receivers: Receivers,
    alertmanager_factory: AlertmanagerFactory,
) -> None:
    settings = receivers.settings()
    server = alertmanager_factory(settings)
    # The upstream gauge is under maintenance: an operator silenced it beforehand.
    amtool(server, "silence", "add", "sensor=fg-welang-1", "--duration=2h",
           "--author=operator", "--comment=pemeliharaan")  # fmt: skip
    notify = settings.model_copy(update={"alertmanager_url": server.url})
    ingest_factory(database_url=city_db, mqtt=mqtt_settings)
    alerts = alerts_factory(database_url=city_db, mqtt=mqtt_settings, notify=notify)
    _, thread = _flood(mini_city, mqtt_settings, PausableWall())
    # Once the middle gauge's Awas is out, the service dies (kill -9) and comes back: it sends
    # everything again from the database, and Alertmanager tells nobody twice.
    wait_until(
        lambda: all(
            inbox.of("fg-welang-2", "flood_level", 3, "firing")
            for inbox in receivers.everyone_inboxes
        ),
        timeout_s=180,
        what="fg-welang-2's Awas on every channel",
    )
    alerts.kill()
    alerts.start()
    _finish(city_db, receivers, alerts, thread, last_gauge="fg-welang-3")

    for inbox in (*receivers.everyone_inboxes, receivers.duty):
        _assert_once_each(inbox)
        assert "fg-welang-1" not in {d.sensor for d in inbox.snapshot()}, inbox.channel
    for gauge in WELANG[1:]:
        ends = [
            _assert_awas_once_and_its_end(inbox, gauge)[1] for inbox in receivers.everyone_inboxes
        ]
        _assert_inhibition(receivers, gauge, min(ends))
    # In Indonesian, with the English text below.
    text = receivers.telegram.of("fg-welang-3", "flood_level", 3, "firing")[0].text
    assert "Banjir Awas: Pos Duga Air Welang Bangil, Kec. Bangil" in text
    assert text.index("Sejak") < text.index("English:")
    mail = receivers.smtp.of("fg-welang-3", "flood_level", 3, "resolved")[0].text
    assert mail.startswith("SELESAI: Banjir Awas") and "Berakhir" in mail
    assert alerts.starts == 2


@pytest.mark.slow
def test_alertmanager_away_for_two_minutes_mid_flood_loses_no_notification(
    city_db: str,
    private_broker: PrivateMosquitto,
    test_id: str,
    mini_city: City,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
    receivers: Receivers,
    alertmanager_factory: AlertmanagerFactory,
) -> None:
    # A broker of the test's own: it keeps the service's session while the service is killed.
    mqtt = MqttSettings(url=private_broker.url, topic_root=f"t-{test_id}", client_id=f"i-{test_id}")
    settings = receivers.settings()
    server = alertmanager_factory(settings)
    notify = settings.model_copy(update={"alertmanager_url": server.url})
    ingest_factory(database_url=city_db, mqtt=mqtt)
    alerts = alerts_factory(database_url=city_db, mqtt=mqtt, notify=notify)
    wall = PausableWall()
    _, thread = _flood(mini_city, mqtt, wall)

    # Alertmanager stops as the middle gauge reaches Siaga. While it is away the middle gauge
    # reaches Awas and the upstream one's Awas ends; then the flood holds (the simulator's
    # clock stands still) until the two minutes are up, and the service is killed meanwhile.
    _wait_for_event(city_db, "fg-welang-2", "flood_level", 2, "escalated")
    server.stop()
    stopped = time.time()
    _wait_for_event(city_db, "fg-welang-3", "flood_level", 2, "escalated")
    wall.pause()
    awas_away = _event_at(city_db, "fg-welang-2", "flood_level", 3, "escalated")
    end_away = _event_at(city_db, "fg-welang-1", "flood_level", 2, "de-escalated")
    assert awas_away is not None and awas_away > stopped, "evaluation went on meanwhile"
    assert end_away is not None and end_away > stopped
    alerts.kill()
    alerts.start()
    wait_until(
        lambda: time.time() - stopped >= OUTAGE_S, timeout_s=OUTAGE_S + 10, what="two minutes"
    )
    # Taken before it starts: the notifier's next attempt can be told before start() returns.
    back = time.time()
    server.start()
    wall.resume()
    _finish(city_db, receivers, alerts, thread, last_gauge="fg-welang-3")

    for inbox in (*receivers.everyone_inboxes, receivers.duty):
        _assert_once_each(inbox)
    for inbox in receivers.everyone_inboxes:
        spans = {gauge: _assert_awas_once_and_its_end(inbox, gauge) for gauge in WELANG}
        # What happened while Alertmanager was away was told once it was back.
        assert spans["fg-welang-1"][0] < stopped < back <= spans["fg-welang-1"][1], inbox.channel
        assert back <= spans["fg-welang-2"][0], inbox.channel
