"""One input record, from bytes to a terminal audited outcome.

Follow an event here: :meth:`Processor.handle` parses and key-checks it
(:mod:`connector.events`) and maps it to the vendor's request
(:mod:`connector.vendors`), then hands a job to the
:class:`~connector.delivery.OrderedDispatcher`, which runs one order's jobs one
after another. The job decides at send time (:func:`connector.lifecycle.judge`)
against what the vendor may already have, records the intent to send on the
changelog *before* the call, sends with retries
(:func:`~connector.delivery.deliver`), and ends with exactly one terminal audit
record (plus a dead-letter record when the event cannot be delivered).

Rules that keep the promise through crashes and rebalances:

* ``handle`` never raises, and a job never ends by raising: an unexpected
  exception becomes a dead letter with code ``internal``.
* A record is acknowledged only after its terminal audit record (and dead
  letter) is on the broker. When Kafka does not take one, the step is retried
  and the record stays unacknowledged, which holds the partition's committed
  offset: a crash then replays it instead of losing it.
* Every job holds its partition's :class:`~connector.delivery.Lease`. Once the
  partition is revoked the job sends nothing new, writes nothing and
  acknowledges nothing; the next owner replays the record.
* Every job writes the order's state back, even when nothing changed, so a
  changelog that missed a write (a worker killed after its local store took
  it) heals on the order's next event.

The processor knows no Faust: state lives in a :class:`StateStore`, records go
to :class:`Sinks`. :mod:`connector.app` plugs in the Faust table and topics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from connector.audit import AuditRecord, DeadLetter, Outcome, SourceRef
from connector.delivery import AttemptReport, Lease, OrderedDispatcher, RetryPolicy, deliver
from connector.errors import (
    DeliveryError,
    InvalidEventError,
    PermanentDeliveryError,
    RevokedError,
)
from connector.events import ComeetTarget, Event, KomboIntegrationTarget, KomboTarget, parse_record
from connector.lifecycle import (
    Decision,
    Mark,
    OrderState,
    Verdict,
    abandon,
    begin,
    confirm,
    judge,
    status_after,
)
from connector.settings import Settings
from connector.vendors import VendorClient, VendorRequest, map_event

__all__ = ["Limiter", "Processor", "Sinks", "StateStore"]

logger = logging.getLogger(__name__)

SINK_RETRY_MAX_S = 5.0


class Sinks(Protocol):
    """Where records go. Both coroutines return once Kafka has the record."""

    async def audit(self, record: AuditRecord) -> None: ...

    async def dead_letter(self, record: DeadLetter, key: bytes | None) -> None: ...


class StateStore(Protocol):
    """Per-order state, co-partitioned with the record being processed."""

    def get(self, key: bytes) -> OrderState | None: ...

    def put(self, key: bytes, state: OrderState) -> Awaitable[Any]:
        """Store the state; awaiting the result waits until the changelog has it."""
        ...


class Limiter(Protocol):
    async def acquire(self, request: VendorRequest, *, deadline: float | None = None) -> bool: ...

    def on_rate_limited(self, request: VendorRequest) -> None: ...


class _Overtaken(Exception):
    """Judged again before a retry, the event may no longer be sent."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


def _target_fields(target: KomboTarget | ComeetTarget | KomboIntegrationTarget) -> dict[str, str]:
    return target.model_dump(exclude={"vendor"})


