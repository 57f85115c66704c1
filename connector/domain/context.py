"""The event a task is working on, for logs, metrics, traces and audit records.

Every delivery job runs in its own asyncio task; the job's first step sets
:data:`CURRENT` to its :class:`EventContext`. A task owns a copy of the context
it was created in, so the value is the job's own for its whole life (retries,
backoffs, the vendor call, the audit writes) and never leaks into another
job; nothing has to reset it.

Readers: :mod:`connector.infra.logs` adds ``event_id``, ``order_key``, ``partition``
and ``offset`` to every log line; :mod:`connector.infra.metrics` measures the time
from ``occurred_at`` to the vendor's answer; :mod:`connector.infra.tracing` sends the
record's W3C trace context on the vendor call; :mod:`connector.domain.audit` keeps it
in audit and dead-letter records.

This module imports nothing of the connector: everything may import it.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

__all__ = ["CURRENT", "EventContext", "current"]

logger = logging.getLogger(__name__)


class EventContext:
    """One input record being processed: one object per record, made when it is admitted.

    Mutable on purpose: the tracing hook fills ``outgoing`` (the trace headers
    for the vendor call) and ``span`` once a span is started, and the metrics
    hook records the terminal ``outcome`` for the span.
    """

    __slots__ = (
        "event_id",
        "occurred_at",
        "offset",
        "order_key",
        "outcome",
        "outgoing",
        "partition",
        "span",
        "topic",
        "traceparent",
        "tracestate",
        "vendor",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        event_id: str | None = None,
        order_key: str | None = None,
        vendor: str | None = None,
        occurred_at: float | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.event_id = event_id
        self.order_key = order_key
        self.vendor = vendor
        self.occurred_at = occurred_at  # seconds since the epoch (the event's own time)
        self.traceparent = traceparent  # as read from the input record, validated
        self.tracestate = tracestate
        # Headers for the vendor call: the input's trace context, or the delivery span's.
        self.outgoing: dict[str, str] | None = None
        if traceparent is not None:
            self.outgoing = {"traceparent": traceparent}
            if tracestate:
                self.outgoing["tracestate"] = tracestate
        self.span: object | None = None
        self.outcome: str | None = None


CURRENT: ContextVar[EventContext | None] = ContextVar("connector_event", default=None)


def current() -> EventContext | None:
    return CURRENT.get()
