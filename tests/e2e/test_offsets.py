"""Offsets are committed once events end: a restart does not reprocess the whole topic."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from connector.sandbox import Sandboxes
from tests.e2e.harness import Deployment
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def test_offsets_are_committed_after_events_end(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    events = [make_event("completed", target("comeet", f"c-{i}")) for i in range(20)]
    deployment.worker()
    await deployment.publish(events)
    await deployment.audit_until_terminal([e["event_id"] for e in events])
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
    await admin.start()
    try:
        committed = 0
        for _ in range(40):  # Faust commits on an interval (about 3 s)
            offsets = await admin.list_consumer_group_offsets(deployment.env["CONNECTOR_APP_ID"])
            committed = sum(
                meta.offset for tp, meta in offsets.items() if tp.topic == deployment.events_topic
            )
            if committed == len(events):
                break
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    assert committed == len(events)
