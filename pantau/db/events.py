"""Alert changes become visible in the order of their ids, for every reader.

``alert_events.id`` comes from one identity sequence with two writers: the alert service and
operators' acknowledgements through the API. Without more, a transaction that took id 5 could
commit after one that took id 6, and a reader that saw 6 and asks for what follows it
(``/alerts/events?after_id=6``, the live stream) would never see 5.

So every writer takes :data:`EVENT_ORDER_LOCK` (a transaction advisory lock) first in its
transaction, before it touches ``alerts`` or ``alert_events``: ids are taken and committed one
writer at a time, and PostgreSQL releases the lock only once the commit is visible. Whatever
snapshot a reader takes, the ids it sees are every id up to the largest of them, less those of
rolled-back inserts, which never appear: reading on from the largest id seen skips nothing.
"""

from __future__ import annotations

from typing import Any

import psycopg

# Arbitrary but fixed ("events" in ASCII), distinct from the other advisory locks.
EVENT_ORDER_LOCK = 0x6576656E7473


def lock_event_order(conn: psycopg.Connection[Any]) -> None:
    """Take the writers' turn for ``alert_events`` until the transaction ends: call it inside
    the transaction, before its first change to ``alerts`` or ``alert_events``."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [EVENT_ORDER_LOCK])
