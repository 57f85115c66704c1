"""Token buckets per target (a Kombo integration, or Comeet), adapting down on 429.

A 429 halves the target's rate for a cool-down period; it then recovers step by
step to the configured rate. With no rate configured, only the adaptive part
acts: after a 429 the target is held to a modest rate until it cools down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from connector.vendors.base import VendorRequest

__all__ = ["RateLimiter", "TokenBucket"]

logger = logging.getLogger(__name__)

COOL_DOWN_S = 30.0
FLOOR_PER_S = 1.0
UNLIMITED_AFTER_429_PER_S = 50.0  # where an unlimited target starts after its first 429


@dataclass
class TokenBucket:
    rate: float  # tokens per second; 0 = unlimited
    burst: float
    tokens: float = 0.0
    updated: float = 0.0
    throttled_until: float = 0.0
    base_rate: float = 0.0

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.updated = time.monotonic()
        self.base_rate = self.rate

    def _effective_rate(self, now: float) -> float:
        if self.throttled_until and now >= self.throttled_until:
            # Cool-down over: recover towards the configured rate.
            self.rate = self.base_rate if self.base_rate else 0.0
            self.throttled_until = 0.0
        return self.rate

    def delay(self, now: float) -> float:
        """Seconds to wait before one request may go (and take its token)."""
        rate = self._effective_rate(now)
        if rate <= 0:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * rate)
        self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / rate

    def throttle(self, now: float) -> None:
        current = self._effective_rate(now) or UNLIMITED_AFTER_429_PER_S * 2
        self.rate = max(FLOOR_PER_S, current / 2)
        self.throttled_until = now + COOL_DOWN_S
        self.tokens = min(self.tokens, 0.0)


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate=self._rate, burst=self._burst)
        return bucket

    async def acquire(self, request: VendorRequest) -> None:
        wait = self.bucket(request.limit_key).delay(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)

    def on_rate_limited(self, request: VendorRequest) -> None:
        bucket = self.bucket(request.limit_key)
        bucket.throttle(time.monotonic())
        logger.info(
            "rate limited by %s: now %.1f requests/s for %.0f s",
            request.limit_key,
            bucket.rate,
            COOL_DOWN_S,
        )
