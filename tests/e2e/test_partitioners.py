"""The lifecycle guard holds whatever partitioner the producer used (issue 10).

Three producers publish orders, each partitioning its own way:

* ``murmur2``: aiokafka's (and the Java client's) default partitioner;
* ``crc32``: librdkafka's default (``consistent_random``): ``crc32(key) % partitions`` for a
  non-null key, computed here and given as an explicit partition;
* ``random``: an explicit partition chosen at random once per order (a producer that picks
  partitions itself; every event of the order goes there).

Three workers deliver every lifecycle; then partitions move twice (one worker stops,
another starts, twice), and for every order the test publishes a reopen, a flip to the other
final status, a late progress and replayed copies of the order's earlier events, each to the
order's partition. None of them may reach the sandbox, and every record must end with a
terminal audit record. The order state has to live with the order's events: a design that
wrote it to the key's murmur2 changelog partition lost it (for crc32 and random orders) once
another worker rebuilt the events' partition from its changelog.

The seed of the random partitions is printed (``PARTITIONERS_SEED`` sets it).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from connector.sandbox import Sandboxes
from tests.e2e.harness import Deployment
from tests.e2e.invariants import (
    FAST_GROUP,
    KOMBO_INTEGRATIONS,
    Ledger,
    Sent,
    check,
    follower_for,
    lifecycle,
    log_excerpt,
    received,
    record_report,
    start,
)
from tests.e2e.test_scale_out import owners, wait_group
from tests.e2e.vendor_view import unterminated, vendor_view
from tests.factories import key_of, make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 6
ORDERS_PER_PRODUCER = 40
PRODUCERS = ("murmur2", "crc32", "random")
SEED = int(os.environ.get("PARTITIONERS_SEED", "1010"))


def murmur2_partition(key: bytes, partitions: int = PARTITIONS) -> int:
    """aiokafka's DefaultPartitioner for a non-null key (the Java client's too)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int = PARTITIONS) -> int:
    """librdkafka's ``consistent``/``consistent_random`` for a non-null key:
    ``rd_crc32(key, keylen) % partition_cnt`` on unsigned values (zlib's CRC-32)."""
    return zlib.crc32(key) % partitions


class PartitionedPublisher:
    """One producer; each record goes to the partition chosen for its order (None: murmur2)."""

    def __init__(self, deployment: Deployment) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=deployment.bootstrap,
            acks="all",
            max_request_size=4_000_000,
            linger_ms=5,
            **deployment.client_config,
        )
        self._topic = deployment.events_topic

    async def __aenter__(self) -> PartitionedPublisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, records: list[tuple[Sent, int | None]]) -> None:
        pending = []
        for sent, partition in records:
            sent.sent_at = time.time()
            future = await self._producer.send(
                self._topic, sent.value, key=sent.key, partition=partition
            )
            pending.append((sent, partition, future))
        for sent, partition, future in pending:
            metadata = await future
            assert partition is None or metadata.partition == partition
            sent.partition, sent.offset = metadata.partition, metadata.offset


