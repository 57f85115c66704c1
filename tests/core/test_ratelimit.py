"""Per-target token buckets: deadlines, fairness, cancellation, per-vendor limits, 429s.

Most tests run on a fake clock (``FakeTime``): the limiter's timer is its only sleeper, so
time jumps from one wake-up to the next and a minute of waiting takes milliseconds. One
test runs the same scenario on the real clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time

import pytest

from connector.pipeline.ratelimit import (
    COOL_DOWN_S,
    FLOOR_PER_S,
    UNLIMITED_AFTER_429_PER_S,
    RateLimiter,
    TokenBucket,
    vendor_limits,
)
from connector.settings import Settings
from connector.vendors.base import VendorRequest


def kombo(integration: str = "a") -> VendorRequest:
    return VendorRequest(
        "kombo", "kombo.order_result", "PUT", "/x", {}, limit_key=f"kombo|{integration}"
    )


COMEET = VendorRequest("comeet", "comeet.status", "POST", "/x", {}, limit_key="comeet")


class FakeTime:
    """A clock and a sleep that only move when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps = 0  # how often anything slept: the limiter's wake-ups
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps += 1
        waker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + delay, next(self._order), waker))
        await waker

    @staticmethod
    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    def wake_next(self, until: float) -> bool:
        """Move to the next sleeper due by ``until`` and wake it; False if there is none."""
        while self._sleepers:
            when, _, waker = self._sleepers[0]
            if waker.done():  # a cancelled sleep
                heapq.heappop(self._sleepers)
                continue
            if when > until:
                return False
            heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            waker.set_result(None)
            return True
        return False

    async def advance(self, seconds: float) -> None:
        end = self.now + seconds
        await self.settle()
        while self.wake_next(end):
            await self.settle()
        self.now = end
        await self.settle()


def limiter_on(fake: FakeTime, limits: dict[str, tuple[float, int]]) -> RateLimiter:
    return RateLimiter(limits, clock=fake.clock, sleep=fake.sleep)


class Waiters:
    """Callers of acquire(), recording when each returned and what."""

    def __init__(self, fake: FakeTime | None = None) -> None:
        self.clock = fake.clock if fake else time.monotonic
        self.tasks: list[asyncio.Task[bool]] = []
        self.deadlines: list[float | None] = []
        self.returned: dict[int, tuple[float, bool]] = {}
        self.grant_order: list[int] = []

    def start(
        self, limiter: RateLimiter, request: VendorRequest, deadline: float | None = None
    ) -> int:
        index = len(self.tasks)

        async def wait() -> bool:
            ok = await limiter.acquire(request, deadline=deadline)
            self.returned[index] = (self.clock(), ok)
            if ok:
                self.grant_order.append(index)
            return ok

        self.tasks.append(asyncio.create_task(wait()))
        self.deadlines.append(deadline)
        return index

    def granted(self) -> list[int]:
        return [i for i, (_, ok) in self.returned.items() if ok]

    def refused(self) -> list[int]:
        return [i for i, (_, ok) in self.returned.items() if not ok]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# -- the bucket ------------------------------------------------------------------------------
def test_bucket_allows_burst_then_paces() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.try_take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.ready_at(0.0) == pytest.approx(0.1)
    assert not bucket.try_take(0.05)
    assert bucket.try_take(0.1)
    assert bucket.ready_at(0.1) == pytest.approx(0.2)


def test_unlimited_bucket_never_waits() -> None:
    bucket = TokenBucket(rate=0, burst=1, now=0.0)
    assert all(bucket.try_take(0.0) for _ in range(1000))


def test_429_halves_the_rate_then_recovers() -> None:
    bucket = TokenBucket(rate=40, burst=5, now=0.0)
    bucket.throttle(0.0)
    assert bucket.rate == 20
    bucket.throttle(0.0)
    assert bucket.rate == 10
    for _ in range(10):
        bucket.throttle(0.0)
    assert bucket.rate == FLOOR_PER_S
    assert bucket.ready_at(0.0) == pytest.approx(1.0)  # saved-up tokens were dropped
    bucket.refill(COOL_DOWN_S + 1)
    assert bucket.rate == 40


