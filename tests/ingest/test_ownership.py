"""A device speaks only for itself, end to end: the production broker and ACL, device accounts,
ingest and the alert service each logged in to the database as themselves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from pantau.db.migrate import set_login_password
from pantau.feedback import FeedbackListener
from pantau.tools.services import wait_until
from pantau.topics import payload_digest
from tests.fixtures.alerts import AlertProcess, AlertsFactory
from tests.fixtures.database import as_login
from tests.fixtures.ingest import IngestFactory, IngestProcess
from tests.fixtures.production_broker import ProductionBroker

DEVICES = {"sn-bangil-1": "node-secret", "gw-purwosari": "gateway-secret"}
# fg-welang-1's thresholds in the mini city are 1.5 / 2.0 / 2.5 m: 4.321 m would be Awas.
STOLEN = {
    "senml": [{"bn": "fg-welang-1/", "n": "water_level", "u": "m", "v": 4.321}],
    "list": [{"sensor": "fg-welang-1", "values": {"water_level": 4.321}}],
    "single": {"sensor": "fg-welang-1", "values": {"water_level": 4.321}},
}


@dataclass
class Stack:
    broker: ProductionBroker
    url: str
    ingest: IngestProcess
    alerts: AlertProcess


def _count(url: str, query: str, *args: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, list(args)).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def stack(
    city_db: str,
    production_broker: ProductionBroker,
    ingest_factory: IngestFactory,
    alerts_factory: AlertsFactory,
) -> Iterator[Stack]:
    """Ingest and the alert service under their own database logins and broker accounts."""
    broker = production_broker
    broker.add_accounts(DEVICES)
    set_login_password(city_db, "pantau_ingest", "ingest-db-secret")
    set_login_password(city_db, "pantau_alerts", "alerts-db-secret")
    mqtt = broker.mqtt_settings("ingest-own")
    ingest = ingest_factory(database_url=as_login(city_db, "pantau_ingest"), mqtt=mqtt, start=False)
    ingest.env.update(broker.login_env("ingest"))
    ingest.start()
    alerts = alerts_factory(database_url=as_login(city_db, "pantau_alerts"), mqtt=mqtt, start=False)
    alerts.env.update(broker.login_env("alerts"))
    alerts.start()
    yield Stack(broker, city_db, ingest, alerts)


def test_a_node_cannot_report_for_a_flood_gauge_in_any_shape(stack: Stack) -> None:
    broker, url = stack.broker, stack.url
    listener = FeedbackListener(
        mqtt_settings=broker.mqtt_settings(),
        device_id="sn-bangil-1",
        username="sn-bangil-1",
        password=DEVICES["sn-bangil-1"],
    )
    listener.start()
    try:
        payloads = {shape: json.dumps(body).encode() for shape, body in STOLEN.items()}
        for payload in payloads.values():
            # The ACL lets the node write its own uplink: the broker accepts every one.
            assert not broker.publish("sn-bangil-1", DEVICES["sn-bangil-1"], payload).is_failure
        notices = [listener.get(15) for _ in payloads]
        assert all(n is not None for n in notices), stack.ingest.log()[-3000:]
        assert {n.reason for n in notices if n} == {"foreign_sensor"}
        assert {n.payload_sha256 for n in notices if n} == {
            payload_digest(p) for p in payloads.values()
        }
        assert all("may not report for 'fg-welang-1'" in n.detail for n in notices if n)
        wait_until(
            lambda: (
                _count(
                    url, "SELECT count(*) FROM rejected_payloads WHERE reason = 'foreign_sensor'"
                )
                == 3
            ),
            timeout_s=20,
            what="three foreign_sensor rejections stored",
        )
        # The alert service has seen all three, and evaluated none.
        wait_until(
            lambda: stack.alerts.metric("pantau_alerts_messages_received_total") >= 3,
            timeout_s=20,
            what="the alert service to take the three messages",
        )
        assert stack.alerts.metric("pantau_alerts_readings_evaluated_total") == 0
        assert _count(url, "SELECT count(*) FROM readings") == 0
        assert _count(url, "SELECT count(*) FROM latest_readings") == 0
        assert _count(url, "SELECT count(*) FROM alerts") == 0
        assert _count(url, "SELECT count(*) FROM gauge_status") == 0

        # The gauge's registered gateway still reports for it: stored, and Awas opens (two
        # readings a minute apart, as a level is confirmed by two).
        pack = [
            {"bn": "fg-welang-1/", "n": "water_level", "u": "m", "v": 2.61, "t": -60},
            {"n": "water_level", "u": "m", "v": 2.61},
        ]
        code = broker.publish("gw-purwosari", DEVICES["gw-purwosari"], json.dumps(pack).encode())
        assert not code.is_failure
        query = "SELECT count(*) FROM alerts WHERE sensor_id = 'fg-welang-1' AND level = 3"
        wait_until(lambda: _count(url, query) == 1, timeout_s=20, what="Awas on fg-welang-1")
        # Ingest and the alert service read the broker apart: each commits in its own time.
        stored = "SELECT count(*) FROM readings"
        wait_until(lambda: _count(url, stored) == 2, timeout_s=20, what="the readings stored")
        with psycopg.connect(url) as conn:
            values = conn.execute("SELECT sensor_id, value FROM readings").fetchall()
            alerts = conn.execute("SELECT sensor_id, rule, value FROM alerts").fetchall()
        assert values == [("fg-welang-1", 2.61)] * 2
        # Awas at the gauge (and the advisory downstream it raises), from 2.61 m alone.
        assert ("fg-welang-1", "flood_level", 2.61) in alerts
        assert {value for _, _, value in alerts} == {2.61}, alerts
        assert listener.get(0.5) is None, "the node heard of a payload that was not its own"
    finally:
        listener.stop()
