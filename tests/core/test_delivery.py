"""OrderedDispatcher and deliver(): per-key order, in-offset-order acks, retries."""

from __future__ import annotations

import asyncio
import random

import pytest

from connector.errors import PermanentDeliveryError, RateLimitedError, RetryableDeliveryError
from connector.pipeline.delivery import OrderedDispatcher, RetryPolicy, deliver
from connector.vendors.base import CallResult, VendorRequest

REQUEST = VendorRequest("comeet", "comeet.status", "POST", "/x", {})


async def test_per_key_order_and_offset_ordered_acks() -> None:
    dispatcher = OrderedDispatcher(max_pending=64)
    rng = random.Random(7)
    done: dict[str, list[int]] = {}
    acked: list[int] = []

    def job(key: str, offset: int):
        async def run() -> None:
            await asyncio.sleep(rng.random() / 200)
            done.setdefault(key, []).append(offset)

        return run

    expected: dict[str, list[int]] = {}
    for offset in range(300):
        key = f"k{rng.randrange(20)}"
        expected.setdefault(key, []).append(offset)
        await dispatcher.submit(0, offset, key, job(key, offset), lambda o=offset: acked.append(o))
    await dispatcher.join()
    assert done == expected  # each key in offset order
    assert acked == list(range(300))  # acks strictly in offset order


async def test_finished_job_waits_for_slow_predecessor_before_ack() -> None:
    dispatcher = OrderedDispatcher(max_pending=8)
    release = asyncio.Event()
    acked: list[int] = []

    async def slow() -> None:
        await release.wait()

    async def fast() -> None:
        return None

    await dispatcher.submit(0, 10, "a", slow, lambda: acked.append(10))
    await dispatcher.submit(0, 11, "b", fast, lambda: acked.append(11))
    await asyncio.sleep(0.05)
    assert acked == []  # 11 is done but 10 is in flight: no ack may pass it
    release.set()
    await dispatcher.join()
    assert acked == [10, 11]


async def test_overdue_names_the_oldest_unacknowledged_record_and_a_job_that_ended() -> None:
    dispatcher = OrderedDispatcher(max_pending=8)
    release = asyncio.Event()

    async def slow() -> None:
        await release.wait()

    async def broken() -> None:
        raise RuntimeError("a bug")

    await dispatcher.submit(0, 10, "a", slow, lambda: None)
    await dispatcher.submit(1, 20, "b", broken, lambda: None)
    await dispatcher.submit(1, 21, "c", slow, lambda: None)
    await asyncio.sleep(0.01)
    assert dispatcher.overdue(60.0) == []
    late = {o.partition: (o.offset, o.ended) for o in dispatcher.overdue(0.0)}
    assert late == {0: (10, False), 1: (20, True)}  # 20 raised: nothing acks past it
    release.set()
    await asyncio.sleep(0.01)
    assert [(o.partition, o.offset) for o in dispatcher.overdue(0.0)] == [(1, 20)]


async def test_slow_key_does_not_block_other_keys() -> None:
    dispatcher = OrderedDispatcher(max_pending=16)
    release = asyncio.Event()
    finished: list[str] = []

    async def stuck() -> None:
        await release.wait()
        finished.append("stuck")

    def quick(name: str):
        async def run() -> None:
            finished.append(name)

        return run

    await dispatcher.submit(0, 0, "bad", stuck, lambda: None)
    for i in range(5):
        await dispatcher.submit(0, i + 1, f"good{i}", quick(f"good{i}"), lambda: None)
    await asyncio.sleep(0.05)
    assert finished == [f"good{i}" for i in range(5)]
    release.set()
    await dispatcher.join()


