"""Issue 4: retries, Retry-After, permanent failures, dead letters and replay; metrics."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from connector.sandbox import Sandboxes
from connector.settings import child_environment
from tests.e2e.harness import COMEET_TOKEN, KOMBO_KEY, Deployment, terminal_by_event
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def attempts(audit: list[dict], event_id: str) -> list[tuple[str, int | None, str | None]]:
    return [
        (r["outcome"], r["attempt"], r["vendor_code"])
        for r in audit
        if r["event_id"] == event_id and r["outcome"] in ("failed", "delivered", "dead_lettered")
    ]


async def test_transient_errors_are_retried_rate_limits_honoured(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    flaky = target("kombo", "k-flaky", "lever:FLAKY1")
    limited = target("comeet", "c-limited")
    sandboxes.kombo.faults.add_error(
        503, code="REMOTE.SERVICE_UNAVAILABLE", target="lever:FLAKY1", count=2
    )
    sandboxes.comeet.faults.add_rate_limit(retry_after_s=1, target="c-limited", count=1)
    sandboxes.kombo.set_integration("lever:FLAKY1", warnings=["Score label not supported"])
    k_event, c_event = make_event("completed", flaky), make_event("completed", limited)
    deployment.worker()
    await deployment.publish([k_event, c_event])
    audit = await deployment.audit_until_terminal([k_event["event_id"], c_event["event_id"]])

    assert attempts(audit, k_event["event_id"]) == [
        ("failed", 1, "REMOTE.SERVICE_UNAVAILABLE"),
        ("failed", 2, "REMOTE.SERVICE_UNAVAILABLE"),
        ("delivered", 3, None),
    ]
    delivered = next(r for r in audit if r["event_id"] == k_event["event_id"] and r["terminal"])
    assert delivered["warnings"] == ["Score label not supported"]
    assert [e["status_code"] for e in sandboxes.kombo.recorded()] == [503, 503, 200]
    comeet = sandboxes.comeet.recorded()
    assert [e["status_code"] for e in comeet] == [429, 204]
    assert comeet[1]["received_at"] - comeet[0]["received_at"] >= 1.0  # Retry-After: 1


async def test_permanent_failures_dead_letter_at_once(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    sandboxes.comeet.set_evaluation("c-gone", "deleted")
    sandboxes.kombo.set_integration("ashby:INACTIVE", "inactive")
    gone = make_event("completed", target("comeet", "c-gone"))
    inactive = make_event("completed", target("kombo", "k-1", "ashby:INACTIVE"))
    deployment.worker()
    await deployment.publish([gone, inactive])
    audit = await deployment.audit_until_terminal([gone["event_id"], inactive["event_id"]])

    assert terminal_by_event(audit) == {
        gone["event_id"]: ["dead_lettered"],
        inactive["event_id"]: ["dead_lettered"],
    }
    letters = await deployment.read(deployment.dlq_topic, lambda rs: len(rs) >= 2)
    by_event = {letter["event_id"]: letter for letter in letters}
    assert by_event[gone["event_id"]]["code"] == "permanent"
    assert by_event[gone["event_id"]]["http_status"] == 404
    assert by_event[gone["event_id"]]["last_error"] == "HTTP 404: Candidate was deleted"
    assert by_event[gone["event_id"]]["attempts"] == 1
    assert by_event[inactive["event_id"]]["vendor_code"] == "INTEGRATION.INACTIVE"
    assert by_event[inactive["event_id"]]["attempts"] == 1


async def test_exhausted_retries_dead_letter_then_replay_delivers(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    order = target("kombo", "k-down", "bullhorn:DOWN1")
    sandboxes.kombo.faults.add_outage(duration_s=600, target="bullhorn:DOWN1")
    final = make_event("completed", order)
    deployment.worker(CONNECTOR_DELIVERY__ON_OUTAGE="dead_letter")  # the first version's way
    await deployment.publish([final])
    audit = await deployment.audit_until_terminal([final["event_id"]])
    assert terminal_by_event(audit)[final["event_id"]] == ["dead_lettered"]
    letters = await deployment.read(deployment.dlq_topic, lambda rs: len(rs) >= 1)
    assert letters[0]["code"] == "retries_exhausted"
    assert letters[0]["attempts"] == 4
    assert letters[0]["reason"].startswith("gave up after 4 attempts: REMOTE.SERVICE_UNAVAILABLE")
    assert letters[0]["http_status"] == 503

    sandboxes.kombo.faults.clear()
    replay = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "connector.cli", "dlq", "replay", "--event-id", final["event_id"]],
        env=child_environment(deployment.env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1 dead letters" in replay.stdout
    audit = await deployment.read(
        deployment.audit_topic,
        lambda rs: (
            terminal_by_event(rs).get(final["event_id"], []) == ["dead_lettered", "delivered"]
        ),
    )
    accepted = [
        r for r in audit if r["event_id"] == final["event_id"] and r["outcome"] == "accepted"
    ]
    assert accepted[-1]["reason"] == "sent before, not confirmed: sending it again"
    assert sandboxes.kombo.recorded()[-1]["status_code"] == 200
    assert sandboxes.kombo.order("bullhorn:DOWN1", "k-down").status == "COMPLETED"


async def test_an_outage_parks_events_in_order_and_delivers_them_after(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    """Policy park (the default): nothing is dead-lettered, the order stays in order."""
    down = "bullhorn:PARK1"
    order = target("kombo", "k-park", down)
    other = target("kombo", "k-fine", "bullhorn:FINE1")
    url = {"result_url": "https://vendor.example/tests/park"}
    events = [
        make_event("opened", order, **url),
        make_event("progress", order, **url),
        make_event("completed", order),
    ]
    healthy = make_event("opened", other, **url)
    deployment.worker(
        CONNECTOR_DELIVERY__BACKOFF_INITIAL_S="0.05",
        CONNECTOR_DELIVERY__BREAKER_FAILURES="2",
        CONNECTOR_DELIVERY__BREAKER_COOL_DOWN_S="0.5",
        CONNECTOR_DELIVERY__BREAKER_MAX_COOL_DOWN_S="1",
    )
    # From now on (the worker is ready): a worker slow to start on a loaded machine once
    # outlived an outage begun before it, and nothing was parked.
    sandboxes.kombo.faults.add_outage(duration_s=6, target=down)
    await deployment.publish([*events, healthy])
    ids = [e["event_id"] for e in [*events, healthy]]
    audit = await deployment.audit_until_terminal(ids, timeout=60)
    outcomes = terminal_by_event(audit)
    assert all(outcomes[i] == ["delivered"] for i in ids), outcomes
    parked = [r for r in audit if r["outcome"] == "parked"]
    assert {r["event_id"] for r in parked} >= {e["event_id"] for e in events[1:]}
    ok = [
        r["body"]["status"]
        for r in sandboxes.kombo.recorded()
        if r["status_code"] == 200 and "k-park" in r["path"]
    ]
    assert ok[-1] == "COMPLETED" and "COMPLETED" not in ok[:-1], ok
    assert sandboxes.kombo.order(down, "k-park").status == "COMPLETED"


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_what_was_sent(deployment: Deployment, sandboxes: Sandboxes) -> None:
    sandboxes.comeet.faults.add_error(503, target="c-m0", count=1)
    orders = [target("comeet", f"c-m{i}") for i in range(5)]
    events = [make_event("completed", t) for t in orders]
    rejected = make_event("progress", orders[1])
    worker = deployment.worker()
    await deployment.publish([*events, rejected])
    await deployment.publish_raw([(b"comeet|c-m9", b"nope")])
    await deployment.audit_until_terminal([e["event_id"] for e in [*events, rejected]], invalid=1)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.web_port}") as web:
        text = (await web.get("/metrics", timeout=5)).text
        # Faust's table and router pages are off.
        for path in ("/table/", "/router/"):
            assert (await web.get(path)).status_code == 404
    assert (
        metric(text, "connector_events_total", event_type="order.completed", outcome="delivered")
        == 5
    )
    assert (
        metric(text, "connector_events_total", event_type="order.progress", outcome="rejected") == 1
    )
    assert metric(text, "connector_deliveries_total", vendor="comeet", http_status="204") == 5
    assert metric(text, "connector_deliveries_total", vendor="comeet", http_status="503") == 1
    assert metric(text, "connector_retries_total", vendor="comeet") == 1
    assert metric(text, "connector_dead_letters_total", code="not_json") == 1
    assert metric(text, "connector_delivery_latency_seconds_count", vendor="comeet") == 6
    assert "connector_in_flight_events 0.0" in text
    assert KOMBO_KEY not in text and COMEET_TOKEN not in text
