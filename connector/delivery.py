"""Delivery: retries with backoff, and ordered parallelism inside a partition.

:class:`OrderedDispatcher` runs one job per input record. Jobs of different
orders run concurrently; jobs of one order (one key) run strictly one after
another, in offset order. Completion is *acknowledged* per partition strictly
in offset order: a finished job whose predecessor in the partition is still
running waits, unacknowledged, until it is done. This is what keeps the
committed offset from ever passing an event that is still in flight
(faust-streaming can commit past in-flight events when acks arrive out of
order).

Backpressure: at most ``max_pending`` records (and ``max_pending_bytes``) are
admitted at once; the stream's ``submit`` call waits for room, which stops the
consumer loop, which lets Faust's bounded buffers pause fetching. Memory stays
bounded.

No head-of-line blocking: the HTTP concurrency limit (``http_slots`` in
:func:`deliver`) is taken only around the actual call. An event sleeping before
a retry, or waiting behind an earlier event of its order, holds only its
admission (cheap, and ``max_pending`` is large), so while one integration is
down its events park and the other orders keep every HTTP slot. Only when
``max_pending`` records are parked does the whole worker wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from connector.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RateLimitedError,
    RetryableDeliveryError,
)
from connector.settings import DeliverySettings
from connector.vendors.base import CallResult, VendorClient, VendorRequest

__all__ = [
    "AttemptReport",
    "DeliveryOutcome",
    "OrderedDispatcher",
    "RetryPolicy",
    "deliver",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    initial_s: float = 0.5
    max_s: float = 30.0
    deadline_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            initial_s=settings.backoff_initial_s,
            max_s=settings.backoff_max_s,
            deadline_s=settings.retry_deadline_s,
        )

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Full-jitter exponential backoff; a vendor's Retry-After is a floor."""
        ceiling = min(self.max_s, self.initial_s * 2 ** (attempt - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)  # the deadline bounds an absurd one
        return delay


@dataclass(frozen=True, slots=True)
class AttemptReport:
    attempt: int
    latency_ms: float
    result: CallResult | None
    error: DeliveryError | None
    will_retry: bool


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    ok: bool
    attempts: int
    result: CallResult | None
    error: DeliveryError | None
    exhausted: bool  # retryable errors until the attempt or time budget ran out


async def deliver(
    request: VendorRequest,
    client: VendorClient,
    policy: RetryPolicy,
    *,
    on_attempt: Callable[[AttemptReport], Awaitable[None]] | None = None,
    http_slots: asyncio.Semaphore | None = None,
    before_call: Callable[[VendorRequest], Awaitable[None]] | None = None,
    on_rate_limited: Callable[[VendorRequest], None] | None = None,
) -> DeliveryOutcome:
    """Send with retries. Never raises a DeliveryError: returns the outcome."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        if before_call is not None:
            await before_call(request)
        t0 = time.perf_counter()
        error: DeliveryError | None = None
        result: CallResult | None = None
        try:
            if http_slots is not None:
                async with http_slots:
                    result = await client.send(request)
            else:
                result = await client.send(request)
        except DeliveryError as exc:
            error = exc
        latency_ms = (time.perf_counter() - t0) * 1000
        if error is None:
            if on_attempt is not None:
                await on_attempt(AttemptReport(attempt, latency_ms, result, None, False))
            return DeliveryOutcome(True, attempt, result, None, False)
        retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
        if isinstance(error, RateLimitedError) and on_rate_limited is not None:
            on_rate_limited(request)
        delay = policy.backoff(attempt, retry_after)
        retryable = isinstance(error, RetryableDeliveryError)
        in_budget = (
            attempt < policy.max_attempts
            and time.monotonic() - started + delay <= policy.deadline_s
        )
        will_retry = retryable and in_budget
        if on_attempt is not None:
            await on_attempt(AttemptReport(attempt, latency_ms, None, error, will_retry))
        if not will_retry:
            exhausted = not isinstance(error, PermanentDeliveryError)
            return DeliveryOutcome(False, attempt, None, error, exhausted)
        await asyncio.sleep(delay)


@dataclass(slots=True)
class _Entry:
    offset: int
    ack: Callable[[], None]
    size: int = 0
    done: bool = False


class OrderedDispatcher:
    """Concurrent across keys, serial per key, acknowledged in offset order per partition."""

    def __init__(self, max_pending: int, max_pending_bytes: int = 64 * 1024 * 1024) -> None:
        self._slots = asyncio.Semaphore(max_pending)
        # Bytes of admitted records: a few huge records cannot exhaust memory either.
        self._max_bytes = max_pending_bytes
        self._bytes = 0
        self._bytes_freed = asyncio.Condition()
        self._tails: dict[Hashable, asyncio.Task[None]] = {}
        self._partitions: dict[Hashable, deque[_Entry]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    @property
    def saturated(self) -> bool:
        return self._slots.locked()

    async def submit(
        self,
        partition: Hashable,
        offset: int,
        key: Hashable | None,
        job: Callable[[], Awaitable[None]],
        ack: Callable[[], None],
        size: int = 0,
    ) -> None:
        """Admit one record (waits while ``max_pending`` records, or their bytes, are in flight).

        ``job`` must not raise; ``ack`` runs once the job and every earlier
        record of the same partition are done. ``key=None`` means no ordering
        constraint (the record belongs to no order, e.g. an unparseable one).
        """
        await self._slots.acquire()
        async with self._bytes_freed:
            # One record larger than the budget is still admitted, alone.
            await self._bytes_freed.wait_for(
                lambda: self._bytes == 0 or self._bytes + size <= self._max_bytes
            )
            self._bytes += size
        entry = _Entry(offset, ack, size)
        self._partitions.setdefault(partition, deque()).append(entry)
        previous = self._tails.get(key) if key is not None else None
        task = asyncio.create_task(self._run(partition, key, previous, job, entry))
        self._tasks.add(task)
        if key is not None:
            self._tails[key] = task

    async def _run(
        self,
        partition: Hashable,
        key: Hashable | None,
        previous: asyncio.Task[None] | None,
        job: Callable[[], Awaitable[None]],
        entry: _Entry,
    ) -> None:
        try:
            if previous is not None:
                # The predecessor never raises; wait() also survives its cancellation.
                await asyncio.wait([previous])
            await job()
        except Exception:  # a job must not raise; keep the dispatcher alive if one does
            logger.exception("delivery job raised; the record is acknowledged as handled")
        finally:
            entry.done = True
            current = asyncio.current_task()
            if key is not None and self._tails.get(key) is current:
                del self._tails[key]
            if current is not None:
                self._tasks.discard(current)
            self._slots.release()
            self._drain(partition)
            async with self._bytes_freed:
                self._bytes -= entry.size
                self._bytes_freed.notify_all()

    def _drain(self, partition: Hashable) -> None:
        queue = self._partitions.get(partition)
        while queue and queue[0].done:
            queue.popleft().ack()
        if queue is not None and not queue:
            del self._partitions[partition]

    async def join(self) -> None:
        """Wait until every admitted record is done (used at shutdown and in tests)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
