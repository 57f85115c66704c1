"""Token buckets per target, set per vendor, adapting down on 429; waits end at a deadline.

A *target* is what a vendor limits: one Kombo integration (``kombo|<integration_id>``) or
Comeet (``comeet``), named by :attr:`VendorRequest.limit_key`. Rate and burst are set per
vendor (``CONNECTOR_KOMBO__RATE_LIMIT_PER_S`` / ``…_BURST``, ``CONNECTOR_COMEET__…``) and
apply to each of that vendor's targets. A vendor whose own rate is 0 uses the delivery-wide
pair (``CONNECTOR_DELIVERY__RATE_LIMIT_PER_S`` / ``…_BURST``); 0 there too means no limit.

**Limits are shared by partition.** The configured rate and burst are what the vendor
allows the whole deployment. Workers do not talk to each other; each takes a *share* of
every target's rate and burst, the fraction of the events topic's partitions it owns
(:mod:`connector.pipeline.rate_share` sets it at every rebalance through
:meth:`RateLimiter.set_share`;
parked events live on the co-partitioned parking topic, so the same share covers them).
The shares of all workers add up to 1, so together they send at most the configured rate
when a target's events spread evenly over the partitions, which keys of many orders do.
Worst case, one target's events all sit on the partitions of one worker: that worker
sends at its share (the target gets less than it could, never more), and no assignment
ever lets the workers together exceed the configured rate and burst. Trading that
under-use for no coordination at all (no shared store, no extra round trip per call, no
new failure mode) is the point: the vendor's limit is never the thing that breaks, and
a 429 still adapts the one worker that got it (below).

Waiting: :meth:`RateLimiter.acquire` queues the callers of one target in FIFO order. One
timer per target (a small task that exists only while callers wait) wakes when the next
token is due, when the earliest caller's deadline comes, or when a cool-down ends, and hands
tokens to the head of the queue: 10,000 waiters cost one wake-up per token, not one each.
Nothing is reserved ahead: each wake-up re-reads the bucket, so a 429 or the end of a
cool-down applies to callers already waiting. A caller never waits past its deadline; one
that gets no token by then gets ``False`` and has taken none. A caller cancelled after it
was handed a token gives the token back.

Adapting: a 429 halves the target's rate for :data:`COOL_DOWN_S` (never below
:data:`FLOOR_PER_S`, nor above the rate in effect) and drops the tokens saved up; when the
cool-down ends the worker's share of the configured rate applies again. A target without
a limit is held to :data:`UNLIMITED_AFTER_429_PER_S` after its first 429, halving on
further ones, until it cools down (a share applies only to configured limits).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from connector.pipeline.rate_share import RateShare
from connector.settings import Settings
from connector.vendors import registry
from connector.vendors.base import VendorRequest

__all__ = [
    "COOL_DOWN_S",
    "FLOOR_PER_S",
    "UNLIMITED_AFTER_429_PER_S",
    "RateLimiter",
    "TokenBucket",
    "vendor_limits",
]

logger = logging.getLogger(__name__)

COOL_DOWN_S = 30.0
FLOOR_PER_S = 1.0
UNLIMITED_AFTER_429_PER_S = 50.0  # where an unlimited target starts after its first 429
DEFAULT_BURST = 20  # the bucket size of a vendor without a configured limit (after a 429)

# A token is "there" from this fraction on: float sums of rate * elapsed fall short by ulps.
_EPSILON = 1e-9

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


@dataclass
class TokenBucket:
    """One target's bucket. No clock of its own: every method takes ``now``."""

    rate: float  # tokens per second in effect now; 0 = unlimited
    burst: float
    now: float = 0.0  # when the bucket starts (full)
    base_rate: float = field(init=False)  # the configured rate, restored after a cool-down
    tokens: float = field(init=False)
    updated: float = field(init=False)
    throttled_until: float = 0.0  # 0 = not cooling down

    def __post_init__(self) -> None:
        self.base_rate = self.rate
        self.tokens = self.burst
        self.updated = self.now

    def refill(self, now: float) -> None:
        """Bring the bucket to ``now``: tokens earned since, the end of a cool-down."""
        if self.throttled_until and now >= self.throttled_until:
            self._accrue(self.throttled_until)  # at the throttled rate up to the end
            self.rate = self.base_rate
            self.throttled_until = 0.0
        self._accrue(now)

    def _accrue(self, now: float) -> None:
        if now <= self.updated:
            return
        if self.rate <= 0:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def try_take(self, now: float) -> bool:
        """Take one token if there is one now."""
        self.refill(now)
        if self.rate <= 0:
            return True
        if self.tokens >= 1 - _EPSILON:
            self.tokens -= 1
            return True
        return False

    def ready_at(self, now: float) -> float:
        """When to look again for a token: the next one is due, or the rate changes."""
        self.refill(now)
        if self.rate <= 0 or self.tokens >= 1 - _EPSILON:
            return now
        due = now + (1 - self.tokens) / self.rate
        if self.throttled_until:
            due = min(due, self.throttled_until)
        return due

    def reshape(self, rate: float, burst: float, now: float) -> None:
        """A new configured rate and burst (a new share); a cool-down keeps its lower rate."""
        self.refill(now)
        self.base_rate = rate
        self.burst = burst
        self.rate = min(self.rate, rate) if self.throttled_until else rate
        self.tokens = min(self.tokens, burst)

    def give_back(self) -> None:
        """Return a token taken by a caller that did not use it."""
        if self.rate > 0:
            self.tokens = min(self.burst, self.tokens + 1)

    def throttle(self, now: float) -> None:
        """A 429: halve the rate for a cool-down and drop saved-up tokens."""
        self.refill(now)
        current = self.rate or UNLIMITED_AFTER_429_PER_S * 2
        # The floor never raises a rate: a small share may already be below it.
        self.rate = max(min(FLOOR_PER_S, current), current / 2)
        self.throttled_until = now + COOL_DOWN_S
        self.tokens = min(self.tokens, 0.0)


