"""Per-target token buckets that adapt down on 429 and recover after a cool-down."""

from __future__ import annotations

import asyncio

import pytest

from connector.ratelimit import COOL_DOWN_S, FLOOR_PER_S, RateLimiter, TokenBucket
from connector.vendors.base import VendorRequest


def request(limit_key: str) -> VendorRequest:
    return VendorRequest("kombo", "kombo.order_result", "PUT", "/x", {}, limit_key=limit_key)


def test_bucket_allows_burst_then_paces() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    now = bucket.updated
    assert [bucket.delay(now) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.delay(now) == pytest.approx(0.1)
    assert bucket.delay(now) == pytest.approx(0.2)


def test_unlimited_bucket_never_waits() -> None:
    bucket = TokenBucket(rate=0, burst=1)
    assert all(bucket.delay(bucket.updated) == 0 for _ in range(1000))


def test_429_halves_the_rate_then_recovers() -> None:
    bucket = TokenBucket(rate=40, burst=5)
    now = bucket.updated
    bucket.throttle(now)
    assert bucket.rate == 20
    bucket.throttle(now)
    assert bucket.rate == 10
    for _ in range(10):
        bucket.throttle(now)
    assert bucket.rate == FLOOR_PER_S
    bucket.delay(now + COOL_DOWN_S + 1)
    assert bucket.rate == 40


def test_429_throttles_an_unlimited_target_until_cool_down() -> None:
    bucket = TokenBucket(rate=0, burst=5)
    now = bucket.updated
    bucket.throttle(now)
    assert bucket.rate > 0
    assert bucket.delay(now) > 0
    assert bucket.delay(now + COOL_DOWN_S + 1) == 0


async def test_limiter_keeps_targets_apart() -> None:
    limiter = RateLimiter(rate_per_s=5, burst=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await limiter.acquire(request("kombo|a"))
    await limiter.acquire(request("kombo|b"))  # another target: its own bucket
    assert loop.time() - started < 0.1
    await limiter.acquire(request("kombo|a"))  # second token of a: about 1/5 s
    assert loop.time() - started >= 0.15
    limiter.on_rate_limited(request("comeet"))
    assert limiter.bucket("comeet").rate > 0
    assert limiter.bucket("kombo|b").rate == 5
