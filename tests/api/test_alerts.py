"""Alert routes over real HTTP: listing, one alert, polling, acknowledgement, CAP and Atom."""

from __future__ import annotations

from datetime import timedelta

import capvalidator
import httpx
import psycopg
from lxml import etree

from api.cap import ATOM_NS, CAP_NS
from pantau.cli import keys
from tests.fixtures.operators import T0, AddAlert

NS = {"cap": CAP_NS, "atom": ATOM_NS}
PROBLEM = "application/problem+json"


def test_list_filters_and_pages(http: httpx.Client, add_alert: AddAlert) -> None:
    flood = add_alert(levels=(1, 2))
    resolved = add_alert(
        sensor="fg-welang-1", levels=(1,), resolve=True, start=T0 - timedelta(hours=1)
    )
    lamp = add_alert(sensor="sn-bangil-1", rule="lamp", levels=(2,))

    def ids(**params: object) -> list[int]:
        response = http.get("/alerts", params=params)
        assert response.status_code == 200, response.text
        return [a["id"] for a in response.json()["items"]]

    assert ids() == [lamp, resolved, flood]
    assert ids(state="open") == [lamp, flood]
    assert ids(state="resolved") == [resolved]
    assert ids(rule="lamp") == [lamp]
    assert ids(sensor="fg-welang-2") == [flood]
    assert ids(kecamatan="bangil") == [lamp]  # any case
    assert ids(level=2) == [lamp, flood]
    assert ids(since=(T0 + timedelta(minutes=5)).isoformat()) == [flood]

    first = http.get("/alerts", params={"limit": 2}).json()
    assert [a["id"] for a in first["items"]] == [lamp, resolved]
    rest = http.get(first["next"]).json()
    assert [a["id"] for a in rest["items"]] == [flood]
    assert rest["next"] is None

    item = http.get("/alerts", params={"sensor": "fg-welang-2"}).json()["items"][0]
    assert (item["level_label"], item["level_label_en"]) == ("Siaga", "Siaga (standby)")
    lamp_item = http.get("/alerts", params={"rule": "lamp"}).json()["items"][0]
    assert (lamp_item["level_label"], lamp_item["level_label_en"]) == (
        "Daya tidak wajar",
        "Abnormal power",
    )
    assert item["kecamatan"] == "Pohjentrek"
    assert item["family"] == "flood_gauge"


