"""W3C trace context through the connector, and optional OpenTelemetry spans.

* **Propagation, always on.** ``traceparent`` / ``tracestate`` are read from the
  input record's Kafka headers (:func:`event_context`, one header scan of a
  usually empty list), sent on the vendor call (:func:`outgoing_headers`,
  used by :func:`connector.vendors.base.send_http`), kept in the audit and
  dead-letter records, and carried along when an event is parked.
* **Spans, only when OpenTelemetry is configured** through its standard
  variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
  or ``OTEL_TRACES_EXPORTER``; ``OTEL_SDK_DISABLED=true`` turns it off): one
  span per delivery job, child of the record's ``traceparent``, and the vendor
  call then carries the span's own context. The SDK is an optional dependency
  (``pip install 'assessment-connector[otel]'``); it is imported only then.

Unconfigured, the cost per event is the header scan, one :class:`EventContext`
and one context-variable set (measured in ``tests/core/test_tracing.py``).
"""

from __future__ import annotations

import atexit
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from connector.domain.context import CURRENT, EventContext

__all__ = [
    "TRACE_HEADERS",
    "configure",
    "enabled",
    "event_context",
    "extract",
    "finish",
    "otel_requested",
    "outgoing_headers",
    "start",
]

logger = logging.getLogger(__name__)

TRACE_HEADERS = ("traceparent", "tracestate")

# version-traceid-parentid-flags; version ff is invalid, all-zero ids are invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# tracestate travels on to the vendor as an HTTP header: visible ASCII only, bounded.
_TRACESTATE = re.compile(r"[\x20-\x7e]{1,512}")

_tracer: Any = None  # an OpenTelemetry tracer once configure() enabled spans


def _text(raw: object) -> str | None:
    if isinstance(raw, bytes | bytearray):
        try:
            return bytes(raw).decode("ascii").strip()
        except UnicodeDecodeError:
            return None
    return raw.strip() if isinstance(raw, str) else None


def valid_traceparent(value: str | None) -> str | None:
    """``value`` if it is a W3C traceparent this connector may forward, else None."""
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value.lower())
    if match is None:
        return None
    version, trace_id, parent_id, _, rest = match.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    if version == "00" and rest:
        return None  # version 00 has exactly four fields
    return match.group(0)


def extract(
    headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None,
) -> tuple[str | None, str | None]:
    """The record's (traceparent, tracestate); (None, None) when absent or malformed."""
    if not headers:
        return None, None
    items = headers.items() if isinstance(headers, Mapping) else headers
    parent = state = None
    for name, raw in items:
        if name == "traceparent":
            parent = valid_traceparent(_text(raw))
        elif name == "tracestate":
            state = _text(raw)
    if parent is None:
        return None, None  # a tracestate without its traceparent means nothing (W3C)
    if state is not None and not _TRACESTATE.fullmatch(state):
        state = None
    return parent, state


def event_context(
    topic: str,
    partition: int,
    offset: int,
    headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None,
    *,
    event_id: str | None = None,
    order_key: str | None = None,
    vendor: str | None = None,
    occurred_at: float | None = None,
) -> EventContext:
    parent, state = extract(headers)
    return EventContext(
        topic,
        partition,
        offset,
        event_id=event_id,
        order_key=order_key,
        vendor=vendor,
        occurred_at=occurred_at,
        traceparent=parent,
        tracestate=state,
    )


def outgoing_headers() -> dict[str, str] | None:
    """The trace headers for a vendor call made by the current job, if it has any."""
    ctx = CURRENT.get()
    return None if ctx is None else ctx.outgoing


def enabled() -> bool:
    return _tracer is not None


def start(ctx: EventContext) -> None:
    """The job's first step: make ``ctx`` current, and open its span if tracing is on."""
    CURRENT.set(ctx)
    if _tracer is not None:
        _start_span(ctx)


def finish(ctx: EventContext) -> None:
    """The job's last step: end its span (nothing to do without one)."""
    if ctx.span is not None:
        _end_span(ctx)


# -- OpenTelemetry (optional) -----------------------------------------------------------------
def otel_requested(env: Mapping[str, str]) -> bool:
    """Whether OpenTelemetry's standard variables ask for exported traces."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(exporter or endpoint)


def configure(env: Mapping[str, str]) -> bool:
    """Enable spans when the OTEL_* variables ask for them; True when enabled.

    ``env``: the OTEL_* variables (:func:`connector.settings.otel_environment`).
    The SDK's own exporters read the rest of them (endpoint, headers, protocol).
    """
    global _tracer
    if not otel_requested(env):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        logger.warning(
            "OpenTelemetry is configured (OTEL_* variables) but its SDK is not installed: "
            "no spans are exported; install the connector's 'otel' extra"
        )
        return False
    names = [
        n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if n.strip()
    ]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp_exporter(env))
        else:
            logger.warning("OTEL_TRACES_EXPORTER=%s is not supported here; ignored", name)
    if not exporters:
        return False
    service = env.get("OTEL_SERVICE_NAME") or "assessment-connector"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    # Spans still buffered are exported when the worker exits.
    atexit.register(provider.shutdown)
    _tracer = provider.get_tracer("connector")
    trace.set_tracer_provider(provider)
    logger.info("OpenTelemetry spans enabled (%s)", ", ".join(names))
    return True


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol.startswith("grpc"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def disable() -> None:
    """Spans off again (tests)."""
    global _tracer
    _tracer = None


def _start_span(ctx: EventContext) -> None:
    from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = None
    if ctx.traceparent is not None:
        carrier = {"traceparent": ctx.traceparent}
        if ctx.tracestate:
            carrier["tracestate"] = ctx.tracestate
        parent = TraceContextTextMapPropagator().extract(carrier)
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": ctx.topic,
        "messaging.destination.partition.id": str(ctx.partition),
        "messaging.kafka.offset": ctx.offset,
    }
    if ctx.event_id is not None:
        attributes["connector.event_id"] = ctx.event_id
    if ctx.order_key is not None:
        attributes["connector.order_key"] = ctx.order_key
    if ctx.vendor is not None:
        attributes["connector.vendor"] = ctx.vendor
    span = _tracer.start_span(
        f"deliver {ctx.vendor or 'invalid'}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )
    ctx.span = span
    sc = span.get_span_context()
    # The vendor sees this span as its parent; the record's own tracestate goes along.
    outgoing = {
        "traceparent": f"00-{format_trace_id(sc.trace_id)}-{format_span_id(sc.span_id)}-"
        f"{int(sc.trace_flags):02x}"
    }
    if ctx.tracestate:
        outgoing["tracestate"] = ctx.tracestate
    ctx.outgoing = outgoing


def _end_span(ctx: EventContext) -> None:
    from opentelemetry.trace import Status, StatusCode

    span: Any = ctx.span
    ctx.span = None
    if ctx.outcome is not None:
        span.set_attribute("connector.outcome", ctx.outcome)
        if ctx.outcome == "dead_lettered":
            span.set_status(Status(StatusCode.ERROR, "dead-lettered"))
    span.end()
