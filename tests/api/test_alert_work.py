"""Operators working alerts over real HTTP: acknowledge with a note, assign, comment, and the
alert's whole history; the trail behind it cannot be rewritten."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from pantau.cli import keys
from tests.fixtures.operators import AddAlert

PROBLEM = "application/problem+json"


@pytest.fixture
def budi(conn: psycopg.Connection) -> dict[str, str]:
    """Headers of a key held by a person."""
    return {"X-API-Key": keys.add_key(conn, "duty-1", holder="  Budi Santoso (BPBD) ")}


def _history(http: httpx.Client, alert_id: int, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = http.get(f"/alerts/{alert_id}/history", headers=headers)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


def _brief(entries: list[dict[str, Any]]) -> list[tuple[str, str, str | None, str | None]]:
    return [(e["source"], e["kind"], e["actor"], e["note"] or e["assignee"]) for e in entries]


def test_acknowledging_with_a_note_records_the_holder_and_the_note(
    http: httpx.Client, add_alert: AddAlert, budi: dict[str, str]
) -> None:
    alert = add_alert(levels=(1, 2))
    note = "BPBD dihubungi;\ntim menuju Pos Welang Pohjentrek"
    acked = http.post(f"/alerts/{alert}/ack", json={"note": note}, headers=budi)
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged_by"] == "Budi Santoso (BPBD)"
    assert acked.json()["events"][-1]["change"] == "acknowledged"
    # Again: nothing changes, and a note that comes with it is kept as a comment.
    again = http.post(f"/alerts/{alert}/ack", headers=budi).json()
    assert again["acknowledged_at"] == acked.json()["acknowledged_at"]
    http.post(f"/alerts/{alert}/ack", json={"note": "masih naik"}, headers=budi)
    assert _brief(_history(http, alert, budi)) == [
        ("alert_service", "opened", None, None),
        ("alert_service", "escalated", None, None),
        ("operator", "acknowledged", "Budi Santoso (BPBD)", note),
        ("operator", "commented", "Budi Santoso (BPBD)", "masih naik"),
    ]


def test_assignments_and_comments_make_the_history(
    http: httpx.Client, add_alert: AddAlert, budi: dict[str, str], operator_key: str
) -> None:
    alert = add_alert(levels=(2,))
    tester = {"X-API-Key": operator_key}
    assigned = http.post(
        f"/alerts/{alert}/assign",
        json={"assignee": "Siti Aminah", "note": "ke lokasi"},
        headers=budi,
    )
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["alert"]["assigned_to"] == "Siti Aminah"
    # Assigning to the same person again adds nothing.
    http.post(f"/alerts/{alert}/assign", json={"assignee": "Siti Aminah"}, headers=budi)
    commented = http.post(f"/alerts/{alert}/comments", json={"text": "Tiba 14.10"}, headers=tester)
    assert commented.status_code == 201, commented.text
    released = http.post(f"/alerts/{alert}/assign", json={"assignee": None}, headers=tester)
    assert released.json()["alert"]["assigned_to"] is None
    entries = _history(http, alert, tester)
    assert _brief(entries)[1:] == [
        ("operator", "assigned", "Budi Santoso (BPBD)", "ke lokasi"),
        ("operator", "commented", "tester", "Tiba 14.10"),
        ("operator", "unassigned", "tester", None),
    ]
    assert entries[1]["assignee"] == "Siti Aminah"
    times = [e["at"] for e in entries]
    assert times == sorted(times)
    listed = http.get("/alerts", params={"state": "open"}).json()["items"][0]
    assert listed["id"] == alert and listed["assigned_to"] is None


def test_the_history_shows_the_warning_post_commands_an_alert_caused(
    http: httpx.Client, add_alert: AddAlert, conn: psycopg.Connection, operator_key: str
) -> None:
    alert = add_alert(levels=(3,))
    other = add_alert(sensor="fg-welang-1", levels=(1,))
    command = {"gauge_id": "fg-welang-2", "light": "red", "siren": True, "level": "Awas"}
    conn.execute(
        "INSERT INTO warning_commands (gauge_id, command, alert_ids) VALUES (%s, %s, %s), "
        "(%s, %s, %s)",
        ["fg-welang-2", Jsonb(command), [alert], "fg-welang-1", Jsonb({"light": "off"}), [other]],
    )
    entries = _history(http, alert, {"X-API-Key": operator_key})
    posts = [e for e in entries if e["source"] == "warning_post"]
    assert [(p["kind"], p["command"]) for p in posts] == [("command", command)]
    assert entries[0]["level_label"] == "Awas"


def test_the_history_shows_what_was_handed_to_alertmanager(
    http: httpx.Client, add_alert: AddAlert, conn: psycopg.Connection, operator_key: str
) -> None:
    alert = add_alert(levels=(2, 3))
    other = add_alert(sensor="fg-welang-1", levels=(1,))
    conn.execute(
        "INSERT INTO alert_notifications (alert_id, level, status) "
        "VALUES (%s, 2, 'firing'), (%s, 2, 'resolved'), (%s, 3, 'firing'), (%s, 1, 'firing')",
        [alert, alert, alert, other],
    )
    entries = _history(http, alert, {"X-API-Key": operator_key})
    sent = [e for e in entries if e["source"] == "notification"]
    assert [(e["kind"], e["level"], e["level_label"], e["level_label_en"]) for e in sent] == [
        ("firing", 2, "Siaga", "Siaga (standby)"),
        ("resolved", 2, "Siaga", "Siaga (standby)"),
        ("firing", 3, "Awas", "Awas (danger)"),
    ]


def test_operators_are_told_who_they_are(http: httpx.Client, budi: dict[str, str]) -> None:
    assert http.get("/operator/me", headers=budi).json() == {
        "name": "duty-1",
        "holder": "Budi Santoso (BPBD)",
        "display_name": "Budi Santoso (BPBD)",
    }


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("ack", {"note": "a\x00b"}, 422),
        ("ack", {"note": "x" * 2001}, 422),
        ("ack", {"note": "   "}, 422),
        ("ack", {"note": "ok", "by": "someone else"}, 422),
        ("assign", {"assignee": "Siti\nAminah"}, 422),
        ("assign", {"assignee": "x" * 101}, 422),
        ("assign", {}, 422),
        ("comments", {"text": ""}, 422),
        ("comments", {"text": 12}, 422),
    ],
)
def test_bad_input_is_a_problem_and_records_nothing(
    http: httpx.Client,
    add_alert: AddAlert,
    operator_key: str,
    path: str,
    body: dict[str, Any],
    status: int,
) -> None:
    alert = add_alert(levels=(1,))
    headers = {"X-API-Key": operator_key}
    response = http.post(f"/alerts/{alert}/{path}", json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert [e["source"] for e in _history(http, alert, headers)] == ["alert_service"]


def test_working_an_alert_needs_a_live_key_and_a_known_alert(
    http: httpx.Client, add_alert: AddAlert, operator_key: str
) -> None:
    alert = add_alert(levels=(1,))
    for method, path, body in [
        ("GET", f"/alerts/{alert}/history", None),
        ("POST", f"/alerts/{alert}/assign", {"assignee": "Siti"}),
        ("POST", f"/alerts/{alert}/comments", {"text": "x"}),
        ("GET", "/operator/me", None),
    ]:
        refused = http.request(method, path, json=body)
        assert refused.status_code == 401, path
        assert refused.headers["content-type"].startswith(PROBLEM)
    headers = {"X-API-Key": operator_key}
    missing = http.post("/alerts/424242/comments", json={"text": "x"}, headers=headers)
    assert missing.status_code == 404
    assert http.get("/alerts/424242/history", headers=headers).status_code == 404
