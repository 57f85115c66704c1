"""Parking: an event whose target is down waits on the parking topic, in order.

While a target's circuit is open and its outage policy is ``park`` (or an
operator paused it), its events -- and every later event of the same order --
move to the parking topic (co-partitioned with the events topic) and the input
partition moves on. :meth:`Parking.run` delivers a parked event once its target
answers: one attempt at a time, never dead-lettering a retryable failure. An
event parked longer than the maximum event age ends as a dead letter
``expired``. Their terminal audit records name the original input record.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from connector.domain.audit import Outcome, SourceRef
from connector.domain.lifecycle import Verdict, abandon, park, unpark
from connector.errors import RetryableDeliveryError
from connector.pipeline.breaker import Breakers
from connector.pipeline.delivery import Attempts, RetryPolicy
from connector.pipeline.records import Job
from connector.pipeline.steps import OrderLocks, Steps, observe
from connector.vendors import VendorClient

__all__ = [
    "PARKED_AT_HEADER",
    "PARKED_FROM_HEADER",
    "Parking",
    "input_headers",
    "origin",
]

logger = logging.getLogger(__name__)

PARKED_FROM_HEADER = "connector-parked-from"  # JSON {topic, partition, offset} of the input
PARKED_AT_HEADER = "connector-parked-at"  # when it was parked: seconds since the epoch

_ONCE = RetryPolicy(max_attempts=1, deadline_s=float("inf"))


class Parking:
    """Moves events to the parking topic, and delivers them from there."""

    def __init__(
        self,
        steps: Steps,
        breakers: Breakers,
        locks: OrderLocks,
        clients: dict[str, VendorClient],
        *,
        limiter: Any,
        http_slots: Any,
        max_event_age_s: float,
    ) -> None:
        self._steps = steps
        self._effects = steps.effects
        self._records = steps.records
        self._breakers = breakers
        self._locks = locks
        self._clients = clients
        self._limiter = limiter
        self._http_slots = http_slots
        self._max_age = max_event_age_s

    async def park(self, job: Job, reason: str) -> None:
        """Move the event to the parking topic; the input record is then done."""
        effects = self._effects
        # Marked first: from here on the order's later events park behind this one.
        await effects.save(job, park(effects.state(job), job.source.offset))
        headers = [
            (PARKED_FROM_HEADER, job.source.model_dump_json().encode()),
            (PARKED_AT_HEADER, repr(time.time()).encode()),
            # The input's own headers go along (its trace context among them), so a
            # dead letter of the parked event keeps them and a replay restores them.
            *job.headers,
        ]
        await effects.park(job.lease, job.key, job.value or b"", job.source.partition, headers)
        parked = self._records.of(job, Outcome.PARKED, False, reason=reason)
        await effects.emit(job.lease, parked)

    def _expired(self, parked_at: float | None) -> bool:
        # Measured from parking, not from occurred_at: a producer backfilling old
        # events (or with a skewed clock) must not see them expire on the first outage.
        if parked_at is None:
            return False
        return time.time() - parked_at > self._max_age

    async def run(self, job: Job) -> None:
        """A parked event: wait for its target, then one attempt at a time, in order.

        Nothing here dead-letters a retryable failure: the event waits for the
        target's breaker instead. It ends delivered, refused (dead letter), too
        old (dead letter ``expired``), a duplicate, or rejected by the guard.
        """
        lease, request = job.lease, job.request
        steps, effects = self._steps, self._effects
        breaker = self._breakers[request.limit_key]
        while True:
            lease.check(strict=True)
            if self._expired(job.parked_at):
                await self._expire(job)
                return
            await steps.await_breaker(lease, breaker)
            if self._limiter is not None:
                await self._limiter.acquire(request)
                lease.check(strict=True)
            async with self._locks.hold(job.key):
                state = effects.state(job)
                decision = steps.judge(job, state)
                if decision.verdict is not Verdict.SEND:
                    breaker.on_neutral()
                    await steps.not_sent(job, unpark(state, job.source.offset), decision)
                    return
                mark = decision.mark
                await effects.save(job, steps.begin(job, state, mark))
                attempts = Attempts(
                    request,
                    self._clients[request.vendor],
                    _ONCE,
                    http_slots=self._http_slots,
                    on_wire=lease.on_wire,
                )
                report = await attempts.send()
                outcome = attempts.outcome(report)
                lease.check()
                error = outcome.error
                observe(breaker, error)
                if isinstance(error, RetryableDeliveryError):
                    failed = self._records.failed(job, error, report.latency_ms, True)
                    after = abandon(
                        effects.state(job), mark, may_have_arrived=outcome.may_have_arrived
                    )
                    await effects.save(job, after)
                    await effects.emit(lease, failed)
                    continue
                await steps.finish(job, mark, outcome, report.latency_ms, leave_parking=True)
                return

    async def _expire(self, job: Job) -> None:
        reason = f"parked longer than the maximum event age ({self._max_age:.0f} s)"
        ending = self._records.dead_lettered(job, "expired", reason)
        effects = self._effects
        async with self._locks.hold(job.key):
            await effects.end(
                job.lease,
                ending,
                lambda: unpark(effects.state(job), job.source.offset),
                job=job,
                durable=True,
            )


def input_headers(headers: Any) -> tuple[tuple[str, bytes], ...]:
    """A record's headers as the producer wrote them: without the parking topic's own."""
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, dict) else headers
    return tuple(
        (str(name), b"" if raw is None else bytes(raw))
        for name, raw in items
        if name not in (PARKED_FROM_HEADER, PARKED_AT_HEADER)
    )


def origin(headers: Any) -> tuple[SourceRef | None, float | None]:
    """The input record a parked one came from, and when it was parked."""
    source: SourceRef | None = None
    since: float | None = None
    for name, raw in headers or ():
        try:
            if name == PARKED_FROM_HEADER:
                source = SourceRef.model_validate(json.loads(raw))
            elif name == PARKED_AT_HEADER:
                since = float(raw)
        except ValueError:
            logger.warning("parked record with an unreadable %s header", name)
    return source, since
