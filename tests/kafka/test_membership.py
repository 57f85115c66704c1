"""A static group member leaves its group when it stops (real broker)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer

from connector.kafka.membership import leave_on_stop
from tests.conftest import NameFactory, TopicFactory

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

SESSION_MS = 10_000


def _member(bootstrap: str, topic: str, group: str, instance: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        group_instance_id=instance,
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=1000,
        enable_auto_commit=False,
    )


async def _until(consumers: list[AIOKafkaConsumer], done: object, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if callable(done) and done():
            return time.monotonic() - started
        await asyncio.gather(*(c.getmany(timeout_ms=100) for c in consumers))
    return timeout


@pytest.mark.parametrize("leaves", [False, True], ids=["aiokafka", "connector"])
async def test_a_stopped_static_member_hands_its_partitions_over_at_once(
    kafka_bootstrap: str, create_topic: TopicFactory, unique_name: NameFactory, leaves: bool
) -> None:
    # aiokafka never sends LeaveGroup for a static member: the other member waits for the
    # session timeout before it gets the stopped one's partitions.
    topic = await create_topic(partitions=4)
    group = unique_name("group")
    stopping = _member(kafka_bootstrap, topic, group, "w1")
    staying = _member(kafka_bootstrap, topic, group, "w2")
    await stopping.start()
    await staying.start()
    try:
        both = [stopping, staying]
        split = await _until(both, lambda: all(c.assignment() for c in both), timeout=30)
        assert split < 30, "the two members never split the partitions"
        if leaves:
            leave_on_stop(stopping)
        await stopping.stop()
        took = await _until([staying], lambda: len(staying.assignment()) == 4, timeout=20)
    finally:
        await stopping.stop()
        await staying.stop()
    if leaves:
        assert took < SESSION_MS / 1000 / 2, f"took over after {took:.1f} s"
    else:  # the upstream defect
        assert took >= SESSION_MS / 1000 * 0.8, f"took over after {took:.1f} s"
