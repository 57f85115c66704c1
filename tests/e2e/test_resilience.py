"""Resilience scenarios over the real broker, the sandboxes and real worker processes.

Each scenario publishes through a :class:`~tests.e2e.invariants.Ledger` and checks the
shared invariants (:func:`~tests.e2e.invariants.check`): nothing lost, per-order order kept
at the vendor, no final status regressed. Reports are printed (``-s``) and appended to
``bench-results/resilience.jsonl``.

The sandboxes run in the test's event loop: anything blocking (starting or killing a worker,
stopping the broker) goes through ``asyncio.to_thread`` so they keep answering meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.local.kafka import LocalKafka
from connector.local.worker import WorkerProcess
from connector.sandbox import Sandboxes
from tests.e2e.harness import Deployment
from tests.e2e.invariants import (
    FAST_GROUP,
    KOMBO_INTEGRATIONS,
    Ledger,
    assert_invariants,
    check,
    committed_offsets,
    follower_for,
    in_rounds,
    lifecycle,
    log_excerpt,
    mixed_orders,
    publisher_for,
    received,
    start,
)
from tests.e2e.invariants import record_report as record
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka]

# -- 1. a worker crashes mid-run -------------------------------------------------------------

CRASH_ORDERS = 300


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("replacement", ["w2", "w1"], ids=["new-worker-id", "same-worker-id"])
async def test_crash_mid_run_loses_nothing(
    deployment: Deployment, sandboxes: Sandboxes, tmp_path: Path, replacement: str
) -> None:
    """SIGKILL the only worker a third of the way through, then start another. A new worker
    id means a fresh local store (the guard comes back from the changelog); the same id
    reopens the killed worker's RocksDB store, as a restarted pod with its volume would."""
    deployment.env.update(FAST_GROUP)
    deployment.env["CONNECTOR_DELIVERY__MAX_ATTEMPTS"] = "12"
    sandboxes.set_latency(10)
    sandboxes.kombo.faults.add_error(503, probability=0.10, seed=11)
    sandboxes.kombo.faults.add_drop(probability=0.02, seed=12)
    sandboxes.comeet.faults.add_rate_limit(retry_after_s=1, count=2)
    sandboxes.comeet.faults.add_error(503, probability=0.05, seed=13)
    sandboxes.comeet.faults.add_drop(probability=0.02, seed=14)

    ledger = Ledger()
    records = [ledger.event(e) for e in in_rounds(mixed_orders(CRASH_ORDERS, "crash"))]
    first = await start(deployment.worker("w1", start=False))
    started = time.monotonic()
    async with (
        publisher_for(deployment, ledger) as publisher,
        follower_for(deployment) as follower,
    ):
        await publisher.send(records)
        third = len(records) // 3
        assert await follower.wait(lambda f: f.ended(ledger) >= third, timeout=90), (
            f"only {follower.ended(ledger)} of {len(records)} records ended before the crash\n"
            + log_excerpt(first.log_path)
        )
        ended_at_kill = follower.ended(ledger)
        await asyncio.to_thread(first.kill)
        killed_at = time.monotonic()
        committed_at_kill = sum((await committed_offsets(deployment)).values())
        second = await start(deployment.worker(replacement, start=False))
        ready_after_s = time.monotonic() - killed_at
        done = await follower.wait_all_ended(ledger, timeout=150)
        elapsed = time.monotonic() - started
        report = check(
            ledger, follower.audit, follower.dlq, received(sandboxes), deployment.events_topic
        )
    report.elapsed_s = round(elapsed, 1)
    # Every event here is valid and published in lifecycle order: none may be rejected. One
    # accepted before the crash but not delivered must be delivered when it comes back.
    receipts = report.details["receipts"]
    rejected = [
        {
            "event_id": r["event_id"],
            "type": r["event_type"],
            "order": r["order_key"],
            "worker": r["worker_id"],
            "reason": r["reason"],
            "vendor_accepted_it": receipts.get(r["event_id"], 0),
        }
        for r in follower.audit
        if r["terminal"] and r["outcome"] == "rejected"
    ]
    record(
        f"crash_mid_run_{'new' if replacement != first.worker_id else 'same'}_worker_id",
        report,
        tmp_path,
        {
            "ended_at_kill": ended_at_kill,
            "committed_at_kill": committed_at_kill,
            "replacement_ready_after_s": round(ready_after_s, 1),
            "all_ended": done,
            "rejected_after_crash": len(rejected),
            "rejected_examples": rejected[:5],
            # The vendor has it, the audit never says 'delivered' (only e.g. 'duplicate').
            "unaudited_delivery_examples": report.details["unaudited"][:5],
        },
    )
    assert_invariants(report, [first, second])
    assert done
    assert not rejected, f"{len(rejected)} valid events rejected after the crash: {rejected[:5]}"


