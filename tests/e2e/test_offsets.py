"""Offsets are committed once events end: a restart does not reprocess the whole topic."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from connector.sandbox import Sandboxes
from tests.e2e.harness import Deployment, terminal_by_event
from tests.factories import make_event, record, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def committed_offsets(deployment: Deployment, wanted: int) -> int:
    """The group's committed offsets on the events topic, summed, once they reach ``wanted``
    (Faust commits on an interval, about 3 s) or after 20 s."""
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
    await admin.start()
    try:
        committed = 0
        for _ in range(40):
            offsets = await admin.list_consumer_group_offsets(deployment.env["CONNECTOR_APP_ID"])
            committed = sum(
                meta.offset for tp, meta in offsets.items() if tp.topic == deployment.events_topic
            )
            if committed == wanted:
                break
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    return committed


async def test_offsets_are_committed_after_events_end(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    events = [make_event("completed", target("comeet", f"c-{i}")) for i in range(20)]
    deployment.worker()
    await deployment.publish(events)
    await deployment.audit_until_terminal([e["event_id"] for e in events])
    assert await committed_offsets(deployment, len(events)) == len(events)


SKIPPING_WORKER = Path(__file__).with_name("skipping_worker.py")


async def test_a_record_lost_before_the_sequencer_is_read_again_and_never_committed_past(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    """Records lost on their way to the processor are read again.

    The worker drops the first two deliveries of offsets 0 (where its reading starts),
    4 and 5 of every partition. Before ``connector.domain.offsets`` those events had no
    outcome at all, and the later events' acknowledgements committed past them.
    """
    kombo, comeet = target("kombo", "k-skip-1"), target("comeet", "c-skip-1")
    events = [
        *(
            [make_event("opened", t)]
            + [make_event("progress", t, status_text=f"step {i}") for i in range(6)]
            + [make_event("completed", t)]
            for t in (kombo, comeet)
        )
    ]
    flat = [e for group in events for e in group]
    # Twice each: the first re-read after a rewind is lost too.
    worker = deployment.worker(
        argv=[sys.executable, str(SKIPPING_WORKER)], SKIP_OFFSETS="0,4,5", SKIP_TIMES="2"
    )
    await deployment.publish(flat)
    audit = await deployment.audit_until_terminal([e["event_id"] for e in flat], timeout=60)

    assert terminal_by_event(audit) == {e["event_id"]: ["delivered"] for e in flat}
    # The vendors saw each order's events in the order they were published.
    kombo_seen = [e["body"]["status"] for e in sandboxes.kombo.recorded()]
    assert kombo_seen == ["OPEN"] * 7 + ["COMPLETED"]
    comeet_seen = [e["body"]["status"] for e in sandboxes.comeet.recorded()]
    assert comeet_seen[-1] == "completed" and len(comeet_seen) == 8
    log = worker.log_path.read_text()
    assert log.count("skipping-worker: dropped") >= 6  # 0, 4 and 5 of a partition, twice
    assert "reading again from" in log

    assert await committed_offsets(deployment, len(flat)) == len(flat)


async def test_the_last_record_of_a_partition_lost_on_its_way_is_read_again(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    """No later record reveals the hole: the idle partition's end does.

    The worker drops the first delivery of offset 7, the last of the only
    order's partition. Before the idle watch it stayed unhandled (and
    uncommitted) until the next rebalance: seen once in the crash matrix, a
    replayed event at the end of its partition without any outcome.
    """
    t = target("kombo", "k-skip-last")
    events = [make_event("opened", t)]
    events += [make_event("progress", t, status_text=f"step {i}") for i in range(6)]
    events.append(make_event("completed", t))
    worker = deployment.worker(argv=[sys.executable, str(SKIPPING_WORKER)], SKIP_OFFSETS="7")
    await deployment.publish(events)
    audit = await deployment.audit_until_terminal([e["event_id"] for e in events], timeout=60)

    assert terminal_by_event(audit) == {e["event_id"]: ["delivered"] for e in events}
    assert [e["body"]["status"] for e in sandboxes.kombo.recorded()] == ["OPEN"] * 7 + ["COMPLETED"]
    log = worker.log_path.read_text()
    assert "skipping-worker: dropped" in log
    assert "none from 7 on was handed on" in log
    assert await committed_offsets(deployment, len(events)) == len(events)


async def test_transactional_producers_aborted_events_never_reach_a_vendor(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    """Transaction markers are offsets without a record, and aborted events were never published.

    Each committed transaction leaves a marker (an offset no consumer sees), so the
    connector must take those gaps as gaps; an aborted transaction's events must
    not reach the vendor (Faust's own default would read them).
    """
    order = target("kombo", "k-txn-1")
    opened, aborted = make_event("opened", order), make_event("cancelled", order)
    later = [make_event("progress", order), make_event("completed", order)]
    deployment.worker()  # creates the topics
    producer = AIOKafkaProducer(
        bootstrap_servers=deployment.bootstrap, transactional_id=f"txn-{uuid.uuid4().hex}"
    )
    await producer.start()
    try:
        for batch, commit in (([opened], True), ([aborted], False), (later, True)):
            await producer.begin_transaction()
            for event in batch:
                key, value = record(event)
                await producer.send_and_wait(deployment.events_topic, value, key=key)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()
    published = [opened, *later]
    audit = await deployment.audit_until_terminal([e["event_id"] for e in published], timeout=60)

    assert terminal_by_event(audit) == {e["event_id"]: ["delivered"] for e in published}
    assert aborted["event_id"] not in {r["event_id"] for r in audit}
    assert [e["body"]["status"] for e in sandboxes.kombo.recorded()] == [
        "OPEN",
        "OPEN",
        "COMPLETED",
    ]
