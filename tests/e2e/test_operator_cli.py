"""Issue 13 items 1-2 and issue 14 items 3-4, end to end against the real broker.

One deployment and one worker for all of it (starting a worker is the expensive
part): an order that is retried, parked and delivered; an event from a producer on
a newer minor schema (unknown fields, headers); one of an unknown major version; a
refused Comeet result that is dead-lettered and replayed with its headers; bytes
that are not JSON. Then every operator command against what that left behind.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connector.ops.audit_view import partition_for_key
from connector.sandbox import Sandboxes
from connector.settings import child_environment
from tests.e2e.harness import Deployment
from tests.e2e.test_cli import ROOT, cli
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

INTEGRATION = "greenhouse:HWUTwvyx2wLoSUHp"  # long enough to be elided in the table
STORY = target("kombo", "ord-2026-000417", INTEGRATION)
STORY_KEY = f"kombo|{INTEGRATION}|ord-2026-000417"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def _publish(
    deployment: Deployment, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(deployment.events_topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def _records_of(deployment: Deployment, topic: str, key: bytes) -> list[Any]:
    """Every record of ``key`` on ``topic`` (all partitions), in offset order."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=deployment.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        found: list[Any] = []
        while True:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(m for m in messages if m.key == key)
            parts = list(consumer.assignment())
            if parts:
                ends = await consumer.end_offsets(parts)
                if all([await consumer.position(tp) >= ends[tp] for tp in parts]):
                    return sorted(found, key=lambda m: m.offset)
    finally:
        await consumer.stop()


async def _plant_audit_record(deployment: Deployment, partition: int, record: dict) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all")
    await producer.start()
    try:
        value = json.dumps(record).encode()
        await producer.send_and_wait(deployment.audit_topic, value, partition=partition)
    finally:
        await producer.stop()


