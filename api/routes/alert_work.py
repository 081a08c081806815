"""Operators working an alert (operator key): acknowledge with a note, assign it to a person,
comment on it, and read its whole history.

Every action is appended to the operators' trail (``pantau_private.alert_actions``): the API's
database role may add to it and read it, never change or remove a row, and a trigger refuses
that to anyone else short of the owner. The history of an alert puts together, in the order
Pantau recorded them, its changes from the alert service, what operators did with it, and the
warning-post commands its changes caused; each kind of entry is one branch of one query
(``HISTORY_SOURCES``): another source is one more branch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.deps import ConnDep
from api.errors import Problem
from api.keys import Operator
from api.routes.alerts import (
    Alert,
    AlertDetail,
    AlertId,
    detail,
    dict_rows,
    find_alert,
)
from api.security import AUTH_RESPONSES, OperatorDep
from pantau import levels
from pantau.db.events import lock_event_order
from pantau.keys import HOLDER_MAX_CHARS

router = APIRouter(tags=["alerts"], responses=AUTH_RESPONSES)

NOTE_MAX_CHARS = 2000
# Tabs and line breaks are text; other control characters (NUL above all: PostgreSQL refuses it
# in text) are not.
_NO_CONTROL = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
_NO_CONTROL_LINE = r"^[^\x00-\x1f\x7f]*$"
Note = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=NOTE_MAX_CHARS, pattern=_NO_CONTROL
    ),
]
Person = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=HOLDER_MAX_CHARS, pattern=_NO_CONTROL_LINE
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Acknowledgement(_Model):
    note: Note | None = Field(
        default=None,
        description="Why, or what is being done (kept in the alert's history).",
        examples=["BPBD dihubungi, tim menuju Pos Welang Bangil"],
    )


class Assignment(_Model):
    assignee: Person | None = Field(
        description="The person handling the alert from now on; null to release it.",
        examples=["Budi Santoso"],
    )
    note: Note | None = Field(default=None, description="Kept in the alert's history.")


class Comment(_Model):
    text: Note = Field(description="The comment.", examples=["Air mulai surut di hilir"])


HistorySource = Literal["alert_service", "operator", "warning_post", "notification"]


class HistoryEntry(_Model):
    id: str = Field(description="Unique within the history: the source and its row.")
    at: datetime = Field(
        description="When Pantau recorded it: the order of the history (an operator's action "
        "when it was made; an alert change when the alert service committed it)."
    )
    source: HistorySource = Field(
        description="`alert_service`: a change of the alert; `operator`: what an operator "
        "did; `warning_post`: a command sent to the warning posts of the gauge; "
        "`notification`: a level (`firing`) or its end (`resolved`) handed to Alertmanager, "
        "which tells people as its routes say."
    )
    kind: str = Field(
        description="alert_service: opened, escalated, de-escalated, resolved; operator: "
        "acknowledged, assigned, unassigned, commented; warning_post: command; "
        "notification: firing, resolved.",
        examples=["escalated"],
    )
    observed_at: datetime | None = Field(description="Alert changes: time of the reading.")
    level: int | None
    level_label: str | None = Field(description="The level's name in Indonesian.")
    level_label_en: str | None = Field(description="The level's name in English.")
    value: float | None = Field(description="Alert changes: the reading's value.")
    actor: str | None = Field(description="Operator actions: who (the key's holder).")
    assignee: str | None = Field(description="Assignments: to whom.")
    note: str | None = Field(description="Operator actions: the note or comment.")
    message: str | None = Field(description="Alert changes: in Indonesian.")
    message_en: str | None = Field(description="Alert changes: in English.")
    command: dict[str, Any] | None = Field(
        description="Warning-post commands: as published on ROOT/warning/GAUGE."
    )


class AlertHistory(_Model):
    alert: Alert
    entries: list[HistoryEntry] = Field(description="Oldest first.")


class Me(_Model):
    name: str = Field(description="The key's name.")
    holder: str | None = Field(description="The person the key was given to.")
    display_name: str = Field(description="What the alert trail records: holder, else name.")


# One branch per source, each with the columns of HistoryEntry (less the level's label).
HISTORY_SOURCES = (
    # The alert service's changes (acknowledgements come from the operators' trail).
    """
    SELECT 'e' || id AS id, recorded_at AS at, 'alert_service' AS source, change AS kind,
           observed_at, level, value, NULL::text AS actor, NULL::text AS assignee,
           NULL::text AS note, message, message_en, NULL::jsonb AS command, rule
    FROM alert_events WHERE alert_id = %(id)s AND change <> 'acknowledged'
    """,
    """
    SELECT 'a' || a.id, a.at, 'operator', a.action, NULL, NULL, NULL, a.operator, a.assignee,
           a.note, NULL, NULL, NULL, NULL
    FROM pantau_private.alert_actions a WHERE a.alert_id = %(id)s
    """,
    """
    SELECT 'w' || w.id, w.recorded_at, 'warning_post', 'command', NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, w.command, NULL
    FROM warning_commands w WHERE w.alert_ids @> ARRAY[%(id)s::bigint]
    """,
    """
    SELECT 'n' || n.id, n.sent_at, 'notification', n.status, NULL, n.level, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, a.rule
    FROM alert_notifications n JOIN alerts a ON a.id = n.alert_id WHERE n.alert_id = %(id)s
    """,
)
_HISTORY = (
    "SELECT * FROM ("
    + " UNION ALL ".join(HISTORY_SOURCES)
    + ") h ORDER BY at, id"  # ids: same-time entries in a fixed order
)


def _locked(conn: psycopg.Connection, alert_id: int) -> dict[str, Any]:
    """The alert, locked until the transaction ends, or a 404 problem."""
    rows = dict_rows(
        conn,
        "SELECT id, acknowledged_at, assigned_to FROM alerts WHERE id = %s FOR UPDATE",
        [alert_id],
    )
    if not rows:
        raise Problem(404, f"no alert {alert_id}", kind="unknown-alert")
    return rows[0]


def _record(
    conn: psycopg.Connection,
    alert_id: int,
    operator: Operator,
    action: str,
    *,
    note: str | None = None,
    assignee: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO pantau_private.alert_actions (alert_id, action, operator, key_name, "
        "assignee, note) VALUES (%s, %s, %s, %s, %s, %s)",
        [alert_id, action, operator.display_name, operator.name, assignee, note],
    )


_ACK = """
WITH acked AS (
    UPDATE alerts SET acknowledged_at = now(), acknowledged_by = %(by)s
    WHERE id = %(id)s AND acknowledged_at IS NULL
    RETURNING id, sensor_id, rule, level, value
)
INSERT INTO alert_events (alert_id, sensor_id, rule, change, level, value, observed_at,
                          message, message_en, details)
