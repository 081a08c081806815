"""Operator API keys as the API checks them (their form: :mod:`pantau.keys`)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import tuple_row

from pantau.keys import digest


@dataclass(frozen=True, slots=True)
class Operator:
    """Who a valid key belongs to."""

    key_id: int
    name: str
    holder: str | None = None

    @property
    def display_name(self) -> str:
        """Who acted, as acknowledgements and the alert trail record it: the key's holder, else
        the key's name."""
        return self.holder or self.name


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """The outcome of checking a presented key."""

    operator: Operator | None
    revoked: bool = False


def check_key(conn: psycopg.Connection, key: str) -> KeyCheck:
    """Who ``key`` belongs to; records when it was last used (at most once a minute)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT id, name, holder, revoked_at IS NOT NULL FROM pantau_private.api_keys "
            "WHERE key_hash = %s",
            [digest(key)],
        ).fetchone()
    if row is None:
        return KeyCheck(operator=None)
    key_id, name, holder, revoked = row
    if revoked:
        return KeyCheck(operator=None, revoked=True)
    conn.execute(
        "UPDATE pantau_private.api_keys SET last_used_at = now() WHERE id = %s "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        [key_id],
    )
    return KeyCheck(operator=Operator(key_id=key_id, name=name, holder=holder))
