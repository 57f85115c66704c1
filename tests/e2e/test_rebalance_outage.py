"""Rebalances during an integration outage: fenced, short, and never a split brain (issue 11).

Two workers take a steady stream over three targets (Kombo integrations A and B,
and Comeet); A answers 503 to everything for ``OUTAGE_S``. During the outage a
third worker joins and then one of the first two leaves (SIGTERM). Each
rebalance must end within the HTTP call bound plus 15 s, no input record may
be delivered (audited ``delivered``) by two workers, nothing is lost, no order
goes out of order or backwards, and healthy targets keep at least 80 % of their
throughput in the rebalance windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from connector.local.worker import WorkerProcess
from connector.sandbox import Sandboxes
from tests.e2e.harness import Deployment
from tests.e2e.invariants import (
    Ledger,
    assert_invariants,
    check,
    follower_for,
    lifecycle,
    publisher_for,
    received,
    start,
)
from tests.e2e.invariants import record_report as record
from tests.e2e.test_resilience import staggered, window_stats
from tests.factories import target

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTAGE_S = 35.0
BASELINE_S = 8.0
STREAM_RATE = 60.0
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0
BOUND_S = CONNECT_TIMEOUT_S + READ_TIMEOUT_S + 15.0
WINDOW_S = 20.0
DOWN = "workday:DOWN-A"
UP = "greenhouse:UP-B"


async def ready(worker: WorkerProcess, client: httpx.AsyncClient) -> bool:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = await client.get(f"http://127.0.0.1:{worker.web_port}/health/ready")
        return response.status_code == 200
    return False


async def settle(workers: list[WorkerProcess], since: float, limit: float) -> float:
    """Seconds from ``since`` until every worker reports ready again (after going unready)."""
    async with httpx.AsyncClient(timeout=1.0) as client:
        await asyncio.sleep(1.0)  # let the rebalance begin
        while time.time() - since < limit + 30:
            states = await asyncio.gather(*(ready(w, client) for w in workers))
            if all(states):
                return time.time() - since
            await asyncio.sleep(0.25)
    return float("inf")


@pytest.mark.timeout(420)
async def test_rebalances_during_an_outage_are_fenced_and_short(
    deployment: Deployment, sandboxes: Sandboxes, tmp_path: Path
) -> None:
    deployment.env.update(
        {
            "CONNECTOR_DELIVERY__BACKOFF_INITIAL_S": "0.2",
            "CONNECTOR_DELIVERY__BACKOFF_MAX_S": "2",
            "CONNECTOR_DELIVERY__MAX_ATTEMPTS": "1000",
            "CONNECTOR_DELIVERY__RETRY_DEADLINE_S": str(OUTAGE_S + 120),
            "CONNECTOR_DELIVERY__CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
            "CONNECTOR_DELIVERY__READ_TIMEOUT_S": str(READ_TIMEOUT_S),
            "CONNECTOR_STANDBY_REPLICAS": "1",
        }
    )
    sandboxes.set_latency(10)
    n_orders = int(STREAM_RATE * (BASELINE_S + OUTAGE_S) / 3) + 1
    orders = []
    for i in range(n_orders):
        tag = f"rb-{i}"
        if i % 3 == 0:
            tgt = target("kombo", f"k-{tag}", DOWN)
        elif i % 3 == 1:
            tgt = target("kombo", f"k-{tag}", UP)
        else:
            tgt = target("comeet", f"c-{tag}")
        orders.append(lifecycle(tgt, tag))
    ledger = Ledger()
    stream = [ledger.event(e) for e in staggered(orders)]
    down = {e["event_id"] for order in orders[::3] for e in order}
    healthy = set(ledger.events) - down
    w1 = await start(deployment.worker("w1", start=False))
    w2 = await start(deployment.worker("w2", start=False))
    settled: dict[str, float] = {}
    exit_s: float | None = None

    async with (
        publisher_for(deployment, ledger) as publisher,
        follower_for(deployment) as follower,
    ):
        stream_start = time.time()
        publishing = asyncio.create_task(publisher.send_paced(stream, STREAM_RATE))
        try:
            await asyncio.sleep(BASELINE_S)
            sandboxes.kombo.faults.add_outage(OUTAGE_S, target=DOWN)
            outage_start = time.time()
            await asyncio.sleep(5)
            join_at = time.time()
            w3 = deployment.worker("w3", start=False)
            w3.start(wait_ready=None)
            settled["join"] = await settle([w1, w2, w3], join_at, BOUND_S)
            await asyncio.sleep(5)
            leave_at = time.time()
            await asyncio.to_thread(w1.stop)
            exit_s = time.time() - leave_at
            settled["leave"] = await settle([w2, w3], leave_at, BOUND_S)
            await publishing
            done = await follower.wait_all_ended(ledger, timeout=OUTAGE_S + 120)
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
        report = check(
            ledger, follower.audit, follower.dlq, received(sandboxes), deployment.events_topic
        )

    delivered_by: dict[tuple[int, int], set[str]] = defaultdict(set)
    for r in follower.audit:
        if r["outcome"] == "delivered" and r.get("source"):
            delivered_by[(r["source"]["partition"], r["source"]["offset"])].add(r["worker_id"])
    split = {src: ids for src, ids in delivered_by.items() if len(ids) > 1}
    first_ok = report.details["first_ok_at"]
    baseline = window_stats(ledger, first_ok, healthy, stream_start + 1.0, outage_start)
    windows = {
        name: window_stats(ledger, first_ok, healthy, at, at + WINDOW_S)
        for name, at in (("join", join_at), ("leave", leave_at))
    }
    ratios = {
        name: round(w["throughput"] / baseline["throughput"], 3) if baseline["throughput"] else 0
        for name, w in windows.items()
    }
    dead = report.details["per_outcome"]["dead_lettered"]
    record(
        "rebalance_during_outage",
        report,
        tmp_path,
        {
            "settled_s": {k: round(v, 1) for k, v in settled.items()},
            "bound_s": BOUND_S,
            "leaving_worker_exit_s": round(exit_s or -1, 1),
            "split_brain_records": len(split),
            "baseline": baseline,
            "windows": windows,
            "throughput_ratios": ratios,
            "dead_lettered": dead,
            "lost_sample": [
                {
                    **lost,
                    "audit": [
                        (r["outcome"], r["worker_id"], r.get("reason"))
                        for r in follower.audit
                        if r.get("event_id") == lost["event_id"]
                    ],
                }
                for lost in report.details["lost"][:8]
            ],
        },
    )
    print(
        f"rebalance settled {settled}, leave exit {exit_s:.1f} s, split {len(split)}, "
        f"healthy throughput ratios {ratios}, dead letters {dead}, "
        f"duplicates {report.duplicates}"
    )
    assert_invariants(report, [w1, w2, w3])
    assert done
    assert not split, list(split.items())[:10]
    assert settled["join"] <= BOUND_S and settled["leave"] <= BOUND_S, settled
    assert exit_s is not None and exit_s <= BOUND_S
    assert min(ratios.values()) >= 0.8, (baseline, windows)