def test_429_throttles_an_unlimited_target_until_cool_down() -> None:
    bucket = TokenBucket(rate=0, burst=5, now=0.0)
    bucket.throttle(0.0)
    assert bucket.rate == UNLIMITED_AFTER_429_PER_S
    assert not bucket.try_take(0.0)
    assert bucket.try_take(COOL_DOWN_S)
    assert all(bucket.try_take(COOL_DOWN_S) for _ in range(100))


def test_cool_down_end_is_due_before_a_slow_token() -> None:
    bucket = TokenBucket(rate=0, burst=5, now=0.0)
    for _ in range(10):
        bucket.throttle(0.0)  # 1/s
    while bucket.try_take(COOL_DOWN_S - 0.5):  # spend what the cool-down earned
        pass
    assert bucket.ready_at(COOL_DOWN_S - 0.5) == pytest.approx(COOL_DOWN_S)


# -- deadlines -------------------------------------------------------------------------------
async def test_waiters_never_pass_their_deadline() -> None:
    # Issue 11 item 5: tokens reserved at call time put parked retries far past their
    # deadline. 10,000 callers on a 10/s bucket (burst 20), deadline in 2 s.
    fake = FakeTime()
    limiter = limiter_on(fake, {"kombo": (10, 20)})
    waiters = Waiters(fake)
    deadline = fake.now + 2.0
    for _ in range(10_000):
        waiters.start(limiter, kombo(), deadline)
    await fake.advance(5.0)

    assert len(waiters.returned) == 10_000
    assert all(when <= deadline for when, _ in waiters.returned.values())
    assert all(waiters.returned[i][0] == deadline for i in waiters.refused())
    granted = waiters.granted()
    assert len(granted) == 20 + 10 * 2  # burst + rate x 2 s, and not one more
    assert granted == list(range(len(granted)))  # the first to come, in order
    assert limiter.waiting(kombo()) == 0
    # One wake-up per token (plus the deadline), not one per waiter.
    assert fake.sleeps <= 20 + 3


async def test_mixed_deadlines_each_end_on_time() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {"comeet": (5, 1)})
    waiters = Waiters(fake)
    rng = random.Random(11)
    start = fake.now
    for _ in range(300):
        waiters.start(limiter, COMEET, start + rng.uniform(0.0, 20.0))
    await fake.advance(30.0)

    for index, (when, ok) in waiters.returned.items():
        deadline = waiters.deadlines[index]
        assert deadline is not None
        assert when <= deadline
        if not ok:
            assert when == deadline
    # Tokens went to waiters in arrival order among those still waiting, at 5/s at most.
    assert waiters.grant_order == sorted(waiters.grant_order)
    times = sorted(waiters.returned[i][0] for i in waiters.granted())
    assert all(when >= start + (n - 1) / 5 - 1e-6 for n, when in enumerate(times))


async def test_a_short_deadline_wakes_a_timer_set_for_later() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {"kombo": (0.1, 1)})  # a token every 10 s
    assert await limiter.acquire(kombo())
    waiters = Waiters(fake)
    waiters.start(limiter, kombo())  # the timer now sleeps 10 s
    await fake.advance(1.0)
    late = waiters.start(limiter, kombo(), deadline=fake.now + 1.0)
    await fake.advance(1.5)
    assert waiters.returned[late] == (fake.now - 0.5, False)
    await fake.advance(10.0)
    assert waiters.returned[0][1] is True


async def test_deadline_already_passed_takes_no_token() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {"kombo": (1, 1)})
    assert await limiter.acquire(kombo(), deadline=fake.now)  # a token there: taken
    assert not await limiter.acquire(kombo(), deadline=fake.now)
    assert not await limiter.acquire(kombo(), deadline=fake.now - 5)
    await fake.advance(1.0)
    assert await limiter.acquire(kombo(), deadline=fake.now)  # the refusals took none


async def test_waiters_keep_to_their_deadline_in_real_time() -> None:
    limiter = RateLimiter({"kombo": (10, 20)})
    waiters = Waiters()
    deadline = time.monotonic() + 2.0
    for _ in range(1000):
        waiters.start(limiter, kombo(), deadline)
    await asyncio.wait_for(asyncio.gather(*waiters.tasks), timeout=10)

    granted, refused = waiters.granted(), waiters.refused()
    assert all(waiters.returned[i][0] <= deadline + 0.05 for i in granted)
    assert all(deadline - 0.01 <= waiters.returned[i][0] <= deadline + 0.2 for i in refused)
    assert 20 + 10 * 2 - 2 <= len(granted) <= 20 + 10 * 2 + 1
    assert granted == list(range(len(granted)))


