"""Event context in logs, W3C trace context end to end through the processor, spans, cost.

The processor runs with in-memory stand-ins (tests/core/test_processor.py); the
vendor call goes through the real ``send_http`` on an httpx mock transport, so
the header on the wire is the one checked.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connector.domain.audit import SourceRef
from connector.domain.context import CURRENT, EventContext
from connector.infra import tracing
from connector.infra.logs import EventContextFilter, JsonFormatter, RedactingFilter, TextFormatter
from connector.infra.metrics import Metrics
from connector.pipeline import PARKED_FROM_HEADER, Processor
from connector.pipeline.delivery import OrderedDispatcher
from connector.settings import Settings
from connector.vendors.base import CallResult, VendorRequest, send_http
from tests.core.test_processor import Sinks, Store
from tests.factories import make_event, record, target

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
SECRET = "comeet-secret-token-0123456789"


class WireClient:
    """A vendor client that sends through the real send_http and keeps what went out."""

    vendor = "comeet"

    def __init__(self, status: int = 204) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status

        def answer(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            logging.getLogger("test.vendor").warning("vendor called with %s", SECRET)
            return httpx.Response(self.status)

        self.http = httpx.AsyncClient(transport=httpx.MockTransport(answer))

    async def send(self, request: VendorRequest) -> CallResult:
        response = await send_http(
            self.http,
            request.method,
            "http://vendor.test" + request.path,
            headers={"Authorization": f"Bearer {SECRET}"},
            body=request.body,
            params=request.params,
        )
        if response.status_code >= 400:
            from connector.errors import PermanentDeliveryError

            raise PermanentDeliveryError(f"HTTP {response.status_code}", http_status=404)
        return CallResult(response.status_code)


class MetricSinks(Sinks):
    """The test sinks, observed by the real metrics the way the Kafka sinks are."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics = Metrics()

    async def audit(self, rec: Any) -> None:
        await super().audit(rec)
        self.metrics.observe_audit(rec)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(EventContextFilter())
    handler.addFilter(RedactingFilter([SECRET]))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def build(status: int = 204) -> tuple[Processor, MetricSinks, WireClient, OrderedDispatcher]:
    settings = Settings(
        worker_id="w-trace",
        delivery={"backoff_initial_s": 0.01, "backoff_max_s": 0.02, "max_attempts": 2},
    )
    sinks, client = MetricSinks(), WireClient(status)
    dispatcher = OrderedDispatcher(100)
    processor = Processor(settings, Store(), {"comeet": client}, sinks, dispatcher)
    return processor, sinks, client, dispatcher


async def handle(processor: Processor, event: dict[str, Any], headers: Any, offset: int) -> None:
    key, value = record(event)
    source = SourceRef(topic="events", partition=3, offset=offset)
    await processor.handle(source, key, value, lambda: None, headers=headers)


# -- extraction --------------------------------------------------------------------------------
def test_extract_reads_valid_w3c_headers_only() -> None:
    headers = [("x", b"1"), ("traceparent", TRACEPARENT.encode()), ("tracestate", TRACESTATE)]
    assert tracing.extract(headers) == (TRACEPARENT, TRACESTATE)
    assert tracing.extract({"traceparent": TRACEPARENT.upper()}) == (TRACEPARENT, None)
    assert tracing.extract(None) == (None, None)
    assert tracing.extract([]) == (None, None)
    bad = [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has 4 fields
        "not a traceparent\r\nX-Injected: 1",
    ]
    for value in bad:
        assert tracing.extract([("traceparent", value.encode())]) == (None, None), value
    # A tracestate alone means nothing; one HTTP cannot carry is dropped.
    assert tracing.extract([("tracestate", b"a=b")]) == (None, None)
    assert tracing.extract([("traceparent", TRACEPARENT), ("tracestate", "a=b\nc")]) == (
        TRACEPARENT,
        None,
    )
    # A future version may carry more fields; its first four are forwarded as read.
    future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"
    assert tracing.extract([("traceparent", future)])[0] == future


# -- through the processor ---------------------------------------------------------------------
async def test_trace_context_reaches_the_vendor_audit_and_logs(log_lines: io.StringIO) -> None:
    processor, sinks, client, dispatcher = build()
    traced = make_event("opened", target("comeet", "c-traced"))
    plain = make_event("opened", target("comeet", "c-plain"))
    headers = [("traceparent", TRACEPARENT.encode()), ("tracestate", TRACESTATE.encode())]
    await handle(processor, traced, headers, offset=41)
    await handle(processor, plain, None, offset=42)
    await dispatcher.join()

    sent = {r.url.params["evaluation_id"]: r.headers for r in client.requests}
    assert sent["c-traced"]["traceparent"] == TRACEPARENT
    assert sent["c-traced"]["tracestate"] == TRACESTATE
    assert "traceparent" not in sent["c-plain"]
    by_event = {r.event_id: r for r in sinks.audits}
    assert by_event[traced["event_id"]].traceparent == TRACEPARENT
    assert by_event[traced["event_id"]].tracestate == TRACESTATE
    assert by_event[plain["event_id"]].traceparent is None

    # Logs written inside the jobs (here by the vendor) name the event and its record.
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    vendor_lines = {line["event_id"]: line for line in lines if line["logger"] == "test.vendor"}
    assert vendor_lines[traced["event_id"]]["order_key"] == "comeet|c-traced"
    assert vendor_lines[traced["event_id"]]["partition"] == 3
    assert vendor_lines[traced["event_id"]]["offset"] == 41
    assert vendor_lines[traced["event_id"]]["trace_id"] == TRACEPARENT[3:35]
    assert vendor_lines[plain["event_id"]]["offset"] == 42
    assert "trace_id" not in vendor_lines[plain["event_id"]]
    assert SECRET not in log_lines.getvalue()  # still redacted

    # occurred_at (2026-11-23) to the answer: one observation per delivered event.
    families = {m.name: m for m in sinks.metrics.registry.collect()}
    samples = families["connector_event_delivery_seconds"].samples
    count = next(
        s.value for s in samples if s.name.endswith("_count") and s.labels["vendor"] == "comeet"
    )
    assert count == 2