async def test_backpressure_bounds_admitted_records() -> None:
    dispatcher = OrderedDispatcher(max_pending=3)
    release = asyncio.Event()

    async def wait() -> None:
        await release.wait()

    for offset in range(3):
        await dispatcher.submit(0, offset, f"k{offset}", wait, lambda: None)
    fourth = asyncio.create_task(dispatcher.submit(0, 3, "k3", wait, lambda: None))
    await asyncio.sleep(0.05)
    assert not fourth.done() and dispatcher.saturated
    release.set()
    await fourth
    await dispatcher.join()


class FlakyClient:
    vendor = "comeet"

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.calls = 0

    async def send(self, request: VendorRequest) -> CallResult:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return CallResult(204)


FAST = RetryPolicy(max_attempts=4, initial_s=0.001, max_s=0.01, deadline_s=5)


async def test_retryable_errors_are_retried_until_success() -> None:
    client = FlakyClient([RetryableDeliveryError("503", http_status=503)] * 2)
    outcome = await deliver(REQUEST, client, FAST)
    assert outcome.ok and outcome.attempts == 3 and client.calls == 3


async def test_permanent_error_is_not_retried() -> None:
    client = FlakyClient([PermanentDeliveryError("404", http_status=404)])
    outcome = await deliver(REQUEST, client, FAST)
    assert not outcome.ok and not outcome.exhausted and client.calls == 1


async def test_attempts_are_bounded() -> None:
    client = FlakyClient([RetryableDeliveryError("503")] * 10)
    outcome = await deliver(REQUEST, client, FAST)
    assert not outcome.ok and outcome.exhausted and client.calls == 4


def test_retry_after_is_a_floor_and_backoff_grows() -> None:
    policy = RetryPolicy(initial_s=0.5, max_s=30)
    assert policy.backoff(1, retry_after=7) >= 7
    assert 0.25 <= policy.backoff(1) <= 0.5
    assert 15 <= policy.backoff(10) <= 30


async def test_rate_limit_honours_retry_after() -> None:
    client = FlakyClient([RateLimitedError("429", http_status=429, retry_after=0.2)])
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await deliver(REQUEST, client, FAST)
    assert outcome.ok
    assert loop.time() - started >= 0.2


@pytest.mark.parametrize("deadline", [0.05])
async def test_total_time_is_bounded(deadline: float) -> None:
    policy = RetryPolicy(max_attempts=100, initial_s=0.02, max_s=0.02, deadline_s=deadline)
    client = FlakyClient([RetryableDeliveryError("503")] * 100)
    outcome = await deliver(REQUEST, client, policy)
    assert outcome.exhausted and client.calls < 10


async def test_backpressure_bounds_admitted_bytes() -> None:
    dispatcher = OrderedDispatcher(max_pending=100, max_pending_bytes=1000)
    release = asyncio.Event()

    async def wait() -> None:
        await release.wait()

    await dispatcher.submit(0, 0, "a", wait, lambda: None, size=600)
    second = asyncio.create_task(dispatcher.submit(0, 1, "b", wait, lambda: None, size=600))
    await asyncio.sleep(0.05)
    assert not second.done()
    assert dispatcher.pending_bytes == 600
    release.set()
    await second
    await dispatcher.join()
    assert dispatcher.pending_bytes == 0
    # A record larger than the whole budget still goes through, alone.
    await dispatcher.submit(0, 2, "c", wait, lambda: None, size=5000)
    await dispatcher.join()


async def test_has_room_says_whether_submit_would_wait() -> None:
    dispatcher = OrderedDispatcher(max_pending=2, max_pending_bytes=1000)
    release = asyncio.Event()

    async def wait() -> None:
        await release.wait()

    assert dispatcher.has_room(5000)  # nothing admitted: even an oversized record goes in
    await dispatcher.submit(0, 0, "a", wait, lambda: None, size=600)
    assert dispatcher.has_room(400) and not dispatcher.has_room(401)
    await dispatcher.submit(0, 1, "b", wait, lambda: None, size=100)
    assert not dispatcher.has_room(0)  # both slots taken
    release.set()
    await dispatcher.join()
    assert dispatcher.has_room(1000)
