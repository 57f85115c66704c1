"""Issue 3 acceptance: events in, exact vendor bodies out, guard, duplicates, dead letters."""

from __future__ import annotations

import json

import pytest

from connector.domain.events import event_adapter
from connector.sandbox import Sandboxes
from connector.vendors import map_event
from tests.e2e.harness import KOMBO_KEY, Deployment, terminal_by_event
from tests.factories import make_event, record, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def received(sb: Sandboxes) -> list[dict]:
    return [*sb.kombo.recorded(), *sb.comeet.recorded()]


def _kombo_entries(sb: Sandboxes, order_id: str) -> list[dict]:
    return [e for e in sb.kombo.recorded() if e["path"].endswith(f"/{order_id}/result")]


def _comeet_entries(sb: Sandboxes, evaluation_id: str) -> list[dict]:
    return [e for e in sb.comeet.recorded() if e["query"].get("evaluation_id") == evaluation_id]


async def test_every_event_type_reaches_both_vendors_exactly(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    kombo_t, comeet_t = target("kombo", "k-ord-1"), target("comeet", "c-eval-1")
    expired_k, expired_c = target("kombo", "k-ord-2"), target("comeet", "c-eval-2")
    events = [
        make_event("opened", kombo_t),
        make_event("progress", kombo_t),
        make_event("completed", kombo_t),
        make_event("opened", comeet_t),
        make_event("progress", comeet_t),
        make_event("completed", comeet_t),
        make_event("cancelled", expired_k),
        make_event("cancelled", expired_c),
        make_event("packages", kombo_t),
    ]
    deployment.worker()
    await deployment.publish(events)
    audit = await deployment.audit_until_terminal(e["event_id"] for e in events)

    assert terminal_by_event(audit) == {e["event_id"]: ["delivered"] for e in events}
    k_bodies = [e["body"] for e in _kombo_entries(sandboxes, "k-ord-1")]
    c_bodies = [e["body"] for e in _comeet_entries(sandboxes, "c-eval-1")]
    expected = {e["event_id"]: map_event(event_adapter.validate_python(e)).body for e in events}
    assert k_bodies == [expected[e["event_id"]] for e in events[0:3]]
    assert c_bodies == [expected[e["event_id"]] for e in events[3:6]]
    # Spot-check the contract-relevant literals, independent of the mapping code.
    assert [b["status"] for b in k_bodies] == ["OPEN", "OPEN", "COMPLETED"]
    assert k_bodies[2]["completed_at"] == "2026-11-23T11:00:00.456Z"
    assert [b["status"] for b in c_bodies] == ["Assessment sent", "Test started", "completed"]
    assert c_bodies[2]["outcome"] == "passed" and 1 <= c_bodies[2]["score"] <= 5
    assert _comeet_entries(sandboxes, "c-eval-2")[0]["body"]["outcome"] == "review"
    assert _kombo_entries(sandboxes, "k-ord-2")[0]["body"]["status"] == "CANCELLED"
    packages = [e for e in sandboxes.kombo.recorded() if e["path"].endswith("/packages")]
    assert packages[0]["body"]["packages"][0]["id"] == "1001"
    assert all(e["status_code"] in (200, 204) for e in received(sandboxes))
    assert sandboxes.kombo.order("workday:ACME1", "k-ord-1").status == "COMPLETED"
    # Every record says who did what; no secret travels in the audit.
    assert all(r["worker_id"] == "w1" for r in audit)
    assert KOMBO_KEY not in json.dumps(audit)
    assert "JVBERi" not in json.dumps(audit)  # attachment content never audited


async def test_guard_duplicates_and_dead_letters(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    order = target("comeet", "c-guard")
    completed = make_event("completed", order)
    reopen = make_event("opened", order)
    flip = make_event("cancelled", order)
    after = make_event("completed", target("kombo", "k-after"))
    bad_records = [
        (b"comeet|c-guard", b"{not json"),
        (b"wrong-key", json.dumps(make_event("opened", target("comeet", "c-x"))).encode()),
        record(make_event("progress", target("comeet", "c-y"), status_text="x" * 41)),
    ]
    deployment.worker()
    await deployment.publish([completed, completed, reopen, flip])
    await deployment.publish_raw(bad_records)
    await deployment.publish([after])
    ids = [completed["event_id"], reopen["event_id"], flip["event_id"], after["event_id"]]
    audit = await deployment.audit_until_terminal(ids, invalid=2)

    outcomes = terminal_by_event(audit)
    assert outcomes[completed["event_id"]] == ["delivered", "duplicate"]
    assert outcomes[reopen["event_id"]] == ["rejected"]
    assert outcomes[flip["event_id"]] == ["rejected"]
    assert outcomes[after["event_id"]] == ["delivered"]  # the worker went on
    # Neither the duplicate nor the rejected transitions reached the vendor.
    bodies = [e["body"] for e in _comeet_entries(sandboxes, "c-guard")]
    assert bodies == [map_event(event_adapter.validate_python(completed)).body]
    assert not _comeet_entries(sandboxes, "c-y")
    rejected = next(r for r in audit if r["event_id"] == flip["event_id"] and r["terminal"])
    assert rejected["reason"] == (
        "order is COMPLETED at the vendor: cannot change a final order to CANCELLED"
    )

    letters = await deployment.read(deployment.dlq_topic, lambda rs: len(rs) >= 3)
    reasons = {letter["code"]: letter["reason"] for letter in letters}
    assert reasons["not_json"].startswith("value is not valid JSON")
    assert "does not match the event's target 'comeet|c-x'" in reasons["key_mismatch"]
    assert reasons["contract_violation"] == (
        "comeet contract: status: String should have at most 40 characters"
    )
    assert all(letter["original_value_b64"] for letter in letters)


async def test_restarted_worker_recovers_guard_from_changelog(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    order = target("kombo", "k-restart")
    completed = make_event("completed", order)
    first = deployment.worker("w1")
    await deployment.publish([completed])
    await deployment.audit_until_terminal([completed["event_id"]])
    first.stop()
    # A different worker id means a fresh local store: the state must come from the changelog.
    deployment.worker("w2")
    reopen, flip = make_event("opened", order), make_event("cancelled", order)
    await deployment.publish([reopen, flip, completed])
    audit = await deployment.audit_until_terminal([reopen["event_id"], flip["event_id"]])
    audit = await deployment.read(
        deployment.audit_topic,
        lambda rs: sum(1 for r in rs if r["terminal"]) >= 4,
    )
    outcomes = terminal_by_event(audit)
    assert outcomes[reopen["event_id"]] == ["rejected"]
    assert outcomes[flip["event_id"]] == ["rejected"]
    assert outcomes[completed["event_id"]] == ["delivered", "duplicate"]
    assert len(_kombo_entries(sandboxes, "k-restart")) == 1
