"""Token buckets by key in a table of bounded size, at the same cost per call however many keys
come: the API's limit per client address, ingest's rejection notices per device.

A bucket left alone for ``burst / rate`` seconds is full again, as a key never seen starts: the
table (``cachetools.TTLCache``) forgets it then. When more than ``max_keys`` keys are active at
once, the one used least recently goes first (it starts full again if it comes back): an
attacker who rotates addresses costs a bounded table, never a scan of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache


class TokenBuckets:
    """``rate_per_s`` tokens a second for each key, ``burst`` at most at once."""

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("token buckets need a positive rate, burst and table size")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        # (tokens, when counted) by key.
        self._buckets: TTLCache[str, tuple[float, float]] = TTLCache(
            maxsize=max_keys, ttl=burst / rate_per_s, timer=clock
        )

    def __len__(self) -> int:
        """Keys held now (at most ``max_keys``)."""
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take a token from ``key``'s bucket: 0.0 if it had one, else the seconds until it
        has one (nothing is taken then)."""
        now = self._clock()
        tokens, counted = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - counted) * self.rate_per_s)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate_per_s
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0