@pytest.mark.timeout(300)
async def test_guard_holds_for_every_producer_partitioner(
    deployment: Deployment, sandboxes: Sandboxes, tmp_path: Path
) -> None:
    deployment.env.update(FAST_GROUP)
    deployment.env["CONNECTOR_TOPICS__PARTITIONS"] = str(PARTITIONS)
    deployment.env["CONNECTOR_DELIVERY__MAX_ATTEMPTS"] = "10"
    rng = random.Random(SEED)
    print(f"\n[partitioners] seed {SEED} (PARTITIONERS_SEED={SEED} reproduces the partitions)")

    # -- the orders, each with its producer and partition --------------------------------
    ledger = Ledger()
    orders: list[dict[str, Any]] = []
    n = 0
    for producer in PRODUCERS:
        for i in range(ORDERS_PER_PRODUCER):
            tag = f"pt-{producer}-{i}"
            if n % 2:
                tgt = target("comeet", f"c-{tag}")
            else:
                tgt = target("kombo", f"k-{tag}", KOMBO_INTEGRATIONS[n % 3])
            n += 1
            events = lifecycle(tgt, tag, "cancelled" if i % 3 == 1 else "completed")
            key = key_of(events[0])
            partition: int | None
            if producer == "murmur2":
                partition = None
            elif producer == "crc32":
                partition = crc32_partition(key)
            else:
                partition = rng.randrange(PARTITIONS)
            expected = murmur2_partition(key) if partition is None else partition
            orders.append(
                {
                    "producer": producer,
                    "tag": tag,
                    "target": tgt,
                    "events": events,
                    "partition": partition,
                    "lands_on": expected,
                    "off_murmur2": expected != murmur2_partition(key),
                }
            )
    first_wave: list[tuple[Sent, int | None]] = []
    for step in range(3):  # in rounds: orders interleave, each keeps its own order
        for order in orders:
            first_wave.append((ledger.event(order["events"][step]), order["partition"]))

    workers = [deployment.worker(f"w{i}", start=False) for i in (1, 2, 3)]
    await asyncio.gather(*(start(w) for w in workers))
    timings = {"three_ready_s": await wait_group(deployment, workers, 3)}
    started = time.monotonic()
    async with PartitionedPublisher(deployment) as publisher, follower_for(deployment) as follower:
        await publisher.send(first_wave)
        assert await follower.wait_all_ended(ledger, timeout=90), log_excerpt(workers[0].log_path)
        for sent, partition in first_wave:
            assert partition is None or sent.partition == partition
        before = owners(follower.audit, deployment.events_topic)

        # -- partitions move twice: one worker stops, another starts -----------------------
        live = list(workers)
        for round_, (leaving, joining) in enumerate((("w1", "w4"), ("w2", "w5")), 1):
            gone = next(w for w in live if w.worker_id == leaving)
            await asyncio.to_thread(gone.stop)
            live.remove(gone)
            timings[f"move{round_}_stopped_s"] = await wait_group(deployment, live, 2)
            newcomer = await start(deployment.worker(joining, start=False))
            workers.append(newcomer)
            live.append(newcomer)
            timings[f"move{round_}_joined_s"] = await wait_group(deployment, live, 3)

        # -- reopen, flip, late progress and replays, to every order's partition -----------
        watermark = {"kombo": sandboxes.kombo.request_log.next_index}
        watermark["comeet"] = sandboxes.comeet.request_log.next_index
        second_wave: list[tuple[Sent, int | None]] = []
        for order in orders:
            tgt, tag, events = order["target"], order["tag"], order["events"]
            final = events[-1]
            flip_kind = "cancelled" if final["type"] == "order.completed" else "completed"
            attempts = [
                make_event("opened", tgt, result_url=f"https://vendor.example/re/{tag}"),
                make_event(flip_kind, tgt, result_url=f"https://vendor.example/flip/{tag}"),
                make_event("progress", tgt, status_text=f"Late {tag}"[:40]),
            ]
            order["attempts"] = [ledger.event(e, "attempt") for e in attempts]
            order["replays"] = [ledger.event(e, "replay") for e in events]
            for sent in (*order["attempts"], *order["replays"]):
                second_wave.append((sent, order["partition"]))
        await publisher.send(second_wave)
        done = await follower.wait_all_ended(ledger, timeout=90, settle_s=2.0)
        after = owners(follower.audit, deployment.events_topic)
        audit, dlq = follower.audit, follower.dlq
    elapsed = time.monotonic() - started

    requests = received(sandboxes)
    view = vendor_view(ledger, requests)
    report = check(ledger, audit, dlq, requests, deployment.events_topic)
    late_requests = [e for e in requests if e["index"] >= watermark[e["vendor"]]]
    late_by_event: dict[str, list[Any]] = {}
    for entry in late_requests:
        event_id = ledger.event_of(entry["vendor"], entry["key"], entry["body"]) or "?"
        late_by_event.setdefault(event_id, []).append(entry["status_code"])
    terminal = report.details["terminal_by_source"]
    missing = unterminated(ledger, audit, deployment.events_topic)
    per_producer: dict[str, dict[str, Any]] = {}
    for producer in PRODUCERS:
        mine = [o for o in orders if o["producer"] == producer]
        attempt_ids = {s.event_id for o in mine for s in o["attempts"]}
        replay_ids = {s.event_id for o in mine for s in o["replays"]}
        per_producer[producer] = {
            "orders": len(mine),
            "orders_off_murmur2": sum(1 for o in mine if o["off_murmur2"]),
            "orders_moved": sum(1 for o in mine if after.get(_key(o)) != before.get(_key(o))),
            "attempts": len(attempt_ids),
            "attempts_reaching_vendor": sum(1 for e in attempt_ids if e in late_by_event),
            "attempts_accepted_by_vendor": sum(
                1
                for e in attempt_ids
                for code in late_by_event.get(e, [])
                if isinstance(code, int) and 200 <= code < 300
            ),
            "replays": sum(len(o["replays"]) for o in mine),
            "replays_reaching_vendor": sum(1 for e in replay_ids if e in late_by_event),
            "attempts_not_rejected": sum(
                1 for o in mine for s in o["attempts"] if terminal.get(s.source) != ["rejected"]
            ),
        }
    figures = {
        "seed": SEED,
        "events": len(ledger.events),
        "records": len(ledger.records),
        "second_wave_records": len(second_wave),
        "second_wave_requests_at_vendor": len(late_requests),
        "regressions": len(view.regressions),
        "accepted_regressions": view.accepted_regressions,
        "out_of_order": len(view.out_of_order),
        "duplicate_vendor_calls": view.duplicate_calls,
        "unterminated": len(missing),
        "all_ended": done,
        "elapsed_s": round(elapsed, 1),
        **{k: round(v, 1) for k, v in timings.items()},
        "per_producer": per_producer,
    }
    record_report("partitioners", report, tmp_path, figures)
    for producer, row in per_producer.items():
        print(f"[partitioners] {producer}: {row}")
    print(
        f"[partitioners] second wave: {len(second_wave)} records, {len(late_requests)} reached "
        f"the sandbox ({len(late_by_event)} events); regressions {len(view.regressions)} "
        f"(accepted {view.accepted_regressions}); unterminated {len(missing)}; duplicate "
        f"vendor calls {view.duplicate_calls}"
    )

    assert sum(o["off_murmur2"] for o in orders) > 0, "no order off its murmur2 partition"
    moved = [k for k in before if after.get(k) != before[k]]
    assert moved, "no order changed workers: the scenario did not move any partition"
    assert not missing, f"{len(missing)} records without a terminal audit record: {missing[:5]}"
    assert done
    assert len(late_requests) == 0, (
        f"{len(late_requests)} second-wave requests reached the sandbox: "
        f"{list(late_by_event.items())[:10]}"
    )
    assert not view.regressions, view.regressions[:10]
    assert not view.out_of_order, view.out_of_order[:10]
    assert all(row["attempts_not_rejected"] == 0 for row in per_producer.values()), per_producer


def _key(order: dict[str, Any]) -> str:
    tgt = order["target"]
    if tgt["vendor"] == "kombo":
        return f"kombo|{tgt['integration_id']}|{tgt['assessment_order_id']}"
    return f"comeet|{tgt['evaluation_id']}"
