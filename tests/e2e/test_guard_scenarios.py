"""Issue 10's guard scenarios, end to end: real broker, sandboxes over sockets, a worker process.

(a) E1 opened, E2 completed, then E1 again (a replayed copy, as ``connector dlq replay``
    publishes it), while E1 exhausts its retries in a short outage of its target. The vendor
    must never receive OPEN after COMPLETED: E1's copy is older than E2 (its sequence is the
    offset where the order first tried it), so it is superseded. Two kinds of outage: 503s
    (the vendor refused every attempt: nothing arrived) and dropped connections (every
    attempt may have arrived: the pending mark stays).
(b) A completion the vendor refuses permanently (a 4xx) is dead-lettered and leaves the order
    open at the vendor, so a later cancellation of that order is delivered.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from connector.sandbox import Sandboxes
from tests.e2e.harness import Deployment
from tests.e2e.invariants import (
    Follower,
    Ledger,
    assert_invariants,
    check,
    follower_for,
    publisher_for,
    received,
    start,
)
from tests.e2e.vendor_view import unterminated, vendor_view
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

MAX_ATTEMPTS = 4  # the e2e deployment's CONNECTOR_DELIVERY__MAX_ATTEMPTS


def _order(vendor: str, tag: str) -> tuple[dict[str, Any], str]:
    """A target with a fault target of its own (Kombo: the integration; Comeet: the id)."""
    if vendor == "kombo":
        integration = f"ashby:{tag.upper()}"
        return target("kombo", f"k-{tag}", integration), integration
    return target("comeet", f"c-{tag}"), f"c-{tag}"


def _terminal(audit: list[dict[str, Any]], sent: Any) -> list[str]:
    return [
        r["outcome"]
        for r in audit
        if r["terminal"]
        and (r.get("source") or {}).get("partition") == sent.partition
        and (r.get("source") or {}).get("offset") == sent.offset
    ]


@pytest.mark.parametrize("policy", ["dead_letter", "park"])
async def test_replayed_open_after_completion_never_reaches_the_vendor(
    deployment: Deployment, sandboxes: Sandboxes, tmp_path: Path, policy: str
) -> None:
    """``dead_letter``: the scenario as issue 10 states it (E1 is dead-lettered, its copy is
    superseded by E2). ``park`` (the outage policy's default): E1 waits in the parking
    topic, E2 and E1's copy follow it there, and all go out in order once the target answers
    (E1's copy is then a duplicate)."""
    assert deployment.env["CONNECTOR_DELIVERY__MAX_ATTEMPTS"] == str(MAX_ATTEMPTS)
    deployment.env["CONNECTOR_DELIVERY__ON_OUTAGE"] = policy
    ledger = Ledger()
    cases = []
    drop_rules = []
    for vendor in ("kombo", "comeet"):
        for outage in ("503", "drop"):
            tag = f"guard-a-{outage}-{vendor}"
            tgt, fault_target = _order(vendor, tag)
            faults = (sandboxes.kombo if vendor == "kombo" else sandboxes.comeet).faults
            if outage == "503":
                faults.add_error(503, target=fault_target, count=MAX_ATTEMPTS)
            else:
                # Until removed: aiohttp resends an idempotent PUT once on a dropped keep-alive
                # connection, so a count would not map to the connector's attempts.
                drop_rules.append((faults, faults.add_drop(target=fault_target)))
            e1 = make_event("opened", tgt, result_url=f"https://vendor.example/tests/{tag}")
            e2 = make_event("completed", tgt, result_url=f"https://vendor.example/results/{tag}")
            cases.append((vendor, outage, e1, e2, [ledger.event(e1)]))

    def settled(follower: Follower) -> bool:
        """Every record published so far ended, or (policy park) its event is parked."""
        ended = follower.terminal_sources | follower.dlq_sources
        parked = {r["event_id"] for r in follower.audit if r["outcome"] == "parked"}
        return all(s.source in ended or s.event_id in parked for s in ledger.records)

    worker = await start(deployment.worker("w1", start=False))
    started = time.monotonic()
    async with publisher_for(deployment, ledger) as publisher, follower_for(deployment) as follower:
        # 503 outages: E1, E2 and E1's copy in one go (E2 waits behind E1's retries).
        # Dropped connections: E1 first; once it gave up the connection is healthy again.
        late = []
        for _, outage, e1, e2, records in cases:
            if outage == "503":
                records += [ledger.event(e2), ledger.event(e1, "replay")]
        await publisher.send(ledger.records)
        assert await follower.wait(settled, timeout=60)
        for faults, rule in drop_rules:
            faults.remove(rule)
        for _, outage, e1, e2, records in cases:
            if outage == "drop":
                records += [ledger.event(e2), ledger.event(e1, "replay")]
                late += records[1:]
        await publisher.send(late)
        done = await follower.wait_all_ended(ledger, timeout=90, settle_s=1.0)
        audit = follower.audit
        report = check(ledger, audit, follower.dlq, received(sandboxes), deployment.events_topic)
    view = vendor_view(ledger, received(sandboxes))
    outcomes = {
        f"{vendor}/{outage}": [_terminal(audit, sent) for sent in records]
        for vendor, outage, _, _, records in cases
    }
    parked = sorted({r["event_id"] for r in audit if r["outcome"] == "parked"})
    print(
        f"\n[guard_a/{policy}] events {len(ledger.events)}, records {len(ledger.records)}, "
        f"vendor requests {view.requests}, regressions {len(view.regressions)}, out-of-order "
        f"{len(view.out_of_order)}, duplicate vendor calls {view.duplicate_calls}, "
        f"unterminated {len(unterminated(ledger, audit, deployment.events_topic))}, parked "
        f"events {len(parked)}, elapsed {time.monotonic() - started:.1f}s\n"
        f"[guard_a/{policy}] outcomes {outcomes}"
    )
    assert done
    assert not view.regressions, view.regressions
    assert not view.out_of_order, view.out_of_order
    assert_invariants(report, [worker])
    letters = {d["event_id"]: d["code"] for d in follower.dlq}
    for vendor, outage, e1, e2, _ in cases:
        case = f"{vendor}/{outage}"
        assert view.receipts[e2["event_id"]] == 1, case
        if policy == "dead_letter":
            # E1 ran out of attempts, E2 reached the vendor, E1's copy was turned away.
            assert outcomes[case] == [["dead_lettered"], ["delivered"], ["rejected"]], case
            assert letters.get(e1["event_id"]) == "retries_exhausted", case
            if outage == "503":
                assert view.calls[e1["event_id"]] == MAX_ATTEMPTS, case
        else:
            # E1 waited out the outage parked, then everything went in order.
            assert e1["event_id"] in parked, case
            assert outcomes[case] == [["delivered"], ["delivered"], ["duplicate"]], case
            assert view.receipts[e1["event_id"]] == 1, case
    final = view.final_at_vendor
    assert sorted(final.values()) == ["COMPLETED"] * len(cases), final


async def test_permanently_refused_completion_then_cancellation_is_delivered(
    deployment: Deployment, sandboxes: Sandboxes, tmp_path: Path
) -> None:
    ledger = Ledger()
    cases = []
    for vendor in ("kombo", "comeet"):
        tag = f"guard-b-{vendor}"
        tgt, fault_target = _order(vendor, tag)
        opened = make_event("opened", tgt, result_url=f"https://vendor.example/tests/{tag}")
        completed = make_event("completed", tgt, result_url=f"https://vendor.example/results/{tag}")
        cancelled = make_event("cancelled", tgt, result_url=f"https://vendor.example/tests/{tag}")
        cancelled["kind"] = "cancelled"  # the factory's default is "expired"
        cases.append((vendor, fault_target, opened, completed, cancelled))

    worker = await start(deployment.worker("w1", start=False))
    started = time.monotonic()
    async with publisher_for(deployment, ledger) as publisher, follower_for(deployment) as follower:
        # The order is open at the vendor first.
        await publisher.send([ledger.event(opened) for _, _, opened, _, _ in cases])
        assert await follower.wait_all_ended(ledger, timeout=60)
        # Its completion is refused for good: Kombo 400 PLATFORM.INPUT_INVALID, Comeet 404.
        for vendor, fault_target, *_ in cases:
            if vendor == "kombo":
                sandboxes.kombo.faults.add_error(
                    400, code="PLATFORM.INPUT_INVALID", target=fault_target, count=1
                )
            else:
                sandboxes.comeet.faults.add_error(404, target=fault_target, count=1)
        await publisher.send([ledger.event(completed) for _, _, _, completed, _ in cases])
        assert await follower.wait_all_ended(ledger, timeout=60)
        # Later, the order is cancelled: the vendor still has it open, so this goes out.
        await publisher.send([ledger.event(cancelled) for _, _, _, _, cancelled in cases])
        done = await follower.wait_all_ended(ledger, timeout=60, settle_s=1.0)
        audit = follower.audit
        report = check(ledger, audit, follower.dlq, received(sandboxes), deployment.events_topic)
    view = vendor_view(ledger, received(sandboxes))
    outcomes = {
        vendor: [
            _terminal(audit, next(s for s in ledger.records if s.event_id == e["event_id"]))
            for e in events
        ]
        for vendor, _, *events in cases
    }
    print(
        f"\n[guard_b] events {len(ledger.events)}, vendor requests {view.requests}, "
        f"regressions {len(view.regressions)}, duplicate vendor calls {view.duplicate_calls}, "
        f"elapsed {time.monotonic() - started:.1f}s\n[guard_b] outcomes {outcomes}"
    )
    assert done
    assert_invariants(report, [worker])
    assert not view.regressions, view.regressions
    assert not view.out_of_order, view.out_of_order
    for vendor, _, _, completed, cancelled in cases:
        assert outcomes[vendor] == [["delivered"], ["dead_lettered"], ["delivered"]], vendor
        assert view.calls[completed["event_id"]] == 1, vendor  # permanent: no retry
        assert view.receipts[cancelled["event_id"]] == 1, vendor
    letters = {d["event_id"]: d["code"] for d in follower.dlq}
    assert {letters[c["event_id"]] for _, _, _, c, _ in cases} == {"permanent"}
    kombo_order = sandboxes.kombo.order("ashby:GUARD-B-KOMBO", "k-guard-b-kombo")
    assert kombo_order is not None and kombo_order.status == "CANCELLED"
    evaluation = sandboxes.comeet.evaluation("c-guard-b-comeet")
    assert evaluation is not None and evaluation.status == "completed"
    assert evaluation.body is not None and evaluation.body.get("outcome") == "review"
