"""A misspelt CONNECTOR_APP_ID does not replay the events topic (issue 21, trap 7).

On the real broker: a topic another group already reads makes a new app id's worker
refuse (exit 2) and ``connector check`` fail; ``--new-deployment --from latest`` starts
at the end (only what is published afterwards reaches the vendors); a fresh app id on a
topic nobody else reads (the black-box first deployment) starts without flags and
delivers everything.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from connector.errors import ConfigurationError
from connector.infra.kafka_clients import ensure_topics
from connector.local.stack import deployment_settings
from connector.ops.first_start import guard_first_start, inspect
from connector.sandbox import Sandboxes
from connector.settings import Settings
from tests.e2e.harness import Deployment, terminal_by_event
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def settings_of(env: dict[str, str]) -> Settings:
    return deployment_settings(env)


async def with_state(bootstrap: str, group: str) -> None:
    """``group`` is a connector deployment: its order table's changelog holds a record."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(f"{group}-orders-changelog", b"{}", key=b"comeet|x")
    finally:
        await producer.stop()


async def commit_as(bootstrap: str, group: str, topic: str, partitions: int) -> None:
    """Another group that has read the topic to its end."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        reader.assign(tps)
        await reader.commit(await reader.end_offsets(tps))
    finally:
        await reader.stop()


def connector(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector.cli", *args],
        env={**os.environ, **env, "CONNECTOR_LOG_JSON": "false"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def filled(deployment: Deployment, n: int) -> list[dict[str, Any]]:
    await ensure_topics(settings_of(deployment.env))
    events = [make_event("completed", target("comeet", f"old-{i}")) for i in range(n)]
    await deployment.publish(events)
    return events


async def test_a_misspelt_app_id_is_refused_and_check_says_why(
    deployment: Deployment, sandboxes: Sandboxes, unique_name
) -> None:
    await filled(deployment, 12)
    real = unique_name("real")
    await commit_as(deployment.bootstrap, real, deployment.events_topic, 4)
    await with_state(deployment.bootstrap, real)
    # A reader that is not a connector deployment (no state) is no sign of a typo.
    await commit_as(deployment.bootstrap, unique_name("judge"), deployment.events_topic, 4)
    typo = {**deployment.env, "CONNECTOR_APP_ID": real.replace("real", "rael")}

    state = await inspect(settings_of(typo))
    assert state.new_app_id and state.events_records == 12
    assert state.other_groups == (real,)
    with pytest.raises(ConfigurationError, match="no committed offsets and no state"):
        await guard_first_start(settings_of(typo), "")

    worker = await asyncio.to_thread(connector, typo, "worker")
    assert worker.returncode == 2, worker.stderr[-2000:]
    assert real in worker.stderr and "--new-deployment --from" in worker.stderr
    check = await asyncio.to_thread(connector, typo, "check")
    assert check.returncode == 2
    [line] = [line for line in check.stdout.splitlines() if line.startswith("app id")]
    assert "FAIL" in line and real in line, check.stdout
    usage = await asyncio.to_thread(connector, typo, "worker", "--new-deployment")
    assert usage.returncode == 2 and "--from" in usage.stderr
    assert not sandboxes.comeet.recorded()  # nothing reached the vendor


async def test_a_new_deployment_from_latest_sends_only_what_comes_next(
    deployment: Deployment, sandboxes: Sandboxes, unique_name
) -> None:
    old = await filled(deployment, 12)
    await commit_as(deployment.bootstrap, unique_name("real"), deployment.events_topic, 4)
    deployment.worker(
        argv=[
            sys.executable,
            "-m",
            "connector.cli",
            "worker",
            "--new-deployment",
            "--from",
            "latest",
        ]
    )
    new = [make_event("completed", target("comeet", f"new-{i}")) for i in range(5)]
    await deployment.publish(new)
    audit = await deployment.audit_until_terminal([e["event_id"] for e in new])
    ended = terminal_by_event(audit)
    assert all(ended[str(e["event_id"])] == ["delivered"] for e in new)
    assert not any(str(e["event_id"]) in ended for e in old)
    sent = {r["key"] for r in sandboxes.comeet.recorded()}
    assert sent == {f"new-{i}" for i in range(5)}, sent
    # The worker is up: check now sees committed offsets, nothing to report.
    check = await asyncio.to_thread(connector, deployment.env, "check")
    assert any(x.startswith("app id") and " ok " in x for x in check.stdout.splitlines()), (
        check.stdout
    )


async def test_a_first_deployment_on_a_filled_topic_needs_no_flag(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    """The black-box user: a fresh app id, a topic it has just filled, no other deployment
    reading it (a judge or monitor reading it with a group of its own does not count)."""
    events = await filled(deployment, 8)
    await commit_as(
        deployment.bootstrap, "judge-" + deployment.events_topic, deployment.events_topic, 4
    )
    check = await asyncio.to_thread(connector, deployment.env, "check")
    [line] = [line for line in check.stdout.splitlines() if line.startswith("app id")]
    assert "warn" in line and "8" in line, check.stdout
    deployment.worker()
    audit = await deployment.audit_until_terminal([e["event_id"] for e in events])
    assert all(v == ["delivered"] for v in terminal_by_event(audit).values())