async def test_dead_letters_and_invalid_records_keep_the_trace_context(
    log_lines: io.StringIO,
) -> None:
    processor, sinks, _, dispatcher = build(status=404)
    event = make_event("opened", target("comeet", "c-refused"))
    headers = [("traceparent", TRACEPARENT.encode())]
    await handle(processor, event, headers, offset=7)
    await processor.handle(
        SourceRef(topic="events", partition=3, offset=8), b"k", b"not json", lambda: None,
        headers=headers,
    )  # fmt: skip
    await dispatcher.join()
    assert [letter.traceparent for letter in sinks.letters] == [TRACEPARENT, TRACEPARENT]
    assert all(r.traceparent == TRACEPARENT for r in sinks.audits)


async def test_a_parked_record_carries_the_trace_context() -> None:
    settings = Settings(worker_id="w", delivery={"breaker_failures": 1})
    parked: list[list[tuple[str, bytes]]] = []

    class ParkSinks(Sinks):
        async def park(self, key: bytes, value: bytes, partition: int, headers: Any) -> None:
            parked.append(headers)

    processor = Processor(
        settings, Store(), {"comeet": WireClient()}, ParkSinks(), OrderedDispatcher(10)
    )
    breaker = processor.breakers["comeet"]
    breaker.on_failure()  # open: the event parks
    event = make_event("opened", target("comeet", "c-park"))
    await handle(processor, event, [("traceparent", TRACEPARENT.encode())], offset=1)
    await processor._dispatcher.join()
    names = dict(parked[0])
    assert PARKED_FROM_HEADER in names
    assert names["traceparent"] == TRACEPARENT.encode()
    # Read back from the parking topic, the headers give the same context.
    assert tracing.extract(parked[0]) == (TRACEPARENT, None)


def test_text_lines_carry_the_event_fields_before_a_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    handler.addFilter(EventContextFilter())
    log = logging.getLogger("test.text")
    log.handlers[:] = [handler]
    log.propagate = False
    token = CURRENT.set(EventContext("events", 2, 9, event_id="e-9", order_key="comeet|x"))
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    finally:
        CURRENT.reset(token)
    first = stream.getvalue().splitlines()[0]
    assert first.endswith("failed [event_id=e-9 order_key=comeet|x partition=2 offset=9]")


# -- spans (OpenTelemetry is configured) --------------------------------------------------------
async def test_a_span_per_delivery_child_of_the_record_and_parent_of_the_call() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing._tracer = provider.get_tracer("test")
    try:
        processor, _, client, dispatcher = build()
        traced = make_event("opened", target("comeet", "c-span"))
        untraced = make_event("opened", target("comeet", "c-root"))
        await handle(processor, traced, [("traceparent", TRACEPARENT.encode())], offset=1)
        await handle(processor, untraced, None, offset=2)
        await dispatcher.join()
    finally:
        tracing.disable()
    spans = {s.attributes["connector.event_id"]: s for s in exporter.get_finished_spans()}
    assert len(spans) == 2
    span = spans[traced["event_id"]]
    assert format(span.context.trace_id, "032x") == TRACEPARENT[3:35]
    assert span.parent is not None and format(span.parent.span_id, "016x") == TRACEPARENT[36:52]
    assert span.attributes["connector.outcome"] == "delivered"
    assert span.attributes["messaging.kafka.offset"] == 1
    sent = {r.url.params["evaluation_id"]: r.headers["traceparent"] for r in client.requests}
    assert sent["c-span"] == f"00-{TRACEPARENT[3:35]}-{format(span.context.span_id, '016x')}-01"
    root = spans[untraced["event_id"]]
    assert root.parent is None  # a record without trace context starts a trace
    assert sent["c-root"].split("-")[1] == format(root.context.trace_id, "032x")


def test_otel_is_requested_only_by_its_standard_variables() -> None:
    assert not tracing.otel_requested({})
    assert tracing.otel_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.otel_requested({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.otel_requested({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.otel_requested(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.configure({})
    assert not tracing.enabled()


# -- cost -------------------------------------------------------------------------------------
def test_the_unconfigured_hook_costs_microseconds_per_event() -> None:
    """What tracing adds per event when OpenTelemetry is off: build the context, set it, end.

    Measured against the same loop without it; the bound is loose for a shared
    2-core machine, the printed number is the measurement.
    """
    assert not tracing.enabled()
    headers = [("content-type", b"application/json")]  # a record with an unrelated header
    n = 20_000

    def run(with_hook: bool) -> float:
        t0 = time.perf_counter()
        for offset in range(n):
            if with_hook:
                ctx = tracing.event_context(
                    "events",
                    1,
                    offset,
                    headers,
                    event_id="e",
                    order_key="comeet|x",
                    vendor="comeet",
                    occurred_at=1.0,
                )
                tracing.start(ctx)
                tracing.outgoing_headers()
                tracing.finish(ctx)
        return time.perf_counter() - t0

    token = CURRENT.set(None)
    try:
        base = min(run(False) for _ in range(3))
        hooked = min(run(True) for _ in range(3))
    finally:
        CURRENT.reset(token)
    per_event_us = (hooked - base) / n * 1e6
    print(f"tracing hook, unconfigured: {per_event_us:.2f} us per event")
    # Faust alone costs about 1 ms of CPU per event here (README): under 1% of that.
    assert per_event_us < 10