# -- 2. the broker goes away mid-run ---------------------------------------------------------

BROKER_ORDERS = 200
BROKER_DOWN_S = 10.0


def log_errors(path: Path) -> int:
    """ERROR lines in a worker log (the broker outage's log volume is worth a number)."""
    with path.open(encoding="utf-8", errors="replace") as log:
        return sum(1 for line in log if '"level": "ERROR"' in line)


def stop_broker_keeping_data(kafka: LocalKafka, timeout: float = 30.0) -> None:
    """A graceful broker stop that keeps its data directory: SIGTERM to the broker's process
    group (it is its own group leader), then wait for it to exit. ``LocalKafka.stop()`` would
    delete a temporary data directory, ``kill()`` is a crash; ``start()`` later adopts the
    stopped broker's data and ports."""
    pid = kafka.pid
    assert pid is not None, "broker not running"
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while kafka.running:
        if time.monotonic() > deadline:
            kafka.kill()
            break
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_broker_restart_mid_run(
    deployment: Deployment, sandboxes: Sandboxes, local_kafka: LocalKafka, tmp_path: Path
) -> None:
    """The broker stops gracefully while a worker is busy, stays down ``BROKER_DOWN_S`` and
    comes back on the same ports with the same data. The worker must carry on by itself."""
    deployment.env.update(FAST_GROUP)
    deployment.env["CONNECTOR_DELIVERY__MAX_ATTEMPTS"] = "12"
    sandboxes.set_latency(10)
    sandboxes.kombo.faults.add_error(503, probability=0.05, seed=21)
    sandboxes.comeet.faults.add_error(503, probability=0.05, seed=22)

    ledger = Ledger()
    orders = mixed_orders(BROKER_ORDERS, "brk")
    before = [ledger.event(e) for e in in_rounds(orders[: BROKER_ORDERS // 2])]
    after = [ledger.event(e) for e in in_rounds(orders[BROKER_ORDERS // 2 :])]
    worker = await start(deployment.worker("w1", start=False))
    workers = [worker]
    findings: list[dict[str, Any]] = []
    started = time.monotonic()
    async with follower_for(deployment) as follower:
        async with publisher_for(deployment, ledger) as publisher:
            await publisher.send(before)
        assert await follower.wait(lambda f: f.ended(ledger) >= len(before) // 3, timeout=60)
        ended_at_stop = follower.ended(ledger)
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(stop_broker_keeping_data, local_kafka)
            await asyncio.sleep(max(0.0, BROKER_DOWN_S - (time.monotonic() - t0)))
        finally:  # whatever happens, leave a broker for the tests after this one
            stopped_s = time.monotonic() - t0
            if not local_kafka.running:
                await asyncio.to_thread(local_kafka.start)
        unavailable_s = time.monotonic() - t0
        async with publisher_for(deployment, ledger) as publisher:
            await publisher.send(after)
        done = await follower.wait_all_ended(ledger, timeout=90, give_up=lambda: not worker.running)
        if not worker.running:
            findings.append(
                {
                    "finding": f"worker {worker.worker_id} exited after the broker restart",
                    "log": log_excerpt(worker.log_path),
                }
            )
            replacement = await start(deployment.worker("w1-restarted", start=False))
            workers.append(replacement)
            done = await follower.wait_all_ended(ledger, timeout=90)
        else:
            try:
                await asyncio.to_thread(worker.wait_ready, 60)
            except (TimeoutError, RuntimeError) as exc:
                findings.append({"finding": f"worker not ready again: {exc}"})
        elapsed = time.monotonic() - started
        report = check(
            ledger, follower.audit, follower.dlq, received(sandboxes), deployment.events_topic
        )
    report.elapsed_s = round(elapsed, 1)
    record(
        "broker_restart_mid_run",
        report,
        tmp_path,
        {
            "broker_stopped_s": round(stopped_s, 1),
            "broker_unavailable_s": round(unavailable_s, 1),  # stopped + start-to-ready
            "worker_log_errors": log_errors(worker.log_path),
            "ended_at_stop": ended_at_stop,
            "all_ended": done,
            "findings": findings,
        },
    )
    for finding in findings:
        print(f"FINDING: {finding['finding']}\n{finding.get('log', '')}")
    assert_invariants(report, workers)
    assert done
    assert not [f for f in findings if "not ready" in f["finding"]], findings


# -- 3. one integration down, the others unaffected -----------------------------------------

# Issue 11 asks for 30 minutes (RESILIENCE_OUTAGE_S=1800 runs it locally); CI runs 2 minutes.
OUTAGE_S = float(os.environ.get("RESILIENCE_OUTAGE_S", "120"))
BASELINE_S = 8.0  # steady stream before the outage: the reference window
STREAM_RATE = 80.0  # events/s, all targets together (one worker's headroom on 2 shared cores)
LATENCY_SLO_S = 2.0  # a healthy event "on time" reaches the vendor within this of its publication
OUTAGE_INTEGRATION = "workday:DOWN-A"
HEALTHY_INTEGRATION = "greenhouse:UP-B"
DOWN_EVERY = int(os.environ.get("RESILIENCE_DOWN_EVERY", "3"))  # every n-th order is A's


def staggered(orders: list[list[dict[str, Any]]], lag: int = 10) -> list[dict[str, Any]]:
    """A steady stream: step t publishes order t's 1st event, order t-lag's 2nd, t-2*lag's 3rd."""
    out = []
    for step in range(len(orders) + 2 * lag):
        for stage in range(3):
            i = step - stage * lag
            if 0 <= i < len(orders):
                out.append(orders[i][stage])
    return out


def window_stats(
    ledger: Ledger, first_ok: dict[str, float], event_ids: set[str], start: float, end: float
) -> dict[str, float]:
    sent = [
        s for s in ledger.records if s.event_id in event_ids and start <= (s.sent_at or 0) < end
    ]
    if not sent:
        return {"sent": 0, "on_time": 0.0, "throughput": 0.0}
    latencies = sorted(
        first_ok[s.event_id] - (s.sent_at or 0) if s.event_id in first_ok else float("inf")
        for s in sent
    )
    delivered_in_window = sum(1 for e in event_ids if start <= first_ok.get(e, -1) < end)
    return {
        "sent": len(sent),
        "on_time": sum(1 for x in latencies if x <= LATENCY_SLO_S) / len(sent),
        "throughput": delivered_in_window / len(sent),
        "p50_latency_s": round(latencies[len(latencies) // 2], 3),
        "p95_latency_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
    }


async def sample_in_flight(
    worker: WorkerProcess,
    into: list[tuple[float, int]],
    rss: list[tuple[float, float]] | None = None,
) -> None:
    """Every 0.5 s: the worker's records in flight (its ``/health/ready`` body) and RSS."""
    url = f"http://127.0.0.1:{worker.web_port}/health/ready"
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                into.append((time.time(), (await client.get(url)).json()["in_flight"]))
            if rss is not None and worker.pid is not None:
                with contextlib.suppress(OSError, ValueError):
                    rss.append((time.time(), rss_mib(worker.pid)))
            await asyncio.sleep(0.5)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError("no VmRSS")


@pytest.mark.slow
@pytest.mark.timeout(120 + 3 * OUTAGE_S)
async def test_outage_of_one_integration_does_not_block_others(
    deployment: Deployment, sandboxes: Sandboxes, tmp_path: Path
) -> None:
    """A steady stream (``STREAM_RATE``) over integrations A and B and Comeet; after a
    ``BASELINE_S`` reference window, A answers 503 to everything for ``OUTAGE_S``. Healthy
    events (B and Comeet) must reach their vendor as promptly as before: the share delivered
    within ``LATENCY_SLO_S`` of publication during the outage is at least 90 % of the
    baseline's. A's events park (the default outage policy: nothing is dead-lettered, the
    worker's memory does not grow with the outage) and arrive in order after it."""
    deployment.env.update(
        {
            "CONNECTOR_DELIVERY__BACKOFF_INITIAL_S": "0.2",
            "CONNECTOR_DELIVERY__BACKOFF_MAX_S": "2",
        }
    )
    sandboxes.set_latency(10)
    n_orders = int(STREAM_RATE * (BASELINE_S + OUTAGE_S) / 3) + 1
    orders = []
    for i in range(n_orders):
        tag = f"iso-{i}"
        if i % DOWN_EVERY == 0:
            tgt = target("kombo", f"k-{tag}", OUTAGE_INTEGRATION)
        elif i % 2:
            tgt = target("kombo", f"k-{tag}", HEALTHY_INTEGRATION)
        else:
            tgt = target("comeet", f"c-{tag}")
        orders.append(lifecycle(tgt, tag))
    ledger = Ledger()
    stream = [ledger.event(e) for e in staggered(orders)]
    down = {e["event_id"] for order in orders[::DOWN_EVERY] for e in order}
    healthy = set(ledger.events) - down
    worker = await start(
        deployment.worker(
            "w1",
            start=False,
            CONNECTOR_DELIVERY__BREAKER_COOL_DOWN_S="1",
            CONNECTOR_DELIVERY__BREAKER_MAX_COOL_DOWN_S="5",
        )
    )
    in_flight: list[tuple[float, int]] = []
    rss: list[tuple[float, float]] = []

    async with (
        publisher_for(deployment, ledger) as publisher,
        follower_for(deployment) as follower,
    ):
        stream_start = time.time()
        publishing = asyncio.create_task(publisher.send_paced(stream, STREAM_RATE))
        sampling = asyncio.create_task(sample_in_flight(worker, in_flight, rss))
        try:
            await asyncio.sleep(BASELINE_S)
            sandboxes.kombo.faults.add_outage(OUTAGE_S, target=OUTAGE_INTEGRATION)
            outage_start = time.time()
            outage_end = outage_start + OUTAGE_S
            await publishing
            done = await follower.wait_all_ended(ledger, timeout=OUTAGE_S + 90)
        finally:
            sampling.cancel()
            publishing.cancel()
            await asyncio.gather(sampling, publishing, return_exceptions=True)
        drained_at = time.time()
        report = check(
            ledger, follower.audit, follower.dlq, received(sandboxes), deployment.events_topic
        )
    first_ok = report.details["first_ok_at"]
    accepted_at = {
        r["event_id"]: datetime.fromisoformat(r["time"]).timestamp()
        for r in follower.audit
        if r["outcome"] == "accepted"
    }
    with (tmp_path / "latencies.jsonl").open("w") as out:  # for a closer look after a run
        for s in ledger.records:
            row = {
                "sent": s.sent_at,
                "accepted": accepted_at.get(s.event_id or ""),
                "ok": first_ok.get(s.event_id or ""),
                "down": s.event_id in down,
                "p": s.partition,
            }
            out.write(json.dumps(row) + "\n")
    baseline = window_stats(ledger, first_ok, healthy, stream_start + 1.0, outage_start)
    during = window_stats(ledger, first_ok, healthy, outage_start, outage_end)
    on_time_ratio = during["on_time"] / baseline["on_time"] if baseline["on_time"] else 0.0
    throughput_ratio = (
        during["throughput"] / baseline["throughput"] if baseline["throughput"] else 0.0
    )
    down_delivered = [first_ok[e] for e in down if e in first_ok]
    down_in_outage = [
        s.event_id
        for s in ledger.records
        if s.event_id in down and outage_start <= (s.sent_at or 0) < outage_end
    ]
    report.elapsed_s = round(drained_at - stream_start, 1)
    # Memory must not grow with the outage's length: parked events wait in Kafka.
    early = [m for t, m in rss if outage_start + 10 <= t < outage_start + OUTAGE_S / 3]
    late = [m for t, m in rss if outage_end - OUTAGE_S / 3 <= t < outage_end]
    rss_growth = (max(late) - max(early)) if early and late else None
    record(
        "outage_isolation",
        report,
        tmp_path,
        {
            "outage_s": OUTAGE_S,
            "stream_rate_per_s": STREAM_RATE,
            "down_share": round(1 / DOWN_EVERY, 3),
            "in_flight_max_baseline": max(
                (n for t, n in in_flight if t < outage_start), default=None
            ),
            "in_flight_max_outage": max(
                (n for t, n in in_flight if outage_start <= t < outage_end), default=None
            ),
            "max_in_flight": 256,  # CONNECTOR_DELIVERY__MAX_IN_FLIGHT's default
            "baseline": baseline,
            "during_outage": during,
            "on_time_ratio": round(on_time_ratio, 3),
            "throughput_ratio": round(throughput_ratio, 3),
            "down_events": len(down),
            "down_events_delivered": len(down_delivered),
            "down_drained_after_outage_s": round(max(down_delivered) - outage_end, 1)
            if down_delivered
            else None,
            "rss_mib_early_outage": round(max(early), 1) if early else None,
            "rss_mib_late_outage": round(max(late), 1) if late else None,
            "rss_growth_mib": round(rss_growth, 1) if rss_growth is not None else None,
            "dead_lettered": report.dead_lettered,
        },
    )
    print(
        f"healthy on-time ratio during the {OUTAGE_S:.0f} s outage vs baseline: "
        f"{on_time_ratio:.3f} (throughput ratio {throughput_ratio:.3f})"
    )
    assert_invariants(report, [worker])
    assert done
    # Integration A's events all arrive, after the outage, each order still in order.
    outcomes = report.details["terminal_by_event"]
    assert all(outcomes.get(e) == ["delivered"] for e in down), [
        (e, outcomes.get(e)) for e in down if outcomes.get(e) != ["delivered"]
    ][:10]
    assert all(first_ok[e] >= outage_end - 0.5 for e in down_in_outage)
    assert on_time_ratio >= 0.9, (baseline, during)
    assert report.dead_lettered == 0
    assert down_delivered and max(down_delivered) - outage_end <= 120
    assert rss_growth is not None and rss_growth < 40, (early, late)


# -- 4. a large mixed run: every input record ends exactly once --------------------------------

MIXED_ORDERS = 2000
SHAPES = (
    ("opened", "progress", "completed"),
    ("opened", "cancelled"),
    ("completed",),
    ("opened", "progress", "progress", "completed"),
    ("opened", "progress", "cancelled"),
)
EXHAUSTED_INTEGRATION = "ashby:EXHAUST"  # every request answers 503: retries run out
INACTIVE_INTEGRATION = "ashby:INACTIVE"  # 403 INTEGRATION.INACTIVE: permanent
FLAKY_INTEGRATION = "lever:GAMMA3"  # 10 % transient 503s


def shaped(tgt: dict[str, Any], tag: str, shape: tuple[str, ...]) -> list[dict[str, Any]]:
    url = f"https://vendor.example/tests/{tag}"
    events = []
    for step, kind in enumerate(shape):
        event = make_event(kind, tgt, result_url=url)
        if kind == "progress":
            event["status_text"] = f"Step {step} {tag}"[:40]
        elif kind == "cancelled" and step % 2:
            event["kind"] = "cancelled"  # the factory's default is "expired"
        events.append(event)
    return events


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_large_mixed_run_every_event_ends_once(
    deployment: Deployment, sandboxes: Sandboxes, tmp_path: Path
) -> None:
    deployment.env["CONNECTOR_DELIVERY__MAX_ATTEMPTS"] = "10"
    # An integration that never answers ends in dead letters only under this policy; under
    # the default (park) its events wait for it, which the outage test covers.
    deployment.env["CONNECTOR_DELIVERY__ON_OUTAGE"] = "dead_letter"
    sandboxes.kombo.faults.add_error(503, target=EXHAUSTED_INTEGRATION)
    sandboxes.kombo.faults.add_error(503, target=FLAKY_INTEGRATION, probability=0.1, seed=41)
    sandboxes.comeet.faults.add_error(503, probability=0.03, seed=42)
    sandboxes.comeet.faults.add_drop(probability=0.01, seed=43)
    sandboxes.kombo.set_integration(INACTIVE_INTEGRATION, "inactive")

    ledger = Ledger()
    expected: dict[int, tuple[str, str | None]] = {}  # id(Sent) -> (outcome, DLQ code)
    rounds: list[list[Any]] = [[] for _ in range(5)]
    final_round: list[Any] = []

    def plant(sent: Any, outcome: str, code: str | None = None) -> Any:
        expected[id(sent)] = (outcome, code)
        return sent

    integrations = itertools.cycle(KOMBO_INTEGRATIONS)
    for i in range(MIXED_ORDERS):
        tag = f"mix-{i}"
        shape = SHAPES[i % len(SHAPES)]
        outcome, code = "delivered", None
        if i % 50 == 7:  # the vendor does not know this candidate
            tgt = target("comeet", f"c-{tag}")
            sandboxes.comeet.set_evaluation(f"c-{tag}", "not_found")
            outcome, code = "dead_lettered", "permanent"
        elif i % 200 == 9:
            tgt = target("kombo", f"k-{tag}", INACTIVE_INTEGRATION)
            outcome, code = "dead_lettered", "permanent"
        elif i % 400 == 11:
            tgt, shape = target("kombo", f"k-{tag}", EXHAUSTED_INTEGRATION), ("completed",)
            outcome, code = "dead_lettered", "retries_exhausted"
        elif i % 2:
            tgt = target("comeet", f"c-{tag}")
        else:
            tgt = target("kombo", f"k-{tag}", next(integrations))
        events = shaped(tgt, tag, shape)
        for step, event in enumerate(events):
            rounds[step].append(plant(ledger.event(event), outcome, code))
        if outcome != "delivered":
            continue
        final = events[-1]
        if i % 20 == 0:  # the same event published twice, right after the first copy
            rounds[0].append(plant(ledger.event(events[0], "duplicate"), "duplicate"))
        if i % 20 == 1:  # the final event again, at the very end
            final_round.append(plant(ledger.event(final, "duplicate"), "duplicate"))
        if i % 20 == 2:  # reopen after the final event
            reopen = make_event("opened", tgt, result_url=f"https://vendor.example/re/{tag}")
            final_round.append(plant(ledger.event(reopen, "reopen"), "rejected"))
        if i % 20 == 3:  # flip to the other final status
            flip_kind = "cancelled" if final["type"] == "order.completed" else "completed"
            flip = make_event(flip_kind, tgt, result_url=f"https://vendor.example/flip/{tag}")
            final_round.append(plant(ledger.event(flip, "flip"), "rejected"))
        if i % 20 == 4:  # progress on a final order
            late = make_event("progress", tgt, status_text=f"Late {tag}"[:40])
            final_round.append(plant(ledger.event(late, "late_progress"), "rejected"))
    for n, packages_integration in enumerate((*KOMBO_INTEGRATIONS, *KOMBO_INTEGRATIONS)):
        packages = make_event("packages", target("kombo", "x", packages_integration))
        packages["packages"][0]["name"] = f"Package set {n}"
        rounds[n % 3].append(plant(ledger.event(packages), "delivered"))
    # Records that are not valid events: dead-lettered at once, with the reason's code.
    for n in range(30):
        key = f"comeet|c-mix-bad-{n}".encode()
        rounds[0].append(
            plant(ledger.raw(key, b"{not json", "not_json"), "dead_lettered", "not_json")
        )
        other = make_event("opened", target("comeet", f"c-mix-wrongkey-{n}"))
        rounds[1].append(
            plant(
                ledger.raw(b"comeet|somebody-else", json.dumps(other).encode(), "wrong_key"),
                "dead_lettered",
                "key_mismatch",
            )
        )
        long = make_event("progress", target("comeet", f"c-mix-long-{n}"), status_text="x" * 41)
        rounds[2].append(
            plant(ledger.event(long, "over_limit"), "dead_lettered", "contract_violation")
        )
        missing = make_event("completed", target("kombo", f"k-mix-schema-{n}"))
        del missing["outcome"]
        rounds[2].append(
            plant(
                ledger.raw(
                    f"kombo|workday:ACME1|k-mix-schema-{n}".encode(),
                    json.dumps(missing).encode(),
                    "schema",
                ),
                "dead_lettered",
                "schema",
            )
        )
    stream = [sent for batch in (*rounds, final_round) for sent in batch]
    assert len(stream) == len(ledger.records)

    worker = await start(deployment.worker("w1", start=False))
    started = time.monotonic()
    async with (
        publisher_for(deployment, ledger) as publisher,
        follower_for(deployment) as follower,
    ):
        for batch in (*rounds, final_round):
            await publisher.send(batch)
        done = await follower.wait_all_ended(ledger, timeout=200, settle_s=2.0)
        report = check(
            ledger, follower.audit, follower.dlq, received(sandboxes), deployment.events_topic
        )
        dlq_codes: dict[tuple[int, int], list[str]] = {}
        for letter in follower.dlq:
            source = letter.get("source") or {}
            dlq_codes.setdefault((source.get("partition"), source.get("offset")), []).append(
                letter["code"]
            )
    report.elapsed_s = round(time.monotonic() - started, 1)
    terminal = report.details["terminal_by_source"]
    wrong: list[dict[str, Any]] = []
    not_once: list[dict[str, Any]] = []
    for sent in ledger.records:
        want_outcome, want_code = expected[id(sent)]
        outcomes = terminal.get(sent.source, [])
        codes = dlq_codes.get(sent.source, [])
        if len(outcomes) != 1:
            not_once.append({"label": sent.label, "source": sent.source, "outcomes": outcomes})
        elif outcomes[0] != want_outcome or (want_code is not None and codes != [want_code]):
            wrong.append(
                {
                    "label": sent.label,
                    "event_id": sent.event_id,
                    "want": (want_outcome, want_code),
                    "got": (outcomes[0], codes),
                }
            )
    labels = Counter(s.label for s in ledger.records)
    record(
        "large_mixed_run",
        report,
        tmp_path,
        {
            "labels": dict(labels),
            "outcomes": dict(report.details["per_outcome"]),
            "not_exactly_once": len(not_once),
            "unexpected_outcome": len(wrong),
            "all_ended": done,
        },
    )
    assert_invariants(report, [worker])
    assert done
    assert not not_once, f"{len(not_once)} records without exactly one terminal: {not_once[:10]}"
    assert not wrong, f"{len(wrong)} records with an unexpected outcome: {wrong[:10]}"
