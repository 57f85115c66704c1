"""The audit and dead-letter records of one event, built (never sent) here.

:class:`Job` is what one event's job knows; :class:`RecordBuilder` turns what
happened to it into :class:`~connector.domain.audit.AuditRecord` and
:class:`~connector.domain.audit.DeadLetter` values, and :class:`Ending` is the pair that
ends an event (its terminal audit record, and the dead letter when there is one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector.domain.audit import AuditRecord, DeadLetter, Header, Outcome, SourceRef
from connector.domain.events import Event, order_key_of_record
from connector.errors import DeliveryError, PermanentDeliveryError
from connector.pipeline.delivery import Lease
from connector.vendors import VendorRequest

__all__ = ["Ending", "Job", "RecordBuilder"]


@dataclass(frozen=True, slots=True, weakref_slot=True, eq=False)
class Job:
    """One event being processed: where it came from and what it asks for."""

    lease: Lease
    source: SourceRef  # the input record (for a parked event: where it was first read)
    key: bytes
    value: bytes | None
    event: Event
    request: VendorRequest
    parked_at: float | None = None  # a parked event: when it was parked
    headers: tuple[tuple[str, bytes], ...] = ()  # the input record's, for its dead letter

    @property
    def partition(self) -> int:
        """The partition the job's record was read from: where the order's state lives."""
        return self.lease.partition


@dataclass(frozen=True, slots=True)
class Ending:
    """What ends an event: its terminal audit record, after its dead letter if any."""

    audit: AuditRecord
    letter: DeadLetter | None = None
    letter_key: bytes | None = None


def _target_fields(event: Event) -> dict[str, str]:
    return event.target.model_dump(exclude={"vendor"})


class RecordBuilder:
    """Builds a worker's audit records and dead letters."""

    def __init__(self, worker_id: str) -> None:
        self._worker = worker_id

    def audit(self, event: Event | None, source: SourceRef, **fields: Any) -> AuditRecord:
        if event is not None:
            fields.setdefault("event_id", event.event_id)
            fields.setdefault("event_type", str(event.type))
            fields.setdefault("order_key", event.key)
            fields.setdefault("vendor", event.target.vendor)
            fields.setdefault("target", _target_fields(event))
            fields.setdefault("unknown_fields", list(event.unknown_fields))
        return AuditRecord(worker_id=self._worker, source=source, **fields)

    def of(self, job: Job, outcome: Outcome, terminal: bool, **fields: Any) -> AuditRecord:
        return self.audit(
            job.event,
            job.source,
            outcome=outcome,
            terminal=terminal,
            action=job.request.action,
            **fields,
        )

    def failed(
        self,
        job: Job,
        error: DeliveryError,
        latency_ms: float,
        retryable: bool,
        *,
        attempt: int | None = None,
    ) -> AuditRecord:
        """One failed attempt."""
        return self.of(
            job,
            Outcome.FAILED,
            False,
            reason=error.message,
            http_status=error.http_status,
            vendor_code=error.vendor_code,
            latency_ms=round(latency_ms, 3),
            attempt=attempt,
            retryable=retryable,
        )

    def letter(
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
            # An unreadable record's Kafka key, when it is an order key's form: the letter
            # is then found by the order (dlq list, order show).
            order_key=event.key if event else order_key_of_record(key),
            source=source,
            original_key_b64=DeadLetter.encode(key),
            original_value_b64=DeadLetter.encode(value),
            **fields,
        )

    def dead_lettered(self, job: Job, code: str, reason: str, **fields: Any) -> Ending:
        """The event ends as a dead letter ``code`` (the audit record says why)."""
        failure = {k: fields[k] for k in ("http_status", "vendor_code") if k in fields}
        attempt = fields.get("attempts")
        audit = self.of(job, Outcome.DEAD_LETTERED, True, reason=reason, attempt=attempt, **failure)
        letter = self.letter(
            job.source,
            job.key,
            job.value,
            job.event,
            code=code,
            reason=reason,
            headers=Header.of(job.headers),
            **fields,
        )
        return Ending(audit, letter, job.key)

    def gave_up(self, job: Job, error: DeliveryError, attempts: int) -> Ending:
        """Refused by the vendor, or retries ran out."""
        code = "permanent" if isinstance(error, PermanentDeliveryError) else "retries_exhausted"
        reason = (
            f"vendor refused the request: {error.message}"
            if code == "permanent"
            else f"gave up after {attempts} attempts: {error.message}"
        )
        return self.dead_lettered(
            job,
            code,
            reason,
            last_error=error.message,
            attempts=attempts,
            http_status=error.http_status,
            vendor_code=error.vendor_code,
        )