@dataclass(eq=False)
class _Target:
    """A bucket and the callers waiting for it, in arrival order."""

    bucket: TokenBucket
    queue: deque[asyncio.Future[bool]] = field(default_factory=deque)
    # (deadline, arrival, future) of callers with a deadline; done entries removed lazily.
    deadlines: list[tuple[float, int, asyncio.Future[bool]]] = field(default_factory=list)
    waiting: int = 0  # callers in the queue still waiting
    timer: asyncio.Task[None] | None = None
    wake_at: float = math.inf

    def serve(self, now: float) -> None:
        """Refuse callers whose deadline passed, then hand out tokens in FIFO order."""
        self._expire(now, inclusive=False)
        queue = self.queue
        while queue:
            waiter = queue[0]
            if waiter.done():  # cancelled, or refused at its deadline
                queue.popleft()
                continue
            if not self.bucket.try_take(now):
                break
            queue.popleft()
            waiter.set_result(True)
            self.waiting -= 1
        # Due now and no token now: none can come in time.
        self._expire(now, inclusive=True)
        self._compact()

    def _expire(self, now: float, *, inclusive: bool) -> None:
        deadlines = self.deadlines
        while deadlines:
            deadline, _, waiter = deadlines[0]
            if not waiter.done():
                if deadline > now or (deadline == now and not inclusive):
                    return
                waiter.set_result(False)
                self.waiting -= 1
            heapq.heappop(deadlines)

    def _compact(self) -> None:
        if self.waiting == 0:
            self.queue.clear()
            self.deadlines.clear()
            return
        # Done entries deep in the queue or the heap wait for their turn to be dropped;
        # keep them from piling up under a queue that never empties.
        slack = 2 * self.waiting + 64
        if len(self.queue) > slack:
            self.queue = deque(w for w in self.queue if not w.done())
        if len(self.deadlines) > slack:
            self.deadlines = [entry for entry in self.deadlines if not entry[2].done()]
            heapq.heapify(self.deadlines)

    def next_wake(self, now: float) -> float:
        wake = self.bucket.ready_at(now)
        if self.deadlines:
            wake = min(wake, self.deadlines[0][0])
        return wake

    def fail_all(self, exc: BaseException) -> None:
        for waiter in self.queue:
            if not waiter.done():
                waiter.set_exception(exc)
        self.waiting = 0
        self._compact()


def vendor_limits(settings: Settings) -> dict[str, tuple[float, int]]:
    """``{vendor: (rate, burst)}``: the vendor's own pair if its rate is above 0.

    A vendor whose own ``rate_limit_per_s`` is 0 gets the delivery-wide pair (rate and
    burst together); a rate of 0 there too means no limit.
    """
    limits: dict[str, tuple[float, int]] = {}
    delivery = settings.delivery
    for vendor in registry.entries():
        own = vendor.section(settings)  # None: a vendor without a settings section
        if own is not None and own.rate_limit_per_s > 0:
            limits[vendor.name] = (own.rate_limit_per_s, own.rate_limit_burst)
        else:
            limits[vendor.name] = (delivery.rate_limit_per_s, delivery.rate_limit_burst)
    return limits