class Processor:
    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        clients: dict[str, VendorClient],
        sinks: Sinks,
        dispatcher: OrderedDispatcher,
        *,
        limiter: Limiter | None = None,
    ) -> None:
        self._worker = settings.worker_id
        self._store = store
        self._clients = clients
        self._sinks = sinks
        self._dispatcher = dispatcher
        self._policy = RetryPolicy.from_settings(settings.delivery)
        self._id_limit = settings.state.event_ids_per_order
        self._max_bytes = settings.kafka.max_message_bytes
        self._limiter = limiter
        # Only the HTTP call takes one of these: an event sleeping before a retry, or
        # waiting behind an earlier event of its order, leaves them to healthy orders.
        self._http_slots = asyncio.Semaphore(settings.delivery.max_in_flight)

    # -- entry point -----------------------------------------------------------------------
    async def handle(
        self,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        ack: Callable[[], None],
    ) -> None:
        """Admit one record's job. Never raises."""
        # Taken before anything awaits: a record read before a revoke belongs to the
        # old incarnation and is dropped unacknowledged if the revoke comes first.
        lease = self._dispatcher.lease(source.partition)
        # Raw bytes plus the parsed event and the request body: about three copies.
        size = 3 * (len(value or b"") + len(key or b""))
        job: Callable[[], Awaitable[None]]
        order_key: bytes | None = None
        try:
            event = parse_record(key, value, max_bytes=self._max_bytes)
            request = map_event(event)
            order_key = key
            job = self._order_job(lease, source, order_key or b"", value, event, request)
        except InvalidEventError as exc:
            job = self._invalid_job(lease, source, key, value, exc, None)
        except Exception as exc:  # a bug must not stop the stream: dead-letter and go on
            logger.exception("unexpected error while decoding offset %s", source.offset)
            error = InvalidEventError(f"internal error: {type(exc).__name__}", code="internal")
            job = self._invalid_job(lease, source, key, value, error, None)
        await self._dispatcher.submit(
            source.partition, source.offset, order_key, job, ack, size, lease=lease
        )

    # -- records ---------------------------------------------------------------------------
    def _audit(self, event: Event | None, source: SourceRef, **fields: Any) -> AuditRecord:
        if event is not None:
            fields.setdefault("event_id", event.event_id)
            fields.setdefault("event_type", str(event.type))
            fields.setdefault("order_key", event.key)
            fields.setdefault("vendor", event.target.vendor)
            fields.setdefault("target", _target_fields(event.target))
        return AuditRecord(worker_id=self._worker, source=source, **fields)

    def _letter(
        self,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        event: Event | None,
        **fields: Any,
    ) -> DeadLetter:
        return DeadLetter(
            worker_id=self._worker,
            event_id=event.event_id if event else None,
            order_key=event.key if event else None,
            source=source,
            original_key_b64=DeadLetter.encode(key),
            original_value_b64=DeadLetter.encode(value),
            **fields,
        )

    async def _durably(self, lease: Lease, step: Callable[[], Awaitable[Any]], what: str) -> None:
        """Run one sink step until Kafka takes it, unless the partition is revoked first.

        The record stays unacknowledged meanwhile, so the partition's committed
        offset waits here; the consumer keeps reading other partitions.
        """
        delay = 0.1
        while True:
            lease.check()
            try:
                await step()
                return
            except RevokedError:
                raise
            except Exception as exc:
                logger.warning(
                    "could not write the %s record (%s: %s); retrying in %.1f s",
                    what,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(SINK_RETRY_MAX_S, delay * 2)

    async def _terminal(self, lease: Lease, record: AuditRecord) -> None:
        await self._durably(lease, lambda: self._sinks.audit(record), "audit")

    async def _dead_letter(
        self,
        lease: Lease,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        event: Event | None,
        audit: AuditRecord,
        **fields: Any,
    ) -> None:
        letter = self._letter(source, key, value, event, **fields)
        await self._durably(lease, lambda: self._sinks.dead_letter(letter, key), "dead-letter")
        await self._terminal(lease, audit)

    # -- jobs ------------------------------------------------------------------------------
    def _invalid_job(
        self,
        lease: Lease,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        error: InvalidEventError,
        event: Event | None,
    ) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            reason = f"{error.code}: {error.reason}"
            invalid = self._audit(
                event, source, outcome=Outcome.INVALID, terminal=False, reason=reason
            )
            await self._durably(lease, lambda: self._sinks.audit(invalid), "audit")
            ended = self._audit(
                event, source, outcome=Outcome.DEAD_LETTERED, terminal=True, reason=reason
            )
            await self._dead_letter(
                lease, source, key, value, event, ended, code=error.code, reason=error.reason
            )

        return job

    def _order_job(
        self,
        lease: Lease,
        source: SourceRef,
        key: bytes,
        value: bytes | None,
        event: Event,
        request: VendorRequest,
    ) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            ended = [False]
            try:
                await self._run_order(lease, source, key, value, event, request, ended)
            except RevokedError:
                raise
            except Exception as exc:
                if ended[0]:  # the terminal record is out; only a later step failed
                    logger.exception("error after event %s ended", event.event_id)
                    return
                logger.exception("unexpected error on event %s", event.event_id)
                reason = f"internal error: {type(exc).__name__}"
                audit = self._audit(
                    event,
                    source,
                    outcome=Outcome.DEAD_LETTERED,
                    terminal=True,
                    action=request.action,
                    reason=reason,
                )
                await self._dead_letter(
                    lease, source, key, value, event, audit, code="internal", reason=reason
                )

        return job

    async def _run_order(
        self,
        lease: Lease,
        source: SourceRef,
        key: bytes,
        value: bytes | None,
        event: Event,
        request: VendorRequest,
        ended: list[bool],
    ) -> None:
        lease.check()
        state = self._store.get(key)
        decision = judge(state, event.event_id, source.offset, status_after(event), str(event.type))
        if decision.verdict is not Verdict.SEND:
            if state is not None:
                self._store.put(key, state)  # heal a changelog that missed a write
            outcome = (
                Outcome.DUPLICATE if decision.verdict is Verdict.DUPLICATE else Outcome.REJECTED
            )
            record = self._audit(
                event,
                source,
                outcome=outcome,
                terminal=True,
                action=request.action,
                reason=decision.reason,
            )
            await self._terminal(lease, record)
            ended[0] = True
            return
        await self._send(lease, source, key, value, event, request, state, decision, ended)

    async def _send(
        self,
        lease: Lease,
        source: SourceRef,
        key: bytes,
        value: bytes | None,
        event: Event,
        request: VendorRequest,
        state: OrderState | None,
        decision: Decision,
        ended: list[bool],
    ) -> None:
        mark = decision.mark
        intent = begin(state, mark, id_limit=self._id_limit)
        # The intent is on the changelog before the request leaves: whoever replays
        # this order after a crash knows the vendor may have this event.
        await self._durably(lease, lambda: self._store.put(key, intent), "state")

        def record(outcome: Outcome, terminal: bool, **fields: Any) -> AuditRecord:
            return self._audit(
                event, source, outcome=outcome, terminal=terminal, action=request.action, **fields
            )

        accepted = record(
            Outcome.ACCEPTED,
            False,
            reason="sent before, not confirmed: sending it again" if decision.resend else None,
        )
        await self._durably(lease, lambda: self._sinks.audit(accepted), "audit")
        last_latency_ms = [0.0]

        async def on_attempt(report: AttemptReport) -> None:
            last_latency_ms[0] = report.latency_ms
            if report.error is not None:
                failed = record(
                    Outcome.FAILED,
                    False,
                    reason=report.error.message,
                    http_status=report.error.http_status,
                    vendor_code=report.error.vendor_code,
                    latency_ms=round(report.latency_ms, 3),
                    attempt=report.attempt,
                    retryable=report.will_retry,
                )
                await self._durably(lease, lambda: self._sinks.audit(failed), "audit")
                if report.will_retry:
                    lease.check(strict=True)  # revoked: no backoff, no retry

        async def before_attempt(deadline: float) -> bool:
            # Judged again before every attempt: only this job may have moved the
            # order, and only while its partition is ours.
            lease.check(strict=True)
            again = judge(self._store.get(key), event.event_id, source.offset, mark.status)
            if again.verdict is not Verdict.SEND:
                raise _Overtaken(again)
            if self._limiter is None:
                return True
            allowed = await self._limiter.acquire(request, deadline=deadline)
            lease.check(strict=True)
            return allowed

        try:
            outcome = await deliver(
                request,
                self._clients[request.vendor],
                self._policy,
                on_attempt=on_attempt,
                http_slots=self._http_slots,
                before_attempt=before_attempt,
                on_wire=lease.on_wire,
                on_rate_limited=self._limiter.on_rate_limited if self._limiter else None,
            )
        except _Overtaken as overtaken:
            verdict = overtaken.decision.verdict
            ending = record(
                Outcome.DUPLICATE if verdict is Verdict.DUPLICATE else Outcome.REJECTED,
                True,
                reason=overtaken.decision.reason,
            )
            await self._terminal(lease, ending)
            ended[0] = True
            return
        # Revoked while the call was on the wire: the result is still recorded (the
        # revoke waits for it), so the next owner finds it instead of sending again.
        lease.check()
        if outcome.ok:
            assert outcome.result is not None
            delivered = record(
                Outcome.DELIVERED,
                True,
                http_status=outcome.result.http_status,
                latency_ms=round(last_latency_ms[0], 3),
                attempt=outcome.attempts,
                warnings=list(outcome.result.warnings),
            )
            # Audit first: if the worker dies before the state write, the replay sends
            # again (a harmless repeat) instead of calling a delivered event a duplicate.
            await self._terminal(lease, delivered)
            ended[0] = True
            confirmed = confirm(self._store.get(key), mark, id_limit=self._id_limit)
            await self._durably(lease, lambda: self._store.put(key, confirmed), "state")
            return
        error = outcome.error
        assert error is not None
        await self._give_up(
            lease,
            source,
            key,
            value,
            event,
            request,
            mark,
            error,
            outcome.attempts,
            may_have_arrived=outcome.may_have_arrived,
        )
        ended[0] = True

    async def _give_up(
        self,
        lease: Lease,
        source: SourceRef,
        key: bytes,
        value: bytes | None,
        event: Event,
        request: VendorRequest,
        mark: Mark,
        error: DeliveryError,
        attempts: int,
        *,
        may_have_arrived: bool,
    ) -> None:
        code = "permanent" if isinstance(error, PermanentDeliveryError) else "retries_exhausted"
        reason = (
            f"vendor refused the request: {error.message}"
            if code == "permanent"
            else f"gave up after {attempts} attempts: {error.message}"
        )
        failure = {"http_status": error.http_status, "vendor_code": error.vendor_code}
        audit = self._audit(
            event,
            source,
            outcome=Outcome.DEAD_LETTERED,
            terminal=True,
            action=request.action,
            reason=reason,
            attempt=attempts,
            **failure,
        )
        await self._dead_letter(
            lease,
            source,
            key,
            value,
            event,
            audit,
            code=code,
            reason=reason,
            last_error=error.message,
            attempts=attempts,
            **failure,
        )
        # What the vendor has decides what later events may do: a refused final event
        # leaves the order open there, so a later cancellation is still legitimate.
        after = abandon(self._store.get(key), mark, may_have_arrived=may_have_arrived)
        self._store.put(key, after)
