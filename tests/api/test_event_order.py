"""Alert changes in order for every reader: polling `/alerts/events?after_id=` while the alert
service commits batches of changes and operators acknowledge alerts through the API at the
same time (real concurrent transactions) sees every change, in id order, none skipped."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from alerts.evaluator import Outcome
from alerts.model import Change, Rule, Target, Transition
from tests.fixtures.alerts import leading_store
from tests.fixtures.api import api_settings, serve
from tests.fixtures.operators import AddAlert

GAUGES = ("fg-welang-1", "fg-welang-2", "fg-welang-3")
SENSORS = (*GAUGES, "tc-bangil-1", "tc-bangil-2", "sn-bangil-1", "sn-bangil-2")
US = 1_000_000
RUN_S = 4.0


def _batch(step: int) -> Outcome:
    """One batch as the alert service commits it: each gauge's alert opened, escalated and
    resolved (several changes in one transaction), with the rule states that led there."""
    at = round(datetime(2026, 2, 1, tzinfo=UTC).timestamp() * US) + step * 60 * US
    transitions = []
    for gauge in GAUGES:
        for offset, (change, level, previous) in enumerate(
            [(Change.OPENED, 1, None), (Change.ESCALATED, 2, 1), (Change.RESOLVED, 2, 2)]
        ):
            transitions.append(
                Transition(
                    sensor_id=gauge,
                    rule=Rule.FLOOD_LEVEL,
                    change=change,
                    level=level,
                    previous_level=previous,
                    observed_us=at + offset * US,
                    target=Target(level=level, value=1.0 + level, message="m", message_en="m"),
                )
            )
    # The states keep the transaction open a little after its changes, as a busy city's do.
    states = {
        (sensor, rule): (at, {"pad": "x" * 4_000, "step": step})
        for sensor in SENSORS
        for rule in Rule
    }
    return Outcome(transitions=transitions, states=states, clock_us=at)


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT change, count(*) FROM alert_events GROUP BY change")
        return {change: count for change, count in rows}


def _ids(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM alert_events ORDER BY id")]


def test_polling_skips_no_change_under_concurrent_writers(
    city_db: str, add_alert: AddAlert, operator_key: str
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # Resolved alerts for the operators to acknowledge (one open alert per sensor and rule).
    to_ack = [
        add_alert(sensor=SENSORS[n % len(SENSORS)], rule="offline", resolve=True,
                  start=start + timedelta(hours=n))
        for n in range(400)
    ]  # fmt: skip
    stop = threading.Event()
    errors: list[BaseException] = []

    def service() -> None:
        with leading_store(city_db, stop=stop.is_set) as store:
            for step in itertools.count():
                if stop.is_set():
                    return
                store.commit(_batch(step), published_event_id=0)

    def operator(base: str, mine: list[int]) -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            for alert in mine:
                if stop.is_set():
                    return
                response = client.post(f"/alerts/{alert}/ack", headers={"X-API-Key": operator_key})
                assert response.status_code == 200, response.text

    def guarded(target: object, *args: object) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)  # type: ignore[operator]
            except BaseException as error:
                errors.append(error)
                stop.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    polled: list[int] = []
    with (
        serve(api_settings(city_db, pool_max_size=8)) as base,
        httpx.Client(base_url=base, timeout=10) as poller,
    ):

        def poll_once() -> int:
            after = polled[-1] if polled else 0
            page = poller.get("/alerts/events", params={"after_id": after, "limit": 1000})
            assert page.status_code == 200, page.text
            got = [item["id"] for item in page.json()["items"]]
            assert got == sorted(got) and (not got or got[0] > after), got
            polled.extend(got)
            return len(got)

        threads = [guarded(service)] + [guarded(operator, base, to_ack[n::4]) for n in range(4)]
        deadline = time.monotonic() + RUN_S
        while time.monotonic() < deadline and not stop.is_set():
            poll_once()
        stop.set()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        while poll_once():
            pass
    stored = _ids(city_db)
    counts = _counts(city_db)
    # Enough of both writers to tell (more of each on a quiet machine).
    assert counts.get("acknowledged", 0) > 50, counts
    assert counts.get("escalated", 0) > 50, counts
    missed = sorted(set(stored) - set(polled))
    assert not missed, f"{len(missed)} changes skipped by polling, e.g. {missed[:10]}"
    assert polled == stored
