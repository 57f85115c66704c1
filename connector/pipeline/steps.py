"""The steps every event's job shares, whichever topic it came from.

The decision is :func:`connector.domain.lifecycle.judge` (pure); these apply it: judge
the event against the order's state, mark the intent, end the event that is not
sent (a duplicate, a rejection) or whose delivery is over (delivered, refused,
out of retries), and wait for a target's breaker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from connector.domain.audit import Outcome
from connector.domain.lifecycle import (
    Decision,
    Mark,
    OrderState,
    Verdict,
    abandon,
    begin,
    confirm,
    judge,
    status_after,
    unpark,
)
from connector.errors import DeliveryError, RetryableDeliveryError
from connector.pipeline.breaker import Breaker
from connector.pipeline.delivery import DeliveryOutcome, Lease
from connector.pipeline.effects import Effects
from connector.pipeline.records import Ending, Job, RecordBuilder

__all__ = ["OrderLocks", "Steps", "observe"]


class OrderLocks:
    """One order's sends never overlap, whether they come from the input or parking."""

    def __init__(self) -> None:
        self._locks: dict[bytes, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, key: bytes) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]


def observe(breaker: Breaker, error: DeliveryError | None) -> None:
    """What one attempt says of its target: only retryable failures count against it."""
    if error is None:
        breaker.on_success()
    elif isinstance(error, RetryableDeliveryError):
        breaker.on_failure()
    else:
        breaker.on_neutral()


class Steps:
    """Judging, marking and ending one event, on the effect executor."""

    def __init__(self, effects: Effects, records: RecordBuilder, *, id_limit: int) -> None:
        self.effects = effects
        self.records = records
        self._id_limit = id_limit

    def judge(self, job: Job, state: OrderState | None) -> Decision:
        event = job.event
        return judge(
            state,
            event.event_id,
            job.source.offset,
            status_after(event),
            str(event.type),
            event.occurred_at.timestamp(),
        )

    def begin(self, job: Job, state: OrderState | None, mark: Mark) -> OrderState:
        return begin(
            state, mark, id_limit=self._id_limit, occurred_at=job.event.occurred_at.timestamp()
        )

    async def not_sent(self, job: Job, state: OrderState | None, decision: Decision) -> None:
        """A duplicate or a rejection: the state written back, and the terminal record."""
        if state is not None:
            # Heal a changelog that missed a write.
            await self.effects.write_behind(job, state)
        outcome = Outcome.DUPLICATE if decision.verdict is Verdict.DUPLICATE else Outcome.REJECTED
        terminal = self.records.of(job, outcome, True, reason=decision.reason)
        await self.effects.end(job.lease, Ending(terminal), job=job)

    async def finish(
        self,
        job: Job,
        mark: Mark,
        outcome: DeliveryOutcome,
        latency_ms: float,
        *,
        leave_parking: bool = False,
    ) -> None:
        """A delivery is over: delivered, or refused / out of retries (a dead letter)."""
        effects = self.effects
        if outcome.ok:
            assert outcome.result is not None
            # Audit first: if the worker dies before the state write, the replay sends
            # again (a harmless repeat) instead of calling a delivered event a duplicate.
            ending = Ending(
                self.records.of(
                    job,
                    Outcome.DELIVERED,
                    True,
                    http_status=outcome.result.http_status,
                    latency_ms=round(latency_ms, 3),
                    attempt=outcome.attempts,
                    warnings=list(outcome.result.warnings),
                )
            )
        else:
            assert outcome.error is not None
            ending = self.records.gave_up(job, outcome.error, outcome.attempts)

        def after() -> OrderState | None:
            state = effects.state(job)
            if outcome.ok:
                state = confirm(state, mark, id_limit=self._id_limit)
            else:
                # What the vendor has decides what later events may do: a refused final
                # event leaves the order open there, so a later cancellation is legitimate.
                state = abandon(state, mark, may_have_arrived=outcome.may_have_arrived)
            return unpark(state, job.source.offset) if leave_parking else state

        # The state is written behind: the record is acknowledged after this, and the
        # producer is flushed before a commit (and when a revoke ends); if the worker
        # dies first, the pending intent makes the replay send the same event again.
        await effects.end(job.lease, ending, after, job=job)

    async def await_breaker(self, lease: Lease, breaker: Breaker) -> None:
        while not breaker.try_probe():
            lease.check(strict=True)
            wait = breaker.wait_s()
            await breaker.changed(min(wait, 1.0) if wait > 0 else 1.0)