class RateLimiter:
    """This worker's token buckets, one per target, with rate and burst set per vendor.

    ``limits`` maps a vendor (``VendorRequest.vendor``) to ``(rate_per_s, burst)``; a rate
    of 0, or a vendor not in it, means no limit until a 429. ``clock`` (monotonic seconds)
    and ``sleep`` are for tests; deadlines are instants of ``clock``.
    """

    def __init__(
        self,
        limits: Mapping[str, tuple[float, int]] | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._limits: dict[str, tuple[float, float]] = {}
        for vendor, (rate, burst) in (limits or {}).items():
            if rate < 0 or burst < 1:
                raise ValueError(f"{vendor}: rate must be >= 0 and burst >= 1, not {rate}, {burst}")
            self._limits[vendor] = (float(rate), float(burst))
        self._clock = clock
        self._sleep = sleep
        self._targets: dict[tuple[str, str], _Target] = {}
        self._arrivals = itertools.count()
        self._share = 1.0  # this worker's fraction of every configured limit

    @classmethod
    def from_settings(cls, settings: Settings, share: RateShare | None = None) -> RateLimiter:
        """The limiter for ``settings``; ``share``, if given, sets its share now and later."""
        limiter = cls(vendor_limits(settings))
        if share is not None:
            share.attach(limiter)
        return limiter

    # -- this worker's share -----------------------------------------------------------------
    @property
    def share(self) -> float:
        return self._share

    def set_share(self, fraction: float) -> None:
        """Apply ``fraction`` (0 < f <= 1) of every configured rate and burst from now on.

        Buckets already made take the new rate and burst at once (tokens above the new
        burst are dropped; a cool-down keeps its lower rate until it ends), and their
        waiting callers are served at the new rate.
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"a share is a fraction in (0, 1], not {fraction}")
        if fraction == self._share:
            return
        self._share = fraction
        now = self._clock()
        for (vendor, _), target in self._targets.items():
            if vendor not in self._limits or self._limits[vendor][0] <= 0:
                continue  # no configured limit: nothing to share
            rate, burst = self._limit(vendor)
            target.bucket.reshape(rate, burst, now)
            if target.timer is not None:
                self._start_timer(target)  # it may sleep for a token at the old rate

    def _limit(self, vendor: str) -> tuple[float, float]:
        """``vendor``'s (rate, burst) for this worker: its share of the configured pair."""
        rate, burst = self._limits.get(vendor, (0.0, float(DEFAULT_BURST)))
        if rate <= 0:
            return rate, burst
        # A bucket needs room for one whole token, whatever the share.
        return rate * self._share, max(1.0, burst * self._share)

    # -- targets -----------------------------------------------------------------------------
    def _target(self, request: VendorRequest) -> _Target:
        key = (request.vendor, request.limit_key or request.vendor)
        target = self._targets.get(key)
        if target is None:
            rate, burst = self._limit(request.vendor)
            bucket = TokenBucket(rate=rate, burst=burst, now=self._clock())
            target = self._targets[key] = _Target(bucket)
        return target

    def bucket(self, request: VendorRequest) -> TokenBucket:
        """The bucket of the request's target (for inspection)."""
        return self._target(request).bucket

    def waiting(self, request: VendorRequest) -> int:
        """How many callers wait for the request's target."""
        return self._target(request).waiting

    # -- the two calls delivery makes ----------------------------------------------------------
    async def acquire(self, request: VendorRequest, *, deadline: float | None = None) -> bool:
        """Wait for a token of the request's target and take it.

        ``deadline`` is an instant of the limiter's clock (``time.monotonic()`` by default);
        ``None`` waits as long as it takes. Returns ``True`` once a token was taken, ``False``
        (no later than the deadline, and without a token) if none could be had by then.
        """
        target = self._target(request)
        now = self._clock()
        if target.waiting == 0 and target.bucket.try_take(now):
            return True
        if deadline is not None and deadline <= now:
            return False
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        target.queue.append(waiter)
        target.waiting += 1
        if deadline is not None:
            heapq.heappush(target.deadlines, (deadline, next(self._arrivals), waiter))
        if target.timer is None:
            self._start_timer(target)
        elif deadline is not None and deadline < target.wake_at:
            self._start_timer(target)  # the timer sleeps past this caller's deadline
        try:
            return await waiter
        except asyncio.CancelledError:
            if not waiter.done():
                waiter.cancel()
            if waiter.cancelled():
                target.waiting -= 1
            elif not waiter.exception() and waiter.result():
                # Handed a token just before the cancellation: the next caller gets it.
                target.bucket.give_back()
                self._start_timer(target)
            raise

    def on_rate_limited(self, request: VendorRequest) -> None:
        """A 429 from the request's target: halve its rate for a cool-down."""
        target = self._target(request)
        bucket = target.bucket
        bucket.throttle(self._clock())
        # Waiters see the new rate when the timer wakes next: it finds no token and
        # sleeps again for the slower one. Nothing already handed out changes.
        logger.info(
            "rate limited by %s: now %.1f requests/s for %.0f s (%d waiting)",
            request.limit_key or request.vendor,
            bucket.rate,
            COOL_DOWN_S,
            target.waiting,
        )

    # -- the timer ------------------------------------------------------------------------
    def _start_timer(self, target: _Target) -> None:
        """Start the target's timer, replacing one that would wake too late."""
        if target.timer is not None:
            target.timer.cancel()
        target.wake_at = -math.inf  # it runs at once
        target.timer = asyncio.get_running_loop().create_task(self._run_timer(target))

    async def _run_timer(self, target: _Target) -> None:
        me = asyncio.current_task()
        try:
            while True:
                now = self._clock()
                target.serve(now)
                if target.waiting == 0:
                    return
                target.wake_at = target.next_wake(now)
                await self._sleep(max(0.0, target.wake_at - now))
        except Exception as exc:  # a bug here must not leave callers waiting forever
            logger.exception("rate limiter timer failed")
            target.fail_all(exc)
        finally:
            if target.timer is me:
                target.timer = None
                target.wake_at = math.inf
