"""The API's answer cache: values kept for a while, bounded in entries and bytes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool


def _weight(value: Any) -> int:
    """Bytes of the serialised answer in ``value`` (a :class:`api.responses.Body` or
    :class:`api.responses.Answer`); other values are small."""
    nbytes: int = getattr(value, "nbytes", 0)
    return nbytes


class TtlCache:
    """Values kept for ``ttl_s`` seconds (0: never kept); one loader runs per key at a time.

    Bounded in entries and in the bytes of the answers it holds: pages of any size can be asked
    for, under any number of query strings.
    """

    def __init__(self, ttl_s: float, *, max_entries: int = 512, max_bytes: int = 64 << 20) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._bytes = 0
        self._values: dict[Any, tuple[float, Any]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()
        self._loading: dict[Any, asyncio.Task[Any]] = {}

    def peek(self, key: Any) -> Any:
        """The value if it is still fresh, else None (never loads: safe on the event loop)."""
        hit = self._values.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def _keep(self, key: Any, value: Any, ttl_s: float | None = None) -> None:
        weight = _weight(value)
        replaced = self._values.pop(key, None)
        if replaced is not None:
            self._bytes -= _weight(replaced[1])
        if len(self._values) >= self.max_entries or self._bytes + weight > self.max_bytes:
            self._values.clear()
            self._bytes = 0
            with self._guard:
                # Keys of any query string come and go: their locks must not pile up. A loader
                # still holding a dropped lock at worst runs beside a new one.
                self._locks.clear()
        period = self.ttl_s if ttl_s is None else ttl_s
        self._values[key] = (time.monotonic() + period, value)
        self._bytes += weight

    async def aget(self, key: Any, load: Callable[[], Any]) -> Any:
        """:meth:`get` for async routes: a fresh value at once, else loaded in a worker thread."""
        found = self.peek(key)
        if found is None:
            found = await run_in_threadpool(self.get, key, load)
        return found

    async def aload(
        self, key: Any, load: Callable[[], Awaitable[Any]], *, ttl_s: float | None = None
    ) -> Any:
        """A fresh value at once, else awaited from ``load`` on the event loop: requests for a
        key being loaded wait for that load instead of starting their own. ``ttl_s``: this
        value's period instead of the cache's."""
        found = self.peek(key)
        if found is not None:
            return found
        if (self.ttl_s if ttl_s is None else ttl_s) <= 0:
            return await load()
        task = self._loading.get(key)
        if task is None:

            async def fill() -> Any:
                value = await load()
                self._keep(key, value, ttl_s)
                return value

            task = asyncio.get_running_loop().create_task(fill())
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        # Shielded: a client that goes away does not cancel the others' answer.
        return await asyncio.shield(task)

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        if self.ttl_s <= 0:
            return load()
        hit = self._values.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        # Fifty clients asking for the same expired answer cause one query, not fifty.
        with lock:
            hit = self._values.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            value = load()
            self._keep(key, value)
            return value

    def clear(self) -> None:
        self._values.clear()
        self._bytes = 0
