"""The CAP feed through a whole simulated flood: every message the API serves, from the first
Alert through its Updates to the Cancel, passes the OASIS CAP 1.2 schema and every rule of
Google's public-alert profile, and so does the Atom feed at every hour of the flood.

The flood is evaluated in this process by the alert service's own evaluator and committed by
its own store (no broker needed), and read back over real HTTP from the real API.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from lxml import etree

from alerts.evaluator import Evaluator
from api.cap import ATOM_NS, CAP_NS
from pantau.city import City
from pantau.payload import Reading
from pantau.settings import AlertSettings
from simulators.fleet import Fleet
from simulators.scenarios import FloodScenario
from tests.fixtures.alerts import leading_store
from tests.fixtures.api import api_settings, serve
from tests.fixtures.cap import assert_google_profile, assert_valid_cap

NS = {"cap": CAP_NS, "atom": ATOM_NS}
HOURS = 18
COMMIT_EVERY_S = 600.0


def _check_feed(http: httpx.Client) -> int:
    """Every CAP message inline in the feed is valid and meets the profile; returns how many."""
    response = http.get("/alerts/cap.atom")
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    messages = root.findall("atom:entry/atom:content/cap:alert", NS)
    for message in messages:
        document = etree.tostring(message)
        assert_valid_cap(document)
        assert_google_profile(message)
    assert len(messages) == len(root.findall("atom:entry", NS))
    return len(messages)


@pytest.fixture
def cap_http(city_db: str) -> Iterator[httpx.Client]:
    settings = api_settings(
        city_db,
        cap_sender="bpbd.pasuruankab.example",
        cap_sender_name="BPBD Kabupaten Pasuruan",
        cap_contact="Pusdalops BPBD Kabupaten Pasuruan, telepon 112",
    )
    with serve(settings) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield client


def test_every_cap_message_of_a_flood_meets_the_schema_and_googles_profile(
    city_db: str, mini_city: City, cap_http: httpx.Client
) -> None:
    with leading_store(city_db) as store:
        evaluator = Evaluator(settings=AlertSettings(), sensors=store.load_sensors())
        fleet, scenario = Fleet(mini_city, seed=3), FloodScenario()
        latest = time.time()
        start = scenario.preferred_start(latest, HOURS * 3_600)
        scenario.apply(fleet, start)
        wall_us = round(latest * 1_000_000)
        committed_at, checked_at, seen = start, start, []
        for obs in fleet.observations(start, start + HOURS * 3_600):
            moment = datetime.fromtimestamp(obs.t, UTC)
            readings = [Reading.at(moment, obs.sensor_id, m, v) for m, v in obs.values.items()]
            evaluator.observe(readings, received_us=wall_us, wall_us=wall_us)
            if obs.t - committed_at >= COMMIT_EVERY_S:
                store.commit(evaluator.take(), published_event_id=0)
                committed_at = obs.t
            if obs.t - checked_at >= 3_600:  # the feed, every hour of the flood
                seen.append(_check_feed(cap_http))
                checked_at = obs.t
        store.commit(evaluator.take(), published_event_id=0)
    assert max(seen) >= 3, seen  # the feed did carry warnings during the flood
    _check_feed(cap_http)

    # Every message of every warning, as the API serves it one by one.
    alerts = cap_http.get("/alerts", params={"limit": 500}).json()["items"]
    flood = [a for a in alerts if a["rule"] in {"flood_level", "rising_fast", "upstream"}]
    assert {a["sensor_id"] for a in flood if a["rule"] == "flood_level"} == {
        "fg-welang-1",
        "fg-welang-2",
        "fg-welang-3",
    }
    kinds: dict[str, list[list[str]]] = defaultdict(list)
    for alert in flood:
        assert alert["state"] == "resolved", alert
        events = cap_http.get(f"/alerts/{alert['id']}").json()["events"]
        sequence = []
        for number, event in enumerate(events):
            response = cap_http.get(f"/alerts/{alert['id']}/cap.xml", params={"event": event["id"]})
            assert response.status_code == 200
            assert_valid_cap(response.content)
            assert_google_profile(response.content)
            root = etree.fromstring(response.content)
            sequence.append(root.findtext("cap:msgType", namespaces=NS) or "")
            references = (root.findtext("cap:references", namespaces=NS) or "").split()
            assert len(references) == number  # every earlier message of the warning
        kinds[alert["rule"]].append(sequence)
    for rule, sequences in kinds.items():
        for sequence in sequences:
            assert sequence[0] == "Alert" and sequence[-1] == "Cancel", (rule, sequence)
            assert set(sequence[1:-1]) <= {"Update"}, (rule, sequence)
    assert any(len(s) > 2 for s in kinds["flood_level"])  # with Updates between