def test_bad_filters_are_problems(http: httpx.Client) -> None:
    for params, status in [
        ({"state": "closed"}, 422),
        ({"rule": "earthquake"}, 422),
        ({"level": 4}, 422),
        ({"sensor": "no-such-sensor"}, 404),
        ({"kecamatan": "Atlantis"}, 404),
        ({"since": "yesterday"}, 400),
        ({"before_id": 2**70}, 422),
        ({"sensor": "x' OR 1=1 --"}, 422),
    ]:
        response = http.get("/alerts", params=params)
        assert response.status_code == status, (params, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
    assert http.get("/alerts/99999").status_code == 404
    assert http.get(f"/alerts/{2**70}").status_code == 422


def test_one_alert_with_its_events_and_polling(http: httpx.Client, add_alert: AddAlert) -> None:
    alert = add_alert(levels=(1, 2, 3, 2), resolve=True)
    body = http.get(f"/alerts/{alert}").json()
    assert body["state"] == "resolved"
    assert [e["change"] for e in body["events"]] == [
        "opened",
        "escalated",
        "escalated",
        "de-escalated",
        "resolved",
    ]
    page = http.get("/alerts/events", params={"after_id": 0, "limit": 3}).json()
    assert [e["change"] for e in page["items"]] == ["opened", "escalated", "escalated"]
    later = http.get(page["next"]).json()
    assert [e["change"] for e in later["items"]] == ["de-escalated", "resolved"]
    empty = http.get("/alerts/events", params={"after_id": later["last_id"]}).json()
    assert empty == {"items": [], "last_id": later["last_id"], "next": None}


def test_acknowledge_needs_a_live_key_and_is_idempotent(
    http: httpx.Client, add_alert: AddAlert, operator_key: str, conn: psycopg.Connection
) -> None:
    alert = add_alert(levels=(2,))
    missing = http.post(f"/alerts/{alert}/ack")
    assert missing.status_code == 401
    assert missing.headers["content-type"].startswith(PROBLEM)
    wrong = http.post(f"/alerts/{alert}/ack", headers={"X-API-Key": "pantau_guess"})
    assert wrong.status_code == 401
    assert http.post("/alerts/424242/ack", headers={"X-API-Key": operator_key}).status_code == 404

    first = http.post(f"/alerts/{alert}/ack", headers={"X-API-Key": operator_key})
    assert first.status_code == 200, first.text
    acked = first.json()
    assert acked["acknowledged_by"] == "tester"
    assert acked["events"][-1]["change"] == "acknowledged"
    again = http.post(f"/alerts/{alert}/ack", headers={"X-API-Key": operator_key}).json()
    assert again["acknowledged_at"] == acked["acknowledged_at"]
    assert [e["change"] for e in again["events"]] == ["opened", "acknowledged"]

    assert keys.revoke_key(conn, "tester")
    revoked = http.post(f"/alerts/{alert}/ack", headers={"X-API-Key": operator_key})
    assert revoked.status_code == 403
    assert revoked.headers["content-type"].startswith(PROBLEM)


def _valid(document: bytes) -> bool:
    return bool(capvalidator.check_schema(document).passed)


def test_cap_message_of_each_change_validates(http: httpx.Client, add_alert: AddAlert) -> None:
    alert = add_alert(levels=(1, 2, 3), resolve=True)
    response = http.get(f"/alerts/{alert}/cap.xml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/cap+xml")
    assert _valid(response.content)
    root = etree.fromstring(response.content)
    assert root.findtext("cap:msgType", namespaces=NS) == "Cancel"
    assert root.findtext("cap:info/cap:responseType", namespaces=NS) == "AllClear"
    references = (root.findtext("cap:references", namespaces=NS) or "").split()
    assert len(references) == 3
    # Every referenced message can be fetched, and is valid too.
    events = [e["id"] for e in http.get(f"/alerts/{alert}").json()["events"]]
    for event in events:
        earlier = http.get(f"/alerts/{alert}/cap.xml", params={"event": event})
        assert earlier.status_code == 200
        assert _valid(earlier.content)
    first = etree.fromstring(http.get(f"/alerts/{alert}/cap.xml?event={events[0]}").content)
    assert first.findtext("cap:msgType", namespaces=NS) == "Alert"
    assert first.findtext("cap:identifier", namespaces=NS) in references[0]


def test_cap_only_for_flood_warnings(http: httpx.Client, add_alert: AddAlert) -> None:
    lamp = add_alert(sensor="sn-bangil-1", rule="lamp", levels=(1,))
    response = http.get(f"/alerts/{lamp}/cap.xml")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    assert http.get("/alerts/777/cap.xml").status_code == 404


def test_atom_feed_of_cap_warnings(http: httpx.Client, add_alert: AddAlert) -> None:
    flood = add_alert(levels=(1, 3))
    rising = add_alert(
        sensor="fg-welang-3",
        rule="rising_fast",
        levels=(2,),
        predicted=(3, T0 + timedelta(minutes=25)),
    )
    add_alert(sensor="sn-bangil-1", rule="lamp", levels=(1,))
    add_alert(sensor="fg-welang-1", levels=(1,), resolve=True)  # resolved long ago: not listed
    response = http.get("/alerts/cap.atom")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = etree.fromstring(response.content)
    entries = feed.findall("atom:entry", NS)
    ids = [e.findtext("atom:id", namespaces=NS) or "" for e in entries]
    assert sorted(int(i.rsplit("/", 1)[1]) for i in ids) == sorted([flood, rising])
    for entry in entries:
        alert = entry.find("atom:content/cap:alert", NS)
        assert alert is not None
        assert _valid(etree.tostring(alert))
        link = entry.find("atom:link[@rel='alternate']", NS)
        assert link is not None
        linked = http.get(link.get("href", ""))
        assert linked.status_code == 200
        assert etree.fromstring(linked.content).findtext(
            "cap:identifier", namespaces=NS
        ) == alert.findtext("cap:identifier", namespaces=NS)


def test_openapi_declares_the_media_types(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert "application/atom+xml" in paths["/alerts/cap.atom"]["get"]["responses"]["200"]["content"]
    assert (
        "application/cap+xml"
        in paths["/alerts/{alert_id}/cap.xml"]["get"]["responses"]["200"]["content"]
    )
    ack = paths["/alerts/{alert_id}/ack"]["post"]
    assert ack["security"] == [{"OperatorKey": []}]
    assert {"401", "403"} <= set(ack["responses"])
