"""Issue 13 items 3-6 on a real worker: /metrics, log context, trace context, spans, check.

One worker against the session broker and the sandboxes, with OpenTelemetry
pointed at an OTLP/HTTP receiver run here. A Kombo integration fails once and
its circuit opens (threshold 1), so its event parks and is delivered from the
parking topic: that path logs inside the event's job, and sends the vendor two
calls with the record's trace id.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from connector.local.worker import free_port
from connector.sandbox import Sandboxes
from connector.settings import child_environment
from tests.e2e.harness import Deployment
from tests.factories import make_event, record, target
from tests.test_deploy import alert_queries, dashboard_queries, family, metric_names

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


class OtlpReceiver:
    """Collects OTLP/HTTP trace exports (protobuf) sent to /v1/traces."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def spans(self) -> list[Any]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        spans = []
        for body in self.bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    spans.extend(scope.spans)
        return spans


@pytest.fixture
async def otlp() -> AsyncIterator[OtlpReceiver]:
    pytest.importorskip("opentelemetry.sdk")
    receiver = OtlpReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def exposed_names(text: str) -> set[str]:
    """Series and families a /metrics page declares (a family without samples counts)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


async def connector_check(env: dict[str, str]) -> tuple[int, str]:
    """Run ``connector check``; the sandboxes answer from this event loop meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector.cli",
        "check",
        env=child_environment(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_live_worker_shows_metrics_log_context_traces_and_spans(
    deployment: Deployment, sandboxes: Sandboxes, otlp: OtlpReceiver
) -> None:
    flaky = target("kombo", "k-obs", "lever:OBS1")
    sandboxes.kombo.faults.add_error(
        503, code="REMOTE.SERVICE_UNAVAILABLE", target="lever:OBS1", count=1
    )
    traced = make_event("completed", flaky)
    plain = make_event("opened", target("comeet", "c-obs"))
    worker = deployment.worker(
        CONNECTOR_DELIVERY__BREAKER_FAILURES="1",
        CONNECTOR_DELIVERY__BREAKER_COOL_DOWN_S="0.5",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_SERVICE_NAME="connector-e2e",
    )
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all")
    await producer.start()
    try:
        key, value = record(traced)
        headers = [("traceparent", TRACEPARENT.encode()), ("tracestate", b"vendor=abc")]
        sent = await (await producer.send(deployment.events_topic, value, key=key, headers=headers))
        await producer.send_and_wait(
            deployment.events_topic, record(plain)[1], key=record(plain)[0]
        )
        await producer.send_and_wait(
            deployment.events_topic, b"not json", key=b"k", headers=headers
        )
    finally:
        await producer.stop()
    audit = await deployment.audit_until_terminal(
        [traced["event_id"], plain["event_id"]], invalid=1, timeout=90
    )

    # -- trace context: audit records, the vendor calls, dead letters --------------------------
    terminal = {r["event_id"]: r for r in audit if r["terminal"]}
    assert terminal[traced["event_id"]]["outcome"] == "delivered"
    assert any(r["outcome"] == "parked" for r in audit if r["event_id"] == traced["event_id"])
    assert terminal[traced["event_id"]]["traceparent"] == TRACEPARENT
    assert terminal[traced["event_id"]]["tracestate"] == "vendor=abc"
    assert terminal[plain["event_id"]]["traceparent"] is None
    calls = [e for e in sandboxes.kombo.recorded() if e["path"].endswith("/k-obs/result")]
    assert [c["status_code"] for c in calls] == [503, 200]
    for call in calls:
        headers = {k.lower(): v for k, v in call["headers"].items()}
        _, trace_id, parent_id, _ = headers["traceparent"].split("-")
        assert trace_id == TRACE_ID  # the producer's trace ...
        assert parent_id != TRACEPARENT.split("-")[2]  # ... under the delivery span
        assert headers["tracestate"] == "vendor=abc"
    letters = await deployment.read(deployment.dlq_topic, lambda rs: len(rs) >= 1)
    assert letters[0]["traceparent"] == TRACEPARENT

    # -- spans: one per delivery job, in the producer's trace ---------------------------------
    for _ in range(75):  # the SDK exports every 200 ms here (OTEL_BSP_SCHEDULE_DELAY)
        if len(otlp.spans()) >= 4:
            break
        await asyncio.sleep(0.2)
    spans = otlp.spans()
    ours = [s for s in spans if s.trace_id.hex() == TRACE_ID]
    # The traced event twice (parked from the input, delivered from the parking topic)
    # and the unreadable record.
    assert len(ours) == 3, [s.name for s in spans]
    outcomes = sorted(
        a.value.string_value for s in ours for a in s.attributes if a.key == "connector.outcome"
    )
    assert outcomes == ["dead_lettered", "delivered"]
    assert {s.parent_span_id.hex() for s in ours} == {TRACEPARENT.split("-")[2]}
    assert any(s.name == "deliver comeet" for s in spans)

    # -- logs: lines written inside the event's jobs name it -----------------------------------
    lines = [
        json.loads(line) for line in worker.log_path.read_text().splitlines() if line[:1] == "{"
    ]
    about = [line for line in lines if line.get("event_id") == traced["event_id"]]
    messages = " | ".join(line["message"] for line in about)
    assert "circuit open" in messages and "circuit closed" in messages, messages
    for line in about:
        assert line["order_key"] == "kombo|lever:OBS1|k-obs"
        assert line["partition"] == sent.partition
        assert line["offset"] == sent.offset  # the input record, also for the parked job
        assert line["trace_id"] == TRACE_ID

    # -- metrics: everything the dashboard and the alert rules use exists ---------------------
    async with httpx.AsyncClient(timeout=10) as http:
        page = (await http.get(f"http://127.0.0.1:{worker.web_port}/metrics")).text
    exposed = exposed_names(page)
    wanted = metric_names(dashboard_queries()) | metric_names(alert_queries())
    missing = sorted(n for n in wanted if n not in exposed and family(n) not in exposed)
    assert not missing, missing
    assert 'connector_event_delivery_seconds_count{vendor="kombo"} 1.0' in page
    assert 'connector_events_total{event_type="order.completed",outcome="parked"} 1.0' in page
    assert "connector_ready 1.0" in page
    lag = [line for line in page.splitlines() if line.startswith("connector_consumer_lag{")]
    assert any(f'topic="{deployment.events_topic}"' in line for line in lag), lag

    # -- connector check against the same broker, topics and sandboxes ------------------------
    env = dict(deployment.env)
    code, out = await connector_check(env)
    assert code == 0, out
    assert "kombo       ok    CONNECTOR_KOMBO__API_KEY accepted" in out
    assert "partitions  ok" in out and "topics      ok" in out
    code, out = await connector_check(
        {
            **env,
            "CONNECTOR_KOMBO__API_KEY": "wrong-key-0000",
            "CONNECTOR_TOPICS__EVENTS": deployment.events_topic + "-typo",
            "CONNECTOR_DELIVERY__MAX_INFLIGHT": "3",
        }
    )
    assert code == 2, out
    assert "did you mean CONNECTOR_DELIVERY__MAX_IN_FLIGHT?" in out
    assert f"{deployment.events_topic}-typo (CONNECTOR_TOPICS__EVENTS)" in out
    assert "kombo       FAIL  CONNECTOR_KOMBO__API_KEY: rejected" in out
    assert "wrong-key-0000" not in out
