"""The answer cache: one load per key at a time, errors never kept, bounded in bytes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api import cache as answer_cache
from api.cache import TtlCache
from api.responses import Answer, Body


def test_concurrent_requests_for_one_key_share_one_load() -> None:
    cache = TtlCache(60)
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)  # the others arrive while this load is under way
        return f"answer {calls}"

    async def main() -> list[Any]:
        return await asyncio.gather(*(cache.aload("k", load) for _ in range(20)))

    assert asyncio.run(main()) == ["answer 1"] * 20
    assert calls == 1


def test_without_a_period_every_request_loads() -> None:
    cache = TtlCache(0)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        return calls

    async def main() -> list[int]:
        return [await cache.aload("k", load) for _ in range(3)]

    assert asyncio.run(main()) == [1, 2, 3]


def test_a_failed_load_reaches_every_waiter_and_is_not_kept() -> None:
    cache = TtlCache(60)
    attempts = 0

    async def load() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise LookupError("no such sensor")
        return "found"

    async def main() -> tuple[list[Any], str]:
        first = await asyncio.gather(
            *(cache.aload("k", load) for _ in range(3)), return_exceptions=True
        )
        return first, await cache.aload("k", load)

    failed, later = asyncio.run(main())
    assert [type(e) for e in failed] == [LookupError] * 3
    assert later == "found"
    assert attempts == 2


def test_a_client_going_away_does_not_cancel_the_others_answer() -> None:
    cache = TtlCache(60)

    async def main() -> str:
        gate = asyncio.Event()

        async def load() -> str:
            await gate.wait()
            return "answer"

        leaving = asyncio.create_task(cache.aload("k", load))
        staying = asyncio.create_task(cache.aload("k", load))
        await asyncio.sleep(0)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        gate.set()
        return await staying

    assert asyncio.run(main()) == "answer"
    assert cache.peek("k") == "answer"


def test_answers_are_bounded_in_bytes() -> None:
    cache = TtlCache(60, max_bytes=10_000)
    small = Body.of({"v": "x" * 100})
    big = Body.of({"v": "y" * 9_950})
    cache.get("small", lambda: small)
    assert cache.peek("small") is small
    answer = Answer(big, max_age_s=2)
    cache.get("big", lambda: answer)
    # Both would exceed the bound: what was kept before makes room.
    assert cache.peek("small") is None
    assert cache.peek("big") is answer


def test_reloading_a_key_does_not_count_its_bytes_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(answer_cache.time, "monotonic", lambda: now[0])
    page = Body.of({"v": "z" * 3_000})
    cache = TtlCache(100, max_bytes=3 * len(page.content))
    for i in range(10):
        now[0] += 101  # the page has expired: this request loads it again
        note = Body.of({"note": i})
        cache.get(f"note {i}", lambda note=note: note)
        cache.get("page", lambda: page)
        # Counted twice, the page would soon seem to overflow the bound and empty the cache.
        assert cache.peek(f"note {i}") is note


def test_a_value_may_have_a_period_of_its_own() -> None:
    cache = TtlCache(60)

    async def load() -> str:
        return "answer"

    async def main() -> None:
        await cache.aload("never", load, ttl_s=0)
        await cache.aload("kept", load, ttl_s=5)

    asyncio.run(main())
    assert cache.peek("never") is None
    assert cache.peek("kept") == "answer"
