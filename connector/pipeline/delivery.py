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
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from connector.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RateLimitedError,
    RetryableDeliveryError,
    RevokedError,
)
from connector.settings import DeliverySettings
from connector.vendors.base import CallResult, VendorClient, VendorRequest

__all__ = [
    "AttemptReport",
    "Attempts",
    "DeliveryOutcome",
    "Lease",
    "OrderedDispatcher",
    "Overdue",
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
    may_have_arrived: bool = False  # some failed attempt may have reached the vendor


class Attempts:
    """One request's attempts, driven by the caller: send, look at the report, back off.

    The caller owns the loop, so its policy -- judge the event again before every
    attempt, wait for the rate limit or the breaker, audit each failure -- runs in its
    own code rather than as callbacks from here. :func:`deliver` is that loop with
    hooks, for callers that need no more.
    """

    def __init__(
        self,
        request: VendorRequest,
        client: VendorClient,
        policy: RetryPolicy,
        *,
        http_slots: asyncio.Semaphore | None = None,
        on_wire: Callable[[], AbstractContextManager[None]] | None = None,
        on_rate_limited: Callable[[VendorRequest], None] | None = None,
    ) -> None:
        self._request = request
        self._client = client
        self._policy = policy
        self._slots = http_slots if http_slots is not None else _NO_SLOT
        self._on_wire = on_wire
        self._on_rate_limited = on_rate_limited
        self.deadline = time.monotonic() + policy.deadline_s  # monotonic
        self.attempt = 0
        self._last_error: DeliveryError | None = None
        self.may_have_arrived = False  # some failed attempt may have reached the vendor
        self._delay = 0.0

    async def send(self) -> AttemptReport:
        """One attempt. Never raises a DeliveryError: the report holds it.

        Whatever else the client raises is a bug translated into a permanent error
        that may have arrived (the guard stays careful).
        """
        request = self._request
        self.attempt += 1
        t0 = time.perf_counter()
        error: DeliveryError | None = None
        result: CallResult | None = None
        try:
            # The slot first: a job waiting for one is not on the wire, and must not
            # send once its partition is revoked (on_wire checks that on entry).
            async with self._slots:
                with self._on_wire() if self._on_wire is not None else nullcontext():
                    result = await self._client.send(request)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a client bug: never how an event ends unexplained
            logger.exception("vendor client raised outside the error hierarchy")
            error = PermanentDeliveryError(
                f"internal error in the {request.vendor} client: {type(exc).__name__}",
                may_have_arrived=True,
            )
        latency_ms = (time.perf_counter() - t0) * 1000
        if error is None:
            return AttemptReport(self.attempt, latency_ms, result, None, False)
        self._last_error = error
        self.may_have_arrived = self.may_have_arrived or error.may_have_arrived
        retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
        if isinstance(error, RateLimitedError) and self._on_rate_limited is not None:
            self._on_rate_limited(request)
        policy = self._policy
        self._delay = policy.backoff(self.attempt, retry_after)
        retryable = isinstance(error, RetryableDeliveryError)
        in_budget = (
            self.attempt < policy.max_attempts and time.monotonic() + self._delay <= self.deadline
        )
        return AttemptReport(self.attempt, latency_ms, None, error, retryable and in_budget)

    async def backoff(self) -> None:
        """Wait before the next attempt (after a report that will retry)."""
        await asyncio.sleep(self._delay)

    def outcome(self, report: AttemptReport) -> DeliveryOutcome:
        """The outcome once ``report`` is the last attempt."""
        if report.error is None:
            return DeliveryOutcome(True, report.attempt, report.result, None, False)
        exhausted = not isinstance(report.error, PermanentDeliveryError)
        return DeliveryOutcome(
            False, report.attempt, None, report.error, exhausted, self.may_have_arrived
        )

    def no_slot(self) -> DeliveryOutcome:
        """The outcome when no attempt can start before the deadline (rate limit)."""
        gave_up = self._last_error or RetryableDeliveryError(
            "rate limit: no request slot before the retry deadline", may_have_arrived=False
        )
        return DeliveryOutcome(False, self.attempt, None, gave_up, True, self.may_have_arrived)


async def deliver(
    request: VendorRequest,
    client: VendorClient,
    policy: RetryPolicy,
    *,
    on_attempt: Callable[[AttemptReport], Awaitable[None]] | None = None,
    http_slots: asyncio.Semaphore | None = None,
    before_attempt: Callable[[float], Awaitable[bool]] | None = None,
    on_wire: Callable[[], AbstractContextManager[None]] | None = None,
    on_rate_limited: Callable[[VendorRequest], None] | None = None,
) -> DeliveryOutcome:
    """Send with retries. Never raises a DeliveryError: returns the outcome.

    ``before_attempt(deadline)`` runs before every attempt (the caller re-checks
    its right to send and waits for its rate limit there); ``False`` means no
    attempt can start before the monotonic ``deadline``, which ends the retries.
    ``on_wire`` wraps the call itself, so that a revoke knows which jobs have a
    request on the wire.
    """
    attempts = Attempts(
        request,
        client,
        policy,
        http_slots=http_slots,
        on_wire=on_wire,
        on_rate_limited=on_rate_limited,
    )
    while True:
        if before_attempt is not None and not await before_attempt(attempts.deadline):
            return attempts.no_slot()
        report = await attempts.send()
        if on_attempt is not None:
            await on_attempt(report)
        if report.error is None or not report.will_retry:
            return attempts.outcome(report)
        await attempts.backoff()


class _NoSlot:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_SLOT = _NoSlot()


@dataclass(slots=True)
class _Entry:
    offset: int
    ack: Callable[[], None]
    size: int = 0
    done: bool = False
    since: float = 0.0  # admitted at (monotonic)
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class Overdue:
    """A partition's oldest unacknowledged record, admitted long ago."""

    partition: int
    offset: int
    age_s: float
    # Its job ended without being done (it raised or was cancelled): nothing past it is
    # acknowledged until the partition is read again (a rebalance or a restart).
    ended: bool


class _Fence:
    """The newest consumer generation fenced; written by Faust's consumer thread."""

    __slots__ = ("generation",)

    def __init__(self) -> None:
        self.generation = -1


class Lease:
    """A job's right to act for its partition, lost when the partition is revoked.

    One lease per partition *incarnation*: from an assignment (a consumer group
    generation) to its revocation. After a revoke a job of the old incarnation
    must not send, write state, write audit records or acknowledge: the
    partition's next owner replays its records from the committed offset.

    Faust runs the Kafka consumer in its own thread, which learns of a rebalance
    first: it fences the ending generation with one attribute write (no asyncio
    call from that thread), and every lease of that generation reads as revoked
    from then on. The event loop then ends the fenced jobs
    (:meth:`OrderedDispatcher.drain_revoked`).
    """

    __slots__ = (
        "_entries",
        "_exempt",
        "_fence",
        "_revoked",
        "_tails",
        "_tasks",
        "_wire",
        "done",
        "generation",
        "partition",
    )

    def __init__(self, partition: int, generation: int = 0, fence: _Fence | None = None) -> None:
        self.partition = partition
        self.generation = generation
        self._fence = fence or _Fence()
        self._revoked = False
        # One past the last record acknowledged (in offset order): the commit position.
        self.done: int | None = None
        self._entries: deque[_Entry] = deque()
        self._tails: dict[Hashable, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wire: set[asyncio.Task[Any]] = set()
        self._exempt: set[asyncio.Task[Any]] = set()

    @property
    def revoked(self) -> bool:
        return self._revoked or self.generation <= self._fence.generation

    @property
    def valid(self) -> bool:
        return not self.revoked

    def check(self, *, strict: bool = False) -> None:
        """Raise :class:`RevokedError` once the partition is revoked.

        One exemption: a job whose request was on the wire when the revoke came
        may still *record* that call's result (its audit and state writes), which
        the revoke waits for, so the next owner knows what the vendor got.
        ``strict`` refuses even that: nothing new may be sent.
        """
        if self.revoked and (strict or asyncio.current_task() not in self._exempt):
            raise RevokedError(f"partition {self.partition} was revoked")

    @contextmanager
    def on_wire(self) -> Iterator[None]:
        """Mark the current job as having a request on the wire (a revoke waits for it)."""
        self.check(strict=True)
        task = asyncio.current_task()
        if task is None:
            yield
            return
        self._wire.add(task)
        try:
            yield
        finally:
            self._wire.discard(task)
            if self.revoked:
                self._exempt.add(task)


class OrderedDispatcher:
    """Concurrent across keys, serial per key, acknowledged in offset order per partition."""

    def __init__(self, max_pending: int, max_pending_bytes: int = 64 * 1024 * 1024) -> None:
        self._slots = asyncio.Semaphore(max_pending)
        # Bytes of admitted records: a few huge records cannot exhaust memory either.
        self._max_bytes = max_pending_bytes
        self._bytes = 0
        self._bytes_freed = asyncio.Event()
        self._leases: dict[int, Lease] = {}
        # The newest lease per partition, revoked or not: its acknowledged position
        # may still be committed while the partition is being revoked.
        self._latest: dict[int, Lease] = {}
        self._revoked: list[Lease] = []
        self._fence = _Fence()
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

    def has_room(self, size: int = 0) -> bool:
        """Whether :meth:`submit` would admit a record of ``size`` bytes without waiting."""
        if self._slots.locked():
            return False
        return not self._bytes or self._bytes + size <= self._max_bytes

    def lease(self, partition: int, generation: int | None = None) -> Lease:
        """The lease for a record of ``partition`` read in consumer ``generation``.

        A record of a fenced generation gets a revoked lease: it is dropped,
        unacknowledged, and its partition's next owner reads it again.
        """
        generation = 0 if generation is None else generation
        if generation <= self._fence.generation:
            return Lease(partition, generation, self._fence)  # revoked from birth
        lease = self._leases.get(partition)
        if lease is None or lease.generation != generation or lease.revoked:
            if lease is not None and not lease._revoked:
                lease._revoked = True
                self._revoked.append(lease)
            lease = self._leases[partition] = Lease(partition, generation, self._fence)
            self._latest[partition] = lease
        return lease

    def position(self, partition: int) -> int | None:
        """One past the last record of ``partition`` acknowledged, in its newest incarnation."""
        lease = self._latest.get(partition)
        return None if lease is None else lease.done

    def overdue(self, older_than_s: float) -> list[Overdue]:
        """Partitions whose oldest unacknowledged record was admitted ``older_than_s`` ago."""
        now = time.monotonic()
        late = []
        for partition, lease in self._leases.items():
            if lease.revoked or not lease._entries:
                continue
            head = lease._entries[0]
            if now - head.since >= older_than_s:
                ended = head.task is not None and head.task.done() and not head.done
                late.append(Overdue(partition, head.offset, now - head.since, ended))
        return late

    def fence_generation(self, generation: int) -> None:
        """Fence every lease of ``generation`` and older. Safe from another thread."""
        if generation > self._fence.generation:
            self._fence.generation = generation

    async def submit(
        self,
        partition: int,
        offset: int,
        key: Hashable | None,
        job: Callable[[], Awaitable[None]],
        ack: Callable[[], None],
        size: int = 0,
        *,
        lease: Lease | None = None,
    ) -> bool:
        """Admit one record (waits while ``max_pending`` records, or their bytes, are in flight).

        ``ack`` runs once the job and every earlier record of the same partition
        are done. A job ends *done* by returning; raising (or being cancelled)
        leaves its record unacknowledged, and so does a revoke. ``key=None``
        means no ordering constraint (the record belongs to no order).
        ``lease``: the incarnation the record was read in; when it was revoked
        while this call waited for room, the record is dropped unacknowledged
        (returns False) -- its partition's next owner reads it again.
        """
        lease = lease or self.lease(partition)
        await self._slots.acquire()
        try:
            # One record larger than the budget is still admitted, alone.
            while self._bytes and self._bytes + size > self._max_bytes:
                self._bytes_freed.clear()
                await self._bytes_freed.wait()
        except BaseException:
            self._slots.release()
            raise
        self._bytes += size
        if lease.revoked:
            self._release(size)
            return False
        entry = _Entry(offset, ack, size, since=time.monotonic())
        lease._entries.append(entry)
        previous = lease._tails.get(key) if key is not None else None
        task = entry.task = asyncio.create_task(self._run(lease, key, previous, job, entry))
        self._tasks.add(task)
        lease._tasks.add(task)
        if key is not None:
            lease._tails[key] = task
        return True

    def _release(self, size: int) -> None:
        self._slots.release()
        self._bytes -= size
        self._bytes_freed.set()

    async def _run(
        self,
        lease: Lease,
        key: Hashable | None,
        previous: asyncio.Task[None] | None,
        job: Callable[[], Awaitable[None]],
        entry: _Entry,
    ) -> None:
        try:
            if previous is not None:
                # The predecessor never raises; wait() also survives its cancellation.
                await asyncio.wait([previous])
            lease.check()
            await job()
            entry.done = True
        except RevokedError:
            pass  # left unacknowledged for the partition's next owner
        except Exception:
            # Jobs end every record with an audited outcome themselves; a job that
            # raises is a bug. Its record is not acknowledged, which stops the
            # partition's committed offset here: after a restart it is read again.
            logger.exception("delivery job raised; offset %s stays unacknowledged", entry.offset)
        finally:
            current = asyncio.current_task()
            if key is not None and lease._tails.get(key) is current:
                del lease._tails[key]
            if current is not None:
                self._tasks.discard(current)
                lease._tasks.discard(current)
            if not lease.revoked:
                self._drain(lease)
            self._release(entry.size)

    @staticmethod
    def _drain(lease: Lease) -> None:
        queue = lease._entries
        while queue and queue[0].done:
            entry = queue.popleft()
            entry.ack()
            lease.done = entry.offset + 1

    def revoke(self, partitions: Iterable[int] | None = None) -> list[Lease]:
        """Fence partitions (all when ``None``) at once; synchronous, so call it first.

        From here on their jobs cannot send a new request, write or acknowledge;
        :meth:`drain_revoked` then ends them.
        """
        chosen = list(self._leases) if partitions is None else list(partitions)
        fenced = []
        for partition in chosen:
            lease = self._leases.pop(partition, None)
            if lease is not None:
                lease._revoked = True
                fenced.append(lease)
                if partitions is None:
                    # Everything is revoked: a record of that generation read later gets a
                    # revoked lease too, never a fresh one that would start mid-stream.
                    self.fence_generation(lease.generation)
        self._revoked.extend(fenced)
        return fenced

    async def drain_revoked(self, wire_timeout: float) -> None:
        """End the revoked partitions' jobs, leaving their records unacknowledged.

        Jobs waiting (for a retry, a rate limit, their order's earlier event, or
        a sink) are cancelled at once. Jobs with a request on the wire are
        awaited up to ``wire_timeout`` (the HTTP timeout), with the recording of
        their result: cancelling them would not stop a request the vendor
        already received, the next owner must not send a newer event of that
        order before this one has landed, and it must find the result in the
        changelog rather than send the event again.
        """
        leases, self._revoked = self._revoked, []
        on_wire = {task for lease in leases for task in lease._wire}
        for lease in leases:
            for task in lease._tasks - on_wire:
                task.cancel()
        if on_wire:
            started = time.monotonic()
            _, late = await asyncio.wait(on_wire, timeout=wire_timeout)
            logger.info(
                "revoke: waited %.2f s for %d request(s) on the wire, %d cancelled",
                time.monotonic() - started,
                len(on_wire),
                len(late),
            )
        remaining = {task for lease in leases for task in lease._tasks}
        for task in remaining:
            task.cancel()
        if remaining:
            await asyncio.wait(remaining)

    async def join(self) -> None:
        """Wait until every admitted record is done (tests)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
