"""An input event's delivery: judged, marked, sent with retries, ended or parked.

The order's lock is held from the decision to the end: one order's sends never
overlap. Before every attempt the event is judged again -- only this job may have
moved the order, and only while its partition is ours -- and waits for its rate
limit, or for the breaker under the ``stop`` outage policy. The retry loop is
driven here (:class:`~connector.pipeline.delivery.Attempts`), so that these steps are plain
code in one place.
"""

from __future__ import annotations

from typing import Any

from connector.domain.audit import Outcome
from connector.domain.lifecycle import Decision, OrderState, Verdict, abandon
from connector.errors import RetryableDeliveryError
from connector.pipeline.breaker import Breakers
from connector.pipeline.delivery import Attempts, DeliveryOutcome, RetryPolicy
from connector.pipeline.parking import Parking
from connector.pipeline.records import Job
from connector.pipeline.steps import OrderLocks, Steps, observe
from connector.settings import DeliverySettings, OutagePolicy
from connector.vendors import VendorClient

__all__ = ["OrderRun"]


class OrderRun:
    """Runs an input event's job (the parking topic's are :class:`Parking`'s)."""

    def __init__(
        self,
        steps: Steps,
        parking: Parking,
        breakers: Breakers,
        locks: OrderLocks,
        clients: dict[str, VendorClient],
        *,
        delivery: DeliverySettings,
        outage_policy: Any,
        limiter: Any,
        http_slots: Any,
    ) -> None:
        self._steps = steps
        self._effects = steps.effects
        self._records = steps.records
        self._parking = parking
        self._breakers = breakers
        self._locks = locks
        self._clients = clients
        self._outage_policy = outage_policy  # vendor -> OutagePolicy
        self._limiter = limiter
        self._http_slots = http_slots
        self._policy = RetryPolicy.from_settings(delivery)
        # "stop": retryable failures never run out; the breaker paces the probes.
        self._endless = RetryPolicy(
            max_attempts=2**62,
            initial_s=self._policy.initial_s,
            max_s=self._policy.max_s,
            deadline_s=float("inf"),
        )

    async def run(self, job: Job) -> None:
        job.lease.check()
        steps = self._steps
        async with self._locks.hold(job.key):
            state = self._effects.state(job)
            decision = steps.judge(job, state)
            if decision.verdict is Verdict.DUPLICATE:
                await steps.not_sent(job, state, decision)
                return
            if state is not None and state.parked is not None:
                # Behind a parked event of its order: it follows it to the parking topic,
                # where it is judged in order once the earlier one has ended.
                await self._parking.park(job, "an earlier event of this order is parked")
                return
            if decision.verdict is not Verdict.SEND:
                await steps.not_sent(job, state, decision)
                return
            breaker = self._breakers[job.request.limit_key]
            parks = self._outage_policy(job.request.vendor) == "park" or breaker.paused
            if parks and not breaker.closed:
                reason = f"target {job.request.limit_key} is down (circuit open)"
                await self._parking.park(job, reason)
                return
            await self._send(job, state, decision)

    async def _send(self, job: Job, state: OrderState | None, decision: Decision) -> None:
        lease, request = job.lease, job.request
        steps, effects, records = self._steps, self._effects, self._records
        mark = decision.mark
        # The intent is on the changelog before the request leaves: whoever replays
        # this order after a crash knows the vendor may have this event.
        await effects.save(job, steps.begin(job, state, mark))
        if decision.resend:
            # The one decision a terminal record would not show: this is a second try.
            reason = "sent before, not confirmed: sending it again"
            await effects.emit(lease, records.of(job, Outcome.ACCEPTED, False, reason=reason))
        policy_name: OutagePolicy = self._outage_policy(request.vendor)
        breaker = self._breakers[request.limit_key]
        limiter = self._limiter
        attempts = Attempts(
            request,
            self._clients[request.vendor],
            self._endless if policy_name == "stop" else self._policy,
            http_slots=self._http_slots,
            on_wire=lease.on_wire,
            on_rate_limited=limiter.on_rate_limited if limiter is not None else None,
        )
        latency_ms = 0.0
        while True:
            # Judged again before every attempt: only this job may have moved the
            # order, and only while its partition is ours.
            lease.check(strict=True)
            again = steps.judge(job, effects.state(job))
            if again.verdict is not Verdict.SEND:
                await steps.not_sent(job, effects.state(job), again)
                return
            if (policy_name == "park" or breaker.paused) and not breaker.closed:
                after = abandon(
                    effects.state(job), mark, may_have_arrived=attempts.may_have_arrived
                )
                await effects.save(job, after)
                await self._parking.park(job, f"target {request.limit_key} is down (circuit open)")
                return
            if policy_name == "stop":
                await steps.await_breaker(lease, breaker)
            if limiter is not None:
                allowed = await limiter.acquire(request, deadline=attempts.deadline)
                lease.check(strict=True)
                if not allowed:
                    outcome = attempts.no_slot()
                    break
            report = await attempts.send()
            latency_ms = report.latency_ms
            error = report.error
            observe(breaker, error)
            if error is None:
                outcome = attempts.outcome(report)
                break
            failed = records.failed(
                job, error, report.latency_ms, report.will_retry, attempt=report.attempt
            )
            await effects.emit(lease, failed)
            if not report.will_retry:
                outcome = attempts.outcome(report)
                break
            lease.check(strict=True)  # revoked: no backoff, no retry
            await attempts.backoff()
        # Revoked while the call was on the wire: the result is still recorded (the
        # revoke waits for it), so the next owner finds it instead of sending again.
        lease.check()
        if self._parks_after(outcome, policy_name):
            after = abandon(effects.state(job), mark, may_have_arrived=outcome.may_have_arrived)
            await effects.save(job, after)
            assert outcome.error is not None
            await self._parking.park(job, f"retries ran out: {outcome.error.message}")
            return
        await steps.finish(job, mark, outcome, latency_ms)

    @staticmethod
    def _parks_after(outcome: DeliveryOutcome, policy_name: OutagePolicy) -> bool:
        return (
            not outcome.ok
            and policy_name == "park"
            and isinstance(outcome.error, RetryableDeliveryError)
        )
