"""The intake never waits for room: a full dispatcher pauses its own partitions only."""

from __future__ import annotations

import time

import pytest

from connector.sandbox import Sandboxes
from tests.e2e.harness import Deployment, terminal_by_event
from tests.e2e.test_outage_policies import FAST, URL
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


async def test_a_full_parking_dispatcher_does_not_hold_back_other_events(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    """Parked events waiting for a down target fill the parking dispatcher; the events
    topic goes on. (When the intake waited for room in the parking dispatcher, the one
    fetch loop of the worker stopped with it, and every target's events with it.)"""
    down = "bullhorn:FULL1"
    # The outage lasts until the healthy events are checked, however long parking takes.
    outage = sandboxes.kombo.faults.add_outage(duration_s=600, target=down)
    deployment.worker(CONNECTOR_DELIVERY__MAX_PENDING_PARKED="2", **FAST)
    parked = [make_event("opened", target("kombo", f"k-full-{i}", down), **URL) for i in range(8)]
    await deployment.publish(parked)
    parked_ids = {e["event_id"] for e in parked}
    await deployment.read(
        deployment.audit_topic,
        lambda records: len({r["event_id"] for r in records if r["outcome"] == "parked"}) >= 6,
        timeout=60,
    )

    started = time.monotonic()
    healthy = [make_event("completed", target("comeet", f"c-full-{i}")) for i in range(5)]
    await deployment.publish(healthy)
    audit = await deployment.audit_until_terminal([e["event_id"] for e in healthy], timeout=60)
    took = time.monotonic() - started
    assert took < 15, f"healthy events took {took:.1f} s behind a full parking dispatcher"
    assert all(terminal_by_event(audit)[e["event_id"]] == ["delivered"] for e in healthy)

    # Once the target answers, every parked event is delivered too.
    assert sandboxes.kombo.faults.remove(outage)
    audit = await deployment.audit_until_terminal(parked_ids, timeout=60)
    assert all(terminal_by_event(audit)[i] == ["delivered"] for i in parked_ids)


async def test_a_full_dispatcher_pauses_and_resumes_its_partitions_in_order(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    """With room for two records, a burst of one order's events still arrives whole and in
    order: the partition pauses when the dispatcher is full and is read again after."""
    deployment.worker(CONNECTOR_DELIVERY__MAX_PENDING="2")
    tgt = target("kombo", "k-burst")
    events = (
        [make_event("opened", tgt, **URL)]
        + [make_event("progress", tgt, status_text=f"step {i}", **URL) for i in range(30)]
        + [make_event("completed", tgt)]
    )
    await deployment.publish(events)
    audit = await deployment.audit_until_terminal([e["event_id"] for e in events], timeout=90)
    assert terminal_by_event(audit) == {e["event_id"]: ["delivered"] for e in events}
    seen = [r["body"]["status"] for r in sandboxes.kombo.recorded() if r["status_code"] == 200]
    assert seen == ["OPEN"] * 31 + ["COMPLETED"]