async def test_an_operator_follows_orders_and_works_dead_letters(
    deployment: Deployment, sandboxes: Sandboxes
) -> None:
    env = deployment.env | {"COLUMNS": "160"}
    # Four failures in a row: three attempts open the circuit (the event parks), the
    # first probe fails, the second delivers; the completion waits behind it, in order.
    sandboxes.kombo.faults.add_error(
        503, code="REMOTE.SERVICE_UNAVAILABLE", target=INTEGRATION, count=4
    )
    sandboxes.comeet.set_evaluation("c-gone", "deleted")
    worker = deployment.worker(
        CONNECTOR_DELIVERY__BREAKER_FAILURES="3", CONNECTOR_DELIVERY__BREAKER_COOL_DOWN_S="0.3"
    )
    opened, completed = make_event("opened", STORY), make_event("completed", STORY)
    # Its headers travel through the parking topic with it.
    key = STORY_KEY.encode()
    story_headers = [("traceparent", TRACEPARENT.encode())]
    await _publish(deployment, key, json.dumps(opened).encode(), story_headers)
    await deployment.publish([completed])

    # A producer on a newer minor version: unknown fields, its own headers.
    evolved = make_event("completed", target("comeet", "c-evolved"))
    evolved |= {"schema_version": "1.3", "reviewer_v2": {"name": "Ada"}}
    evolved["target"]["tenant"] = "acme"
    await _publish(
        deployment,
        b"comeet|c-evolved",
        json.dumps(evolved).encode(),
        [("traceparent", TRACEPARENT.encode()), ("x-producer", b"svc-a")],
    )
    # A new major version: dead-lettered as such, never guessed at.
    future = make_event("completed", target("comeet", "c-future")) | {"schema_version": "2.0"}
    await _publish(
        deployment, b"comeet|c-future", json.dumps(future).encode(), [("x-producer", b"svc-b")]
    )
    # A refusal worth replaying once fixed, with headers to keep.
    gone = make_event("completed", target("comeet", "c-gone"))
    gone_headers = [("traceparent", TRACEPARENT.encode()), ("x-producer", b"svc-c"), ("e", b"")]
    await _publish(deployment, b"comeet|c-gone", json.dumps(gone).encode(), gone_headers)
    await deployment.publish_raw([(b"comeet|c-junk", b"not json")])

    ids = [opened["event_id"], completed["event_id"], evolved["event_id"], gone["event_id"]]
    audit = await deployment.audit_until_terminal(ids, invalid=2, timeout=90)

    # -- issue 14 item 3: unknown fields listed, never sent; unknown major dead-lettered ---
    evolved_end = next(r for r in audit if r["event_id"] == evolved["event_id"] and r["terminal"])
    assert evolved_end["outcome"] == "delivered"
    assert evolved_end["unknown_fields"] == ["reviewer_v2", "target.tenant"]
    sent = [e for e in sandboxes.comeet.recorded() if "c-evolved" in json.dumps(e["query"])]
    assert sent and all("reviewer_v2" not in json.dumps(e["body"]) for e in sent)
    assert all("acme" not in json.dumps(e) for e in sent)

    # -- issue 14 item 4: dead letters keep headers; list shows open/replayed ----------------
    listing = await cli(env, "dlq", "list", "--json")
    letters = {d["code"]: d for d in map(json.loads, listing.stdout.splitlines())}
    assert set(letters) == {"unsupported_version", "permanent", "not_json"}, listing.stderr
    assert "major version 2" in letters["unsupported_version"]["reason"]
    assert [h["key"] for h in letters["unsupported_version"]["headers"]] == ["x-producer"]
    assert [h["key"] for h in letters["permanent"]["headers"]] == ["traceparent", "x-producer", "e"]
    assert all(d["status"] == "open" for d in letters.values())
    assert "3 dead letters (3 open, 0 replayed)" in listing.stderr

    dry = await cli(env, "dlq", "replay", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would replay 1 dead letters" in dry.stdout and "comeet|c-gone" in dry.stdout
    assert "refused 2 dead letters" in dry.stderr
    assert "not_json: 1" in dry.stderr and "unsupported_version: 1" in dry.stderr
    refused = await cli(env, "dlq", "replay", "--code", "schema")
    assert refused.returncode == 0 and "replayed 0" in refused.stdout  # nothing selected
    refused = await cli(env, "dlq", "replay", "--code", "unsupported_version")
    assert refused.returncode == 2 and "--force" in refused.stderr
    for flags, count in [
        (["--vendor", "kombo"], 0),
        (["--vendor", "comeet"], 3),  # unreadable ones by their Kafka key
        (["--target", "comeet"], 3),
        (["--target", f"kombo|{INTEGRATION}"], 0),
        (["--since", "1h"], 3),
        (["--until", "1h"], 0),
        (["--until", datetime.now(UTC).isoformat()], 3),
        (["--order", "comeet|c-gone"], 1),
    ]:
        shown = await cli(env, "dlq", "list", *flags)
        assert f"{count} dead letters" in shown.stderr, (flags, shown.stderr)

    sandboxes.comeet.set_evaluation("c-gone", "active")  # the cause is fixed
    replayed = await cli(env, "dlq", "replay", "--target", "comeet", "--since", "1h")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 dead letters" in replayed.stdout
    assert "refused 2 dead letters" in replayed.stderr
    again = await cli(env, "dlq", "replay", "--target", "comeet")
    assert "replayed 0" in again.stdout and "skipped 1 dead letters replayed before" in again.stderr
    after = await cli(env, "dlq", "list", "--status", "replayed")
    assert "1 dead letters (0 open, 1 replayed)" in after.stderr
    assert "comeet|c-gone" in after.stdout and "replayed 20" in after.stdout

    # The replay is the original with its headers, and it is delivered this time.
    copies = await _records_of(deployment, deployment.events_topic, b"comeet|c-gone")
    assert len(copies) == 2 and copies[1].value == copies[0].value
    assert copies[1].partition == copies[0].partition
    assert list(copies[1].headers) == gone_headers
    audit = await deployment.read(
        deployment.audit_topic,
        lambda rs: any(
            r["event_id"] == gone["event_id"] and r["outcome"] == "delivered" for r in rs
        ),
    )
    delivered = next(
        r
        for r in audit
        if r["event_id"] == gone["event_id"] and r["terminal"] and r["outcome"] == "delivered"
    )
    assert delivered["traceparent"] == TRACEPARENT  # from the restored headers

    # -- issue 13 item 1: audit tail ----------------------------------------------------------
    bad = await cli(env, "audit", "tail", "--outcome", "deliverd")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    # A record planted in another partition under the story's key: only the key's
    # partition is read, so it never shows.
    parts = int(env["CONNECTOR_TOPICS__PARTITIONS"])
    home = partition_for_key(STORY_KEY, parts)
    planted = {**evolved_end, "order_key": STORY_KEY, "reason": "PLANTED", "terminal": True}
    await _plant_audit_record(deployment, (home + 1) % parts, planted)
    tail = await cli(env, "audit", "tail", "--order", STORY_KEY)
    assert tail.returncode == 0, tail.stderr
    assert "PLANTED" not in tail.stdout
    rows = tail.stdout.splitlines()[2:]
    assert sum("delivered" in row for row in rows) == 2
    assert all("|ord-2026-000417 " in row for row in rows)  # the whole order id, always
    assert all(row[:4] == "2026" and row[10] == " " for row in rows)  # date and time
    assert any("parked" in row for row in rows) and any("failed" in row for row in rows)

    since = datetime.now(UTC)
    await asyncio.sleep(1.1)
    late = make_event("opened", target("comeet", "c-late"))
    await deployment.publish([late])
    await deployment.audit_until_terminal([late["event_id"]])
    recent = await cli(env, "audit", "tail", "--json", "--since", since.isoformat())
    recent_ids = {json.loads(line)["event_id"] for line in recent.stdout.splitlines()}
    assert recent_ids == {late["event_id"]}, recent.stdout

    # --follow starts at the end: it prints what comes next, not the retained topic.
    follow = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector.cli",
        "audit",
        "tail",
        "--follow",
        "--json",
        env=child_environment(env),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert follow.stderr is not None and follow.stdout is not None
        ready = b""
        while b"following from the end" not in ready:  # after any warnings
            ready = await asyncio.wait_for(follow.stderr.readline(), timeout=60)
            assert ready, "audit tail --follow ended"
        newest = make_event("opened", target("comeet", "c-next"))
        await deployment.publish([newest])
        line = await asyncio.wait_for(follow.stdout.readline(), timeout=60)
        assert json.loads(line)["event_id"] == newest["event_id"]
    finally:
        follow.terminate()
        await follow.wait()

    # -- issue 13 item 2: order show ----------------------------------------------------------
    shown = await cli(env, "order", "show", STORY_KEY)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"order    {STORY_KEY}" in text
    assert "status   COMPLETED (confirmed by the vendor)" in text
    assert "parked              no" in text
    assert "opened  delivered  5 attempts, parked on the way" in text
    assert "completed  delivered" in text
    assert "error: HTTP 503 REMOTE.SERVICE_UNAVAILABLE: " in text and "(4 times)" in text
    assert "PLANTED" not in text
    as_json = json.loads((await cli(env, "order", "show", STORY_KEY, "--json")).stdout)
    assert as_json["state"]["status"] == "COMPLETED"
    assert as_json["state"]["confirmed"]["event_id"] == completed["event_id"]
    assert as_json["state"]["parked"] is None
    opened_end = [r for r in as_json["timeline"] if r["event_id"] == opened["event_id"]][-1]
    assert opened_end["outcome"] == "delivered"  # from the parking topic
    assert opened_end["traceparent"] == TRACEPARENT  # its headers went through parking
    assert [e["outcome"] for e in as_json["events"]] == ["delivered", "delivered"]
    assert as_json["changelog"]["topic"] == f"{env['CONNECTOR_APP_ID']}-orders-changelog"
    assert as_json["changelog"]["partition"] == opened_partition(audit, opened["event_id"])
    later = await cli(env, "order", "show", STORY_KEY, "--since", since.isoformat())
    assert "status   COMPLETED" in later.stdout  # the state is always read
    assert "timeline: 0 audit records" in later.stdout
    unknown = await cli(env, "order", "show", "comeet|never-seen")
    assert unknown.returncode == 1 and "no audit records" in unknown.stderr

    # The worker that owns the order's partition serves its state (one key, never the table).
    base = f"http://127.0.0.1:{worker.web_port}/orders"
    async with httpx.AsyncClient(timeout=10) as http:
        served = await http.get(f"{base}/{quote(STORY_KEY, safe='')}")
        assert served.status_code == 200, served.text
        assert served.json()["state"]["status"] == "COMPLETED"
        assert served.json()["partition"] == as_json["changelog"]["partition"]
        missing = await http.get(f"{base}/{quote('comeet|never/seen', safe='')}")
        assert missing.status_code == 404
        assert missing.json()["order_key"] == "comeet|never/seen"
        assert (await http.get(f"{base}/not-a-key")).status_code == 400
        assert (await http.get(f"{base}/")).status_code == 404

    # The closing note's screenshot-equivalent (shown with pytest -s).
    print(f"$ connector audit tail --order '{STORY_KEY}'\n{tail.stdout}")
    print(f"$ connector order show '{STORY_KEY}'\n{text}")


def opened_partition(audit: list[dict], event_id: str) -> int:
    return next(r["source"]["partition"] for r in audit if r["event_id"] == event_id)
