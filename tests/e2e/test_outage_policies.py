"""Issue 11: the outage policies other than the default, and operators pausing a target."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from connector.sandbox import Sandboxes
from connector.settings import child_environment
from tests.e2e.harness import Deployment, terminal_by_event
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

URL = {"result_url": "https://vendor.example/tests/policy"}
FAST = {
    "CONNECTOR_DELIVERY__BACKOFF_INITIAL_S": "0.05",
    "CONNECTOR_DELIVERY__BACKOFF_MAX_S": "0.5",
    "CONNECTOR_DELIVERY__BREAKER_FAILURES": "2",
    "CONNECTOR_DELIVERY__BREAKER_COOL_DOWN_S": "0.5",
    "CONNECTOR_DELIVERY__BREAKER_MAX_COOL_DOWN_S": "1",
}


def lifecycle(tgt: dict) -> list[dict]:
    return [
        make_event("opened", tgt, **URL),
        make_event("progress", tgt, **URL),
        make_event("completed", tgt),
    ]


def statuses(sandboxes: Sandboxes, order_id: str) -> list[str]:
    return [
        r["body"]["status"]
        for r in sandboxes.kombo.recorded()
        if r["status_code"] == 200 and order_id in r["path"]
    ]


async def connector_cli(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "connector.cli", *args],
        env=child_environment(deployment.env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_stop_policy_retries_until_the_target_answers(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    """``stop``: nothing parks, nothing is dead-lettered; delivery resumes by itself."""
    down = "bullhorn:STOP1"
    sandboxes.kombo.faults.add_outage(duration_s=5, target=down)
    events = lifecycle(target("kombo", "k-stop", down))
    deployment.worker(
        CONNECTOR_KOMBO__ON_OUTAGE="stop",
        CONNECTOR_DELIVERY__MAX_ATTEMPTS="2",  # ignored under stop: retries never run out
        CONNECTOR_DELIVERY__RETRY_DEADLINE_S="1",
        **FAST,
    )
    await deployment.publish(events)
    ids = [e["event_id"] for e in events]
    audit = await deployment.audit_until_terminal(ids, timeout=60)
    assert all(terminal_by_event(audit)[i] == ["delivered"] for i in ids)
    assert not [r for r in audit if r["outcome"] in ("parked", "dead_lettered")]
    assert statuses(sandboxes, "k-stop") == ["OPEN", "OPEN", "COMPLETED"]


async def test_operators_pause_and_resume_a_target(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    paused = "lever:PAUSE1"
    events = lifecycle(target("kombo", "k-paused", paused))
    other = make_event("opened", target("kombo", "k-other", "lever:OTHER1"), **URL)
    deployment.worker(**FAST)
    result = await connector_cli(
        deployment, "target", "pause", f"kombo|{paused}", "--reason", "maintenance"
    )
    assert result.returncode == 0, result.stderr
    await asyncio.sleep(2)  # every worker follows the control topic
    await deployment.publish([*events, other])
    audit = await deployment.audit_until_terminal([other["event_id"]], timeout=60)
    await asyncio.sleep(2)
    assert not statuses(sandboxes, "k-paused")  # nothing reached the paused target
    listing = await connector_cli(deployment, "target", "list")
    assert f"kombo|{paused}" in listing.stdout and "paused" in listing.stdout
    result = await connector_cli(deployment, "target", "resume", f"kombo|{paused}")
    assert result.returncode == 0, result.stderr
    ids = [e["event_id"] for e in events]
    audit = await deployment.audit_until_terminal(ids, timeout=60)
    assert all(terminal_by_event(audit)[i] == ["delivered"] for i in ids)
    assert statuses(sandboxes, "k-paused") == ["OPEN", "OPEN", "COMPLETED"]
    changes = [r for r in audit if r["outcome"] in ("paused", "resumed")]
    assert [r["outcome"] for r in changes] == ["paused", "resumed"]
    assert "maintenance" in changes[0]["reason"]
