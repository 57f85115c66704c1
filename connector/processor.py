"""One input record, from bytes to a terminal audited outcome.

Follow an event here: :meth:`Processor.handle` parses and key-checks it
(:mod:`connector.events`), maps it to the vendor's request
(:mod:`connector.vendors`), asks the lifecycle guard (:mod:`connector.lifecycle`)
and records the accepted state, then hands a job to the
:class:`~connector.delivery.OrderedDispatcher`. The job sends the request with
retries (:func:`~connector.delivery.deliver`), records the delivered state,
and writes the audit record (and, on failure, the dead-letter record).

``handle`` never raises: an exception is never how a record ends. A record is
acknowledged only after its terminal audit record (and dead-letter record)
has been written to Kafka.

The processor knows no Faust: the table is any mutable mapping of key bytes to
JSON-ready dicts, and the sinks are two coroutines. :mod:`connector.app` plugs
in the Faust table and topics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from connector.audit import AuditRecord, DeadLetter, Outcome, SourceRef
from connector.delivery import AttemptReport, OrderedDispatcher, RetryPolicy, deliver
from connector.errors import InvalidEventError, PermanentDeliveryError
from connector.events import ComeetTarget, Event, KomboIntegrationTarget, KomboTarget, parse_record
from connector.lifecycle import (
    OrderState,
    Verdict,
    decide,
    is_delivered,
    mark_delivered,
    status_after,
)
from connector.settings import Settings
from connector.vendors import VendorClient, VendorRequest, map_event

__all__ = ["Processor", "Sinks"]

logger = logging.getLogger(__name__)


class Sinks(Protocol):
    """Where records go. Both coroutines return once Kafka has the record."""

    async def audit(self, record: AuditRecord) -> None: ...

    async def dead_letter(self, record: DeadLetter, key: bytes | None) -> None: ...


def _target_fields(target: KomboTarget | ComeetTarget | KomboIntegrationTarget) -> dict[str, str]:
    return target.model_dump(exclude={"vendor"})


class Processor:
    def __init__(
        self,
        settings: Settings,
        table: MutableMapping[bytes, Any],
        clients: dict[str, VendorClient],
        sinks: Sinks,
        dispatcher: OrderedDispatcher,
        *,
        before_call: Callable[[VendorRequest], Awaitable[None]] | None = None,
        on_rate_limited: Callable[[VendorRequest], None] | None = None,
    ) -> None:
        self._worker = settings.worker_id
        self._table = table
        self._clients = clients
        self._sinks = sinks
        self._dispatcher = dispatcher
        self._policy = RetryPolicy.from_settings(settings.delivery)
        self._id_limit = settings.state.event_ids_per_order
        self._max_bytes = settings.kafka.max_message_bytes
        self._before_call = before_call
        # Only the HTTP call takes one of these: an event sleeping before a retry, or
        # waiting behind an earlier event of its order, leaves them to healthy orders.
        self._http_slots = asyncio.Semaphore(settings.delivery.max_in_flight)
        self._on_rate_limited = on_rate_limited

    # -- state -----------------------------------------------------------------------------
    def _state(self, key: bytes) -> OrderState | None:
        raw = self._table.get(key)
        return None if raw is None else OrderState.model_validate(raw)

    def _store(self, key: bytes, state: OrderState) -> None:
        self._table[key] = state.model_dump(mode="json")

    # -- entry point -----------------------------------------------------------------------
    async def handle(
        self,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        ack: Callable[[], None],
    ) -> None:
        """Decide on one record and admit its job. Never raises."""
        # Raw bytes plus the parsed event and the request body: about three copies.
        size = 3 * (len(value or b"") + len(key or b""))
        try:
            event = parse_record(key, value, max_bytes=self._max_bytes)
            request = map_event(event)
        except InvalidEventError as exc:
            job = self._invalid_job(source, key, value, exc, None)
            await self._dispatcher.submit(source.partition, source.offset, None, job, ack, size)
            return
        except Exception as exc:  # a bug must not stop the stream: dead-letter and go on
            logger.exception("unexpected error while decoding offset %s", source.offset)
            error = InvalidEventError(f"internal error: {type(exc).__name__}", code="internal")
            job = self._invalid_job(source, key, value, error, None)
            await self._dispatcher.submit(source.partition, source.offset, None, job, ack, size)
            return
        assert key is not None  # parse_record checked it
        try:
            job = self._decide(source, key, value, event, request)
        except Exception as exc:
            logger.exception("unexpected error while deciding on event %s", event.event_id)
            error = InvalidEventError(f"internal error: {type(exc).__name__}", code="internal")
            job = self._invalid_job(source, key, value, error, event)
        await self._dispatcher.submit(source.partition, source.offset, key, job, ack, size)

    def _audit(self, event: Event | None, source: SourceRef, **fields: Any) -> AuditRecord:
        if event is not None:
            fields.setdefault("event_id", event.event_id)
            fields.setdefault("event_type", str(event.type))
            fields.setdefault("order_key", event.key)
            fields.setdefault("vendor", event.target.vendor)
            fields.setdefault("target", _target_fields(event.target))
        return AuditRecord(worker_id=self._worker, source=source, **fields)

    def _decide(
        self,
        source: SourceRef,
        key: bytes,
        value: bytes | None,
        event: Event,
        request: VendorRequest,
    ) -> Callable[[], Awaitable[None]]:
        previous = self._state(key)
        decision = decide(previous, event, id_limit=self._id_limit)
        if decision.verdict is Verdict.ACCEPTED:
            if decision.state != previous:
                self._store(key, decision.state)  # inside stream iteration: ordered per key
            accepted = self._audit(
                event,
                source,
                outcome=Outcome.ACCEPTED,
                terminal=False,
                action=request.action,
                reason=(
                    "seen before, not yet confirmed delivered" if decision.redelivery else None
                ),
            )
            return lambda: self._deliver_job(source, key, value, event, request, accepted)
        outcome = Outcome.DUPLICATE if decision.verdict is Verdict.DUPLICATE else Outcome.REJECTED
        record = self._audit(
            event,
            source,
            outcome=outcome,
            terminal=True,
            action=request.action,
            reason=decision.reason,
        )
        return lambda: self._sinks.audit(record)

    def _invalid_job(
        self,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        error: InvalidEventError,
        event: Event | None,
    ) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            letter = self._letter(source, key, value, event, code=error.code, reason=error.reason)
            reason = f"{error.code}: {error.reason}"
            await self._sinks.audit(
                self._audit(event, source, outcome=Outcome.INVALID, terminal=False, reason=reason)
            )
            await self._sinks.dead_letter(letter, key)
            await self._sinks.audit(
                self._audit(
                    event, source, outcome=Outcome.DEAD_LETTERED, terminal=True, reason=reason
                )
            )

        return job

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

    async def _deliver_job(
        self,
        source: SourceRef,
        key: bytes,
        value: bytes | None,
        event: Event,
        request: VendorRequest,
        accepted: AuditRecord,
    ) -> None:
        async def record(outcome: Outcome, terminal: bool, **fields: Any) -> None:
            await self._sinks.audit(
                self._audit(
                    event,
                    source,
                    outcome=outcome,
                    terminal=terminal,
                    action=request.action,
                    **fields,
                )
            )

        await self._sinks.audit(accepted)
        # Checked again here, not only at decision time: an earlier copy of this
        # event may have been delivered while this one waited behind it.
        if is_delivered(self._state(key), event.event_id):
            await record(Outcome.DUPLICATE, True, reason="event id already delivered")
            return
        last_latency_ms: list[float] = [0.0]

        async def on_attempt(report: AttemptReport) -> None:
            last_latency_ms[0] = report.latency_ms
            if report.error is not None:
                await record(
                    Outcome.FAILED,
                    False,
                    reason=report.error.message,
                    http_status=report.error.http_status,
                    vendor_code=report.error.vendor_code,
                    latency_ms=round(report.latency_ms, 3),
                    attempt=report.attempt,
                    retryable=report.will_retry,
                )

        outcome = await deliver(
            request,
            self._clients[request.vendor],
            self._policy,
            on_attempt=on_attempt,
            http_slots=self._http_slots,
            before_call=self._before_call,
            on_rate_limited=self._on_rate_limited,
        )
        if outcome.ok:
            assert outcome.result is not None
            delivered = mark_delivered(
                self._state(key),
                event.event_id,
                status=status_after(event),
                id_limit=self._id_limit,
            )
            self._store(key, delivered)
            await record(
                Outcome.DELIVERED,
                True,
                http_status=outcome.result.http_status,
                latency_ms=round(last_latency_ms[0], 3),
                attempt=outcome.attempts,
                warnings=list(outcome.result.warnings),
            )
            return
        error = outcome.error
        assert error is not None
        code = "permanent" if isinstance(error, PermanentDeliveryError) else "retries_exhausted"
        reason = (
            f"vendor refused the request: {error.message}"
            if code == "permanent"
            else f"gave up after {outcome.attempts} attempts: {error.message}"
        )
        failure = {"http_status": error.http_status, "vendor_code": error.vendor_code}
        await self._sinks.dead_letter(
            self._letter(
                source,
                key,
                value,
                event,
                code=code,
                reason=reason,
                last_error=error.message,
                attempts=outcome.attempts,
                **failure,
            ),
            key,
        )
        await record(
            Outcome.DEAD_LETTERED, True, reason=reason, attempt=outcome.attempts, **failure
        )
