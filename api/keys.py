"""Operator API keys as the API checks them (`pantau keys` makes, lists and revokes them).

A key is ``pantau_`` followed by 32 random bytes (URL-safe base64). Only its SHA-256 digest is
stored. A slow password hash (scrypt, argon2) protects guessable secrets against a stolen
table; 256 random bits are not guessable, so a fast digest is as safe here and lets each request
find its key with one index lookup instead of trying every stored hash. The key is printed once;
a lost key is revoked and replaced.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg
from psycopg.rows import tuple_row

KEY_PREFIX = "pantau_"
HOLDER_MAX_CHARS = 100


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


def digest(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


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
