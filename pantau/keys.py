"""Operator API keys: their form and how they are stored (`pantau keys` makes them, the API
checks them).

A key is ``pantau_`` followed by 32 random bytes (URL-safe base64). Only its SHA-256 digest is
stored. A slow password hash (scrypt, argon2) protects guessable secrets against a stolen
table; 256 random bits are not guessable, so a fast digest is as safe here and lets each request
find its key with one index lookup instead of trying every stored hash. The key is printed once;
a lost key is revoked and replaced.
"""

from __future__ import annotations

import hashlib

KEY_PREFIX = "pantau_"
HOLDER_MAX_CHARS = 100


def digest(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
