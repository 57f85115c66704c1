"""``connector topics migrate`` on the real broker (issue 21, build item 4).

A 4-partition deployment delivers orders mid-lifecycle (open, completed, cancelled). The
tool refuses while the group is behind and while a worker runs; its dry run changes
nothing; it moves the deployment to 6 partitions. The worker comes back with
``CONNECTOR_TOPICS__PARTITIONS=6`` and its local RocksDB state directory kept. Then, with
aiokafka's default partitioner (murmur2) over 6 partitions, every final order gets reopen
and flip attempts: none reaches the sandbox (the audit says rejected or duplicate), while
the open orders' completions are delivered.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from connector.domain.lifecycle import OrderStatus
from connector.infra.kafka_clients import ensure_topics
from connector.local.stack import deployment_settings
from connector.ops.migrate import migrate, murmur2_partition
from connector.ops.order_view import read_story
from connector.sandbox import Sandboxes
from connector.settings import Settings
from tests.e2e.harness import Deployment, terminal_by_event
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(150)]

ORDERS_PER_KIND = 12  # open, completed, cancelled
DRY_RUN_SIX = ("--partitions", "6", "--dry-run")


def settings_of(env: dict[str, str], partitions: int = 4) -> Settings:
    return deployment_settings({**env, "CONNECTOR_TOPICS__PARTITIONS": str(partitions)})


async def run(settings: Settings, partitions: int, **flags: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await migrate(settings, partitions, out=out, err=err, **flags)
    return code, out.getvalue(), err.getvalue()


async def layout(settings: Settings) -> dict[str, tuple[int, int]]:
    """topic -> (partitions, records ever written), for the deployment's topics."""
    t = settings.topics
    names = [t.events, t.parking, t.audit, f"{settings.app_id}-orders-changelog"]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        described = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)}
    finally:
        await admin.close()
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await reader.start()
    try:
        out = {}
        for name in names:
            tps = [TopicPartition(name, p) for p in range(described[name])]
            out[name] = (len(tps), sum((await reader.end_offsets(tps)).values()))
        return out
    finally:
        await reader.stop()


def key_of(tgt: dict[str, str]) -> bytes:
    return f"comeet|{tgt['evaluation_id']}".encode()


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["event_id"]) for e in events]


async def test_migrate_to_six_partitions_keeps_every_order_final(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    env = deployment.env
    old = settings_of(env)
    await ensure_topics(old)
    open_, completed, cancelled = (
        [target("comeet", f"{kind}-{i}") for i in range(ORDERS_PER_KIND)]
        for kind in ("open", "done", "cancel")
    )
    before = [make_event("opened", t) for t in open_ + completed + cancelled]
    before += [make_event("progress", t) for t in open_]
    before += [make_event("completed", t) for t in completed]
    before += [make_event("cancelled", t) for t in cancelled]
    await deployment.publish(before)

    # Refused: nothing has processed these records yet.
    code, _, err = await run(old, 6)
    assert code == 2 and "not drained" in err and f"{len(before)} records" in err, err

    worker = deployment.worker()
    audit = await deployment.audit_until_terminal(ids(before))
    assert all(v == ["delivered"] for v in terminal_by_event(audit).values())

    # Refused: a worker is a member of the group.
    code, _, err = await run(old, 6)
    assert code == 2 and "active member" in err, err

    worker.stop()
    untouched = await layout(old)
    dry = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "connector.cli", "topics", "migrate", *DRY_RUN_SIX],
        env={**os.environ, **env, "CONNECTOR_LOG_JSON": "false"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing changed" in dry.stdout and "4 -> 6" in dry.stdout, dry.stdout
    assert await layout(old) == untouched

    orders = [t["evaluation_id"] for t in open_ + completed + cancelled]
    keys = [f"comeet|{o}".encode() for o in orders]
    expected_moves = sum(1 for k in keys if murmur2_partition(k, 4) != murmur2_partition(k, 6))
    assert f"{len(orders)}; {expected_moves} move" in dry.stdout, dry.stdout

    started = time.monotonic()
    code, out, err = await run(old, 6)
    took = time.monotonic() - started
    assert code == 0, err
    assert f"{expected_moves} state(s) moved" in out, out
    after = await layout(old)
    changelog = f"{old.app_id}-orders-changelog"
    for name in (old.topics.events, old.topics.parking, changelog):
        assert after[name][0] == 6, (name, after)
    assert after[old.topics.audit][0] == 4  # not co-partitioned: unchanged
    assert after[changelog][1] == untouched[changelog][1] + 2 * expected_moves  # move + tombstone
    # Run again: nothing left to do.
    code, again, _ = await run(settings_of(env, 6), 6)
    assert code == 0 and f"{len(orders)}; 0 move" in again, again
    print(
        f"\nmigrate 4 -> 6: {len(orders)} orders, {expected_moves} states moved, "
        f"{took:.2f} s\n{out}"
    )

    # `order show` finds a moved order's state where it went (its audit records name the
    # old partition, which now holds a tombstone).
    moved = next(
        t for t in completed if murmur2_partition(key_of(t), 4) != murmur2_partition(key_of(t), 6)
    )
    story = await read_story(settings_of(env, 6), f"comeet|{moved['evaluation_id']}")
    assert story.state is not None and story.state.status is OrderStatus.COMPLETED, story
    assert story.changelog["partition"] == murmur2_partition(key_of(moved), 6)

    # The same worker id (its RocksDB state directory kept), now with 6 partitions.
    env["CONNECTOR_TOPICS__PARTITIONS"] = "6"
    deployment.worker("w1")
    seen = {r["index"] for r in sandboxes.comeet.recorded()}
    attempts = [make_event("opened", t) for t in completed + cancelled]
    attempts += [make_event("progress", t) for t in completed]
    attempts += [make_event("cancelled", t) for t in completed]
    attempts += [make_event("completed", t) for t in cancelled]
    legit = [make_event("completed", t) for t in open_]
    await deployment.publish(attempts + legit)
    audit = await deployment.audit_until_terminal(ids(attempts + legit), timeout=90)
    ended = terminal_by_event(audit)
    new = [r for r in sandboxes.comeet.recorded() if r["index"] not in seen]
    legit_orders = {t["evaluation_id"] for t in open_}
    sent = [r for r in new if r["key"] not in legit_orders]
    taken = [r for r in sent if r["status_code"] is not None and r["status_code"] < 300]
    not_refused = [e for e in ids(attempts) if ended[e] not in (["rejected"], ["duplicate"])]
    assert not sent and not not_refused, (
        f"{len(attempts)} reopen/flip attempts: {len(not_refused)} not refused by the "
        f"connector, {len(sent)} sent to the sandbox, {len(taken)} accepted by it"
    )
    undelivered = [ended[e] for e in ids(legit) if ended[e] != ["delivered"]]
    assert not undelivered, (
        f"{len(undelivered)} of {len(legit)} completions of open orders not delivered: "
        f"{undelivered}"
    )
    assert sorted(r["key"] for r in new) == sorted(legit_orders)
