"""Audit and dead-letter records: what the connector decided and what happened.

One audit record per decision (duplicate, rejected, invalid, parked, and
accepted for a second try) and per call result (delivered, failed attempt,
dead-lettered). Each processing of an input record ends with exactly one record
with ``terminal: true``: delivered, rejected, duplicate or dead_lettered; that
is the invariant "every event ends in an audited outcome".

Audit records never carry event content (attachments, summaries) or
credentials: identity, decision, HTTP status, vendor code, timing. A
dead-letter record carries the original record bytes, so that it can be
replayed, plus why it was dead-lettered, and the input record's Kafka headers
(restored on replay).

The dead-letter topic also holds :class:`ReplayMarker` records (``kind:
"replayed"``), written by ``connector dlq replay`` after it published a letter's
original again, in the letter's own partition: ``connector dlq list`` shows a
letter with a marker as replayed, and a later replay skips it. Readers tell the
two apart by ``kind`` (letters written before it existed have none).
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from connector.domain.context import CURRENT

__all__ = [
    "DEAD_LETTER_CODES",
    "TERMINAL_OUTCOMES",
    "AuditRecord",
    "DeadLetter",
    "Header",
    "Outcome",
    "ReplayMarker",
    "SourceRef",
    "now",
]

logger = logging.getLogger(__name__)


def now() -> datetime:
    return datetime.now(UTC)


# Records written by a delivery job keep the input record's W3C trace context without
# threading it through every call: the job's task context holds it (connector.domain.context).
def _traceparent() -> str | None:
    ctx = CURRENT.get()
    return None if ctx is None else ctx.traceparent


def _tracestate() -> str | None:
    ctx = CURRENT.get()
    return None if ctx is None else ctx.tracestate


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    INVALID = "invalid"
    DELIVERED = "delivered"
    FAILED = "failed"  # one attempt failed; more may follow
    PARKED = "parked"  # moved to the parking topic while its target is down; ends there
    PAUSED = "paused"  # an operator paused a target (connector target pause)
    RESUMED = "resumed"  # an operator resumed it
    DEAD_LETTERED = "dead_lettered"


TERMINAL_OUTCOMES = frozenset(
    {Outcome.DELIVERED, Outcome.DUPLICATE, Outcome.REJECTED, Outcome.DEAD_LETTERED}
)


# Every ``DeadLetter.code`` the connector writes: the record could not be read
# (connector.domain.events.parse_record), broke the vendor contract (errors.ContractViolation),
# hit a bug (internal), was refused (permanent), ran out of tries (retries_exhausted) or
# was parked too long (expired). Known in advance, so the metrics create each code's
# series at 0 when a worker starts (connector.infra.metrics); a test keeps this list complete.
DEAD_LETTER_CODES = (
    "empty",
    "too_large",
    "not_utf8",
    "not_json",
    "too_deep",
    "not_object",
    "schema",
    "unsupported_version",
    "unknown_type",
    "key_missing",
    "key_mismatch",
    "invalid_event",
    "contract_violation",
    "unknown_vendor",
    "internal",
    "permanent",
    "retries_exhausted",
    "expired",
)


class SourceRef(BaseModel):
    """Where the input record sat in Kafka."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class AuditRecord(BaseModel):
    """The audit topic's schema (documented in ``topics/audit.schema.json``)."""

    model_config = ConfigDict(frozen=True)

    time: datetime = Field(default_factory=now)
    worker_id: str
    outcome: Outcome
    terminal: bool
    event_id: str | None = None
    event_type: str | None = None
    order_key: str | None = None
    vendor: str | None = None
    target: dict[str, str] | None = None
    action: str | None = None
    reason: str | None = None
    http_status: int | None = None
    vendor_code: str | None = None
    latency_ms: float | None = None
    attempt: int | None = None
    retryable: bool | None = None
    warnings: list[str] = Field(default_factory=list)
    source: SourceRef | None = None
    # Fields of the event this connector's schema does not name: accepted, never sent
    # to a vendor, listed here so the producer's newer schema is visible (README
    # "Compatibility rules"). Paths like ``target.tenant``; at most 20, then "…".
    unknown_fields: list[str] = Field(default_factory=list)
    traceparent: str | None = Field(default_factory=_traceparent)  # W3C, from the input record
    tracestate: str | None = Field(default_factory=_tracestate)


class Header(BaseModel):
    """One Kafka record header: a name and its value as base64 (``null``: no value)."""

    model_config = ConfigDict(frozen=True)

    key: str
    value_b64: str | None = None

    @classmethod
    def of(cls, headers: Any) -> list[Header]:
        """From aiokafka's / Faust's ``[(name, bytes), ...]`` (or a mapping)."""
        if not headers:
            return []
        items = headers.items() if isinstance(headers, dict) else headers
        return [
            cls(key=str(name), value_b64=None if value is None else DeadLetter.encode(value))
            for name, value in items
        ]

    def pair(self) -> tuple[str, bytes]:
        # aiokafka sends no null header values; an absent value goes back as empty.
        return self.key, b"" if self.value_b64 is None else base64.b64decode(self.value_b64)


class DeadLetter(BaseModel):
    """The dead-letter topic's schema: the original record and why it ended here."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["dead_letter"] = "dead_letter"
    time: datetime = Field(default_factory=now)
    worker_id: str
    code: str  # invalid_event, contract_violation, permanent, retries_exhausted, ...
    reason: str
    last_error: str | None = None
    attempts: int = 0
    http_status: int | None = None
    vendor_code: str | None = None
    event_id: str | None = None
    order_key: str | None = None
    source: SourceRef | None = None
    original_key_b64: str | None = None
    original_value_b64: str | None = None
    # The input record's headers, in order (restored by ``connector dlq replay``).
    headers: list[Header] = Field(default_factory=list)
    traceparent: str | None = Field(default_factory=_traceparent)  # W3C, from the input record
    tracestate: str | None = Field(default_factory=_tracestate)

    @staticmethod
    def encode(raw: bytes | None) -> str | None:
        return None if raw is None else base64.b64encode(raw).decode("ascii")

    def original(self) -> tuple[bytes | None, bytes | None]:
        def decode(text: str | None) -> bytes | None:
            return None if text is None else base64.b64decode(text)

        return decode(self.original_key_b64), decode(self.original_value_b64)


class ReplayMarker(BaseModel):
    """On the dead-letter topic, next to its letter: that letter was published again.

    Written by ``connector dlq replay`` once the broker has the replayed record, to
    the letter's own partition (after the letter, in offset order).
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["replayed"] = "replayed"
    time: datetime = Field(default_factory=now)
    by: str  # who replayed it: user@host of the operator's CLI
    letter: SourceRef  # the dead letter's own position on the dead-letter topic
    replayed_to: SourceRef  # where the original was published again
    code: str
    event_id: str | None = None
    order_key: str | None = None
    forced: bool = False  # replayed with --force although its code is not replayable
