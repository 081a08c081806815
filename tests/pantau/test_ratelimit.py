"""Token buckets by key: the rate and burst, keys apart, forgetting, and the bound."""

from __future__ import annotations

import pytest

from pantau.ratelimit import TokenBuckets


def test_each_key_has_its_burst_then_the_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate_per_s=2 / 60, burst=2, max_keys=10, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("a") == pytest.approx(30.0)
    assert buckets.take("b") == 0.0
    now[0] = 29.9
    assert buckets.take("a") == pytest.approx(0.1)
    now[0] = 30.0
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0


def test_a_key_left_alone_is_forgotten_full_and_the_table_is_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate_per_s=1, burst=5, max_keys=3, clock=lambda: now[0])
    for key in "abc":
        buckets.take(key)
    assert len(buckets) == 3
    buckets.take("d")  # the least recently used goes
    assert len(buckets) == 3
    now[0] = 10.0  # past burst / rate: full again, as if never seen
    buckets.take("e")
    assert len(buckets) == 1
    assert [buckets.take("f") for _ in range(5)] == [0.0] * 5
    assert buckets.take("f") > 0


def test_nonsense_limits_are_refused() -> None:
    for rate, burst, keys in ((0, 1, 1), (1, 0, 1), (1, 1, 0)):
        with pytest.raises(ValueError, match="positive"):
            TokenBuckets(rate_per_s=rate, burst=burst, max_keys=keys)