# -- a 429 and its cool-down apply to callers already waiting -----------------------------------
async def test_a_429_slows_callers_already_waiting() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {"kombo": (10, 1)})
    waiters = Waiters(fake)
    for _ in range(500):
        waiters.start(limiter, kombo())
    await fake.advance(1.05)
    assert len(waiters.granted()) == 1 + 10

    limiter.on_rate_limited(kombo())  # 10/s -> 5/s for the cool-down
    await fake.advance(1.1)
    assert len(waiters.granted()) == 11 + 5

    await fake.advance(COOL_DOWN_S - 1.05)  # cool-down over: 10/s again
    at_recovery = len(waiters.granted())
    await fake.advance(1.0)
    assert len(waiters.granted()) - at_recovery == 10
    assert waiters.grant_order == sorted(waiters.grant_order)
    await waiters.close()
    assert limiter.waiting(kombo()) == 0


async def test_cool_down_end_releases_waiters_of_an_unlimited_target() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {})  # no limits configured
    assert await limiter.acquire(COMEET)
    limiter.on_rate_limited(COMEET)  # held to 50/s until the cool-down ends
    waiters = Waiters(fake)
    for _ in range(3000):
        waiters.start(limiter, COMEET)
    await fake.advance(COOL_DOWN_S - 1)
    assert len(waiters.granted()) == pytest.approx(UNLIMITED_AFTER_429_PER_S * 29, abs=1)
    await fake.advance(1.0)
    assert len(waiters.granted()) == 3000
    assert all(when <= fake.now for when, _ in waiters.returned.values())


# -- fairness and cancellation -------------------------------------------------------------------
async def test_waiters_are_served_first_come_first_served() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {"kombo": (10, 1)})
    waiters = Waiters(fake)
    for _ in range(30):
        waiters.start(limiter, kombo())
    await fake.advance(1.05)
    assert waiters.grant_order == list(range(11))
    for _ in range(5):  # late-comers queue behind, even when a token is saved up by now
        waiters.start(limiter, kombo())
    await fake.advance(10.0)
    assert waiters.grant_order == list(range(35))


async def test_cancelled_waiter_leaks_no_token_and_keeps_the_queue() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {"kombo": (1, 1)})
    assert await limiter.acquire(kombo())
    waiters = Waiters(fake)
    first, second, third = (waiters.start(limiter, kombo()) for _ in range(3))
    await fake.settle()
    waiters.tasks[second].cancel()
    await fake.advance(1.0)
    assert waiters.grant_order == [first]
    await fake.advance(1.0)
    assert waiters.grant_order == [first, third]  # the cancelled one took no token
    assert limiter.waiting(kombo()) == 0
    await fake.advance(1.0)
    assert await limiter.acquire(kombo(), deadline=fake.now)  # the bucket is whole


async def test_waiter_cancelled_after_its_grant_gives_the_token_back() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {"kombo": (1, 1)})
    assert await limiter.acquire(kombo())
    waiters = Waiters(fake)
    granted_then_cancelled = waiters.start(limiter, kombo())
    next_in_line = waiters.start(limiter, kombo())
    await fake.settle()
    assert fake.wake_next(fake.now + 1.0)
    await asyncio.sleep(0)  # the timer runs and hands the token over ...
    assert limiter.waiting(kombo()) == 1
    assert not waiters.tasks[granted_then_cancelled].done()
    waiters.tasks[granted_then_cancelled].cancel()  # ... before the caller resumes
    await fake.settle()
    assert waiters.tasks[granted_then_cancelled].cancelled()
    assert waiters.grant_order == [next_in_line]  # got the token back at once
    assert waiters.returned[next_in_line][0] == fake.now


async def test_cancelling_every_waiter_stops_the_timer() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {"kombo": (1, 1)})
    assert await limiter.acquire(kombo())
    waiters = Waiters(fake)
    for _ in range(100):
        waiters.start(limiter, kombo(), deadline=fake.now + 50)
    await fake.settle()
    await waiters.close()
    assert limiter.waiting(kombo()) == 0
    sleeps = fake.sleeps
    await fake.advance(60.0)
    assert fake.sleeps - sleeps <= 1  # one last look, then the timer ends
    assert await limiter.acquire(kombo(), deadline=fake.now)