SELECT id, sensor_id, rule, 'acknowledged', level, value, now(),
       'Diketahui oleh operator ' || %(by)s, 'Acknowledged by operator ' || %(by)s,
       jsonb_build_object('by', %(by)s)
FROM acked
"""


@router.post(
    "/alerts/{alert_id}/ack",
    summary="Acknowledge an alert, with a note (operator key)",
    response_model=AlertDetail,
)
def acknowledge(
    conn: ConnDep,
    alert_id: AlertId,
    operator: OperatorDep,
    body: Annotated[Acknowledgement | None, Body()] = None,
) -> AlertDetail:
    """Mark the alert as seen by the operator (the key's holder), with an optional note.

    Repeating it changes nothing (idempotent); a note sent with a repeat is kept as a comment.
    """
    note = body.note if body else None
    with conn.transaction():
        # Before the alert's row, as the alert service does: its change is read in id order
        # (pantau.db.events), and one order of locks for both writers cannot deadlock.
        lock_event_order(conn)
        alert = _locked(conn, alert_id)
        if alert["acknowledged_at"] is None:
            conn.execute(_ACK, {"id": alert_id, "by": operator.display_name})
            _record(conn, alert_id, operator, "acknowledged", note=note)
        elif note is not None:
            _record(conn, alert_id, operator, "commented", note=note)
        return detail(conn, alert_id)


@router.post(
    "/alerts/{alert_id}/assign",
    summary="Assign an alert to a person, or release it (operator key)",
    response_model=AlertHistory,
)
def assign(
    conn: ConnDep, alert_id: AlertId, operator: OperatorDep, body: Assignment
) -> AlertHistory:
    """Who handles the alert from now on (null: nobody); the alert's history keeps each change.
    Assigning it to whom it is assigned already records only the note, if any."""
    with conn.transaction():
        alert = _locked(conn, alert_id)
        if body.assignee != alert["assigned_to"]:
            conn.execute(
                "UPDATE alerts SET assigned_to = %s, assigned_at = now() WHERE id = %s",
                [body.assignee, alert_id],
            )
            action = "assigned" if body.assignee is not None else "unassigned"
            _record(conn, alert_id, operator, action, note=body.note, assignee=body.assignee)
        elif body.note is not None:
            _record(conn, alert_id, operator, "commented", note=body.note)
        return history_of(conn, alert_id)


@router.post(
    "/alerts/{alert_id}/comments",
    summary="Comment on an alert (operator key)",
    response_model=AlertHistory,
    status_code=201,
)
def comment(conn: ConnDep, alert_id: AlertId, operator: OperatorDep, body: Comment) -> AlertHistory:
    """Add a comment to the alert's history."""
    with conn.transaction():
        _locked(conn, alert_id)
        _record(conn, alert_id, operator, "commented", note=body.text)
        return history_of(conn, alert_id)


def history_of(conn: psycopg.Connection, alert_id: int) -> AlertHistory:
    """The alert and every entry of its history, oldest first (a 404 problem if unknown)."""
    found = find_alert(conn, alert_id)
    rows = dict_rows(conn, _HISTORY, {"id": alert_id})
    entries = []
    for row in rows:
        rule = row.pop("rule")
        level = row["level"]
        entries.append(
            HistoryEntry(
                **row,
                level_label=None if level is None else levels.level_label(rule, level, "id"),
                level_label_en=None if level is None else levels.level_label(rule, level, "en"),
            )
        )
    return AlertHistory(alert=found, entries=entries)


@router.get(
    "/alerts/{alert_id}/history",
    summary="An alert's whole history: changes, operators' actions, warning-post commands",
    response_model=AlertHistory,
)
def history(conn: ConnDep, alert_id: AlertId, operator: OperatorDep) -> AlertHistory:
    """Everything that happened to the alert, in the order Pantau recorded it (operator key:
    notes are the control room's own)."""
    return history_of(conn, alert_id)


@router.get("/operator/me", summary="Who this key belongs to", response_model=Me)
def me(operator: OperatorDep) -> Me:
    """The key's name and holder, as the alert trail records them."""
    return Me(name=operator.name, holder=operator.holder, display_name=operator.display_name)