# -- per target, set per vendor ------------------------------------------------------------------
async def test_each_target_has_its_own_bucket_with_its_vendors_limit() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {"kombo": (5, 1), "comeet": (2, 3)})
    assert await limiter.acquire(kombo("a"), deadline=fake.now)
    assert await limiter.acquire(kombo("b"), deadline=fake.now)  # another integration
    assert not await limiter.acquire(kombo("a"), deadline=fake.now)
    assert limiter.bucket(kombo("b")).rate == 5
    assert (limiter.bucket(COMEET).rate, limiter.bucket(COMEET).burst) == (2, 3)
    limiter.on_rate_limited(COMEET)
    assert limiter.bucket(COMEET).rate == FLOOR_PER_S
    assert limiter.bucket(kombo("a")).rate == 5


def test_vendor_limits_fall_back_to_the_delivery_pair() -> None:
    settings = Settings(
        kombo={"rate_limit_per_s": 5, "rate_limit_burst": 2},
        comeet={"rate_limit_burst": 9},  # no rate of its own: the delivery pair applies
        delivery={"rate_limit_per_s": 1.5, "rate_limit_burst": 3},
    )
    assert vendor_limits(settings) == {"kombo": (5, 2), "comeet": (1.5, 3)}
    limiter = RateLimiter.from_settings(settings)
    assert limiter.bucket(COMEET).rate == 1.5
    assert limiter.bucket(kombo()).burst == 2


def test_vendor_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_KOMBO__RATE_LIMIT_PER_S", "4")
    monkeypatch.setenv("CONNECTOR_KOMBO__RATE_LIMIT_BURST", "8")
    monkeypatch.setenv("CONNECTOR_COMEET__RATE_LIMIT_PER_S", "0.5")
    assert vendor_limits(Settings()) == {"kombo": (4, 8), "comeet": (0.5, 20)}


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter({"kombo": (-1, 5)})
    with pytest.raises(ValueError):
        RateLimiter({"kombo": (5, 0)})


# -- this worker's share ----------------------------------------------------------------------
async def test_a_share_scales_rate_and_burst_of_new_and_existing_buckets() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {"kombo": (20, 8)})
    before = limiter.bucket(kombo("a"))
    limiter.set_share(0.25)
    assert (before.rate, before.burst, before.tokens) == (5, 2, 2)  # saved-up tokens capped
    after = limiter.bucket(kombo("b"))
    assert (after.rate, after.burst) == (5, 2)
    # A tiny share still leaves room for one whole token.
    limiter.set_share(0.01)
    assert (after.rate, after.burst) == (pytest.approx(0.2), 1)
    limiter.set_share(1.0)
    assert (after.rate, after.burst) == (20, 8)
    assert limiter.bucket(COMEET).rate == 0  # no configured limit: nothing to share


async def test_a_share_paces_the_callers_already_waiting() -> None:
    fake = FakeTime()
    limiter = limiter_on(fake, {"kombo": (10, 1)})
    limiter.set_share(0.5)  # 5/s
    waiters = Waiters(fake)
    for _ in range(21):
        waiters.start(limiter, kombo())
    await fake.advance(2.1)
    assert len(waiters.granted()) == 1 + 10  # the burst, then 5/s
    limiter.set_share(1.0)  # a timer asleep for the next 5/s token wakes for 10/s
    await fake.advance(0.9)
    assert len(waiters.granted()) == 20  # 9 more at 10/s, where 5/s gives 4 or 5
    await fake.advance(0.2)
    assert len(waiters.granted()) == 21
    await waiters.close()


def test_a_429_never_raises_a_small_share_to_the_floor() -> None:
    bucket = TokenBucket(rate=FLOOR_PER_S / 4, burst=1, now=0.0)
    bucket.throttle(0.0)
    assert bucket.rate == FLOOR_PER_S / 4


def test_a_new_share_during_a_cool_down_keeps_the_lower_rate() -> None:
    bucket = TokenBucket(rate=20, burst=4, now=0.0)
    bucket.throttle(0.0)  # 10/s
    bucket.reshape(15, 3, 1.0)
    assert bucket.rate == 10
    bucket.reshape(5, 1, 2.0)
    assert bucket.rate == 5
    bucket.refill(COOL_DOWN_S + 1)
    assert bucket.rate == 5  # the new share, not the old configured rate


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_a_share_is_a_fraction(fraction: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter({"kombo": (10, 1)}).set_share(fraction)
