"""``connector topics migrate``: move a stopped, drained deployment to a new partition count.

The events topic, the parking topic and the order table's changelog are co-partitioned,
and the table does not use a partitioner: an order's state lives in the changelog
partition its *events* arrive in, which the producers' partitioner decides
(:mod:`connector.app`). Adding partitions moves most keys (``hash % 4`` is not
``hash % 6``), so after a plain ``kafka-topics --alter`` an order's next event arrives
in a partition that has no state for it: a completed order could be reopened.

Decisions (README "Changing the partition count"):

* **In place.** Topic names and the app id stay (no new group, no replay, no producer
  reconfiguration of topic names). The events, parking and changelog topics grow to N
  (admin ``create_partitions``). The audit and dead-letter topics keep their count:
  nothing co-partitions with them, and ``order show`` reads an order's audit records
  from the one partition the default partitioner gives its key in the audit topic, so
  growing it would hide each order's history from before the move.
* **Only a stopped, drained deployment.** Refused (exit 2) while the group has members,
  and while its committed offsets are behind the end of the events or parking topic:
  every record already in the topics was placed by the old count, and must be processed
  before the states move. Producers must be stopped too (otherwise the group is never
  drained), and must come back knowing the new count.
* **The state follows the partitioner.** The tool reads the whole changelog (the newest
  record per key and partition; a tombstone deletes) and, for each order whose current
  state is not in ``partitioner(key) % N``, writes it there (``--partitioner murmur2``:
  Kafka's Java client and aiokafka, the default; ``crc32``: librdkafka's default). The
  moved state's sequences are shifted into the new partition's offsets and its parked
  marker dropped (:func:`connector.domain.lifecycle.relocate`): sequences are offsets of
  the input partition, and unshifted the order's next legitimate event, at a low offset
  of a new partition, would be judged older than what the vendor has.
* **Stale copies are tombstoned**, after the moved copies are on the broker. A stale
  copy is harmless to the worker that follows the partitioner (it reads the partition
  its event arrives in), but it is not harmless in general: the next migration would
  see the order in two partitions with no way to compare offsets across them, and a
  worker's local RocksDB store would keep it forever. With tombstones the changelog
  says where each order lives, compaction removes the old copies, and **the workers'
  local state directories need no wipe**: Faust's recovery resumes each partition's
  store at its persisted changelog offset and applies the new records (the moved
  states into the new partition, the tombstones as deletes). The memory store
  (``memory://``) keeps one dict for all partitions, so a key present in two
  partitions' changelogs recovers in no defined order: the tool refuses it.
* **Resumable.** Stopped half way, the same command finishes the job: topics already at
  N are left, an order whose moved copy is written but whose old copy is not yet
  tombstoned is recognised by the moved copy's ``connector-migrated-from`` header.

Pure planning (:func:`plan_rekey`, :func:`lags`) is separate from the broker calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.partitioner import murmur2

from connector.domain.lifecycle import decode_state, encode_state, relocate
from connector.infra.kafka_clients import admin_client, consumer, producer
from connector.infra.topics import changelog_topic
from connector.ops.audit_view import read_records
from connector.settings import Settings

__all__ = [
    "MIGRATED_FROM_HEADER",
    "PARTITIONERS",
    "Copy",
    "Move",
    "Plan",
    "crc32_partition",
    "lags",
    "migrate",
    "murmur2_partition",
    "plan_rekey",
]

logger = logging.getLogger(__name__)

MIGRATED_FROM_HEADER = "connector-migrated-from"  # JSON {partition, offset} of the copy moved

Partitioner = Callable[[bytes, int], int]


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Kafka's Java client and aiokafka's default partitioner for a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default (``consistent_random``) for a keyed record: CRC-32 of the key."""
    return zlib.crc32(key) % partitions


PARTITIONERS: dict[str, Partitioner] = {"murmur2": murmur2_partition, "crc32": crc32_partition}


# -- planning (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Copy:
    """One changelog record: an order's state (``value``) or its tombstone (``None``)."""

    key: bytes
    partition: int
    offset: int
    timestamp: int
    value: bytes | None
    moved_from: tuple[int, int] | None = None  # (partition, offset): written by a migration


@dataclass(frozen=True)
class Move:
    key: bytes
    source: int
    source_offset: int
    target: int
    value: bytes  # the state as it goes to ``target`` (sequences shifted)
    parked_dropped: bool = False


@dataclass
class Plan:
    partitions: int
    orders: int = 0  # keys with a live state
    moves: list[Move] = field(default_factory=list)
    tombstones: list[tuple[bytes, int]] = field(default_factory=list)  # (key, partition)
    conflicts: int = 0  # orders found live in more than one partition before this run
    unreadable: int = 0  # moved as they were: their sequences could not be shifted

    def flows(self) -> Counter[tuple[int, int]]:
        return Counter((m.source, m.target) for m in self.moves)


def latest_copies(records: Iterable[Copy]) -> dict[bytes, dict[int, Copy]]:
    """The newest record of each key in each partition (offset order within a partition)."""
    out: dict[bytes, dict[int, Copy]] = {}
    for record in records:
        per_partition = out.setdefault(record.key, {})
        known = per_partition.get(record.partition)
        if known is None or record.offset > known.offset:
            per_partition[record.partition] = record
    return out


def _current(live: list[Copy], target: int) -> tuple[Copy, int]:
    """The order's current state among its live copies, and how many competed.

    A copy this tool moved supersedes the copy it was made from (a run stopped before
    the tombstones). Otherwise one order in two partitions means its events went to
    both (a producer changed partitioners): the newest by timestamp wins.
    """
    sources = {c.moved_from for c in live if c.moved_from is not None}
    candidates = [c for c in live if (c.partition, c.offset) not in sources]
    best = max(candidates, key=lambda c: (c.timestamp, c.partition == target, c.offset))
    return best, len(candidates)


def plan_rekey(
    records: Iterable[Copy],
    partitions: int,
    partitioner: Partitioner,
    event_ends: Mapping[int, int],
) -> Plan:
    """Which states move where, and which stale copies are tombstoned.

    ``event_ends`` are the events topic's end offsets by partition (a partition that
    does not exist yet: 0): a moved state's sequences are shifted by
    ``end[target] - end[source]``, below the next offset of its new partition.
    """
    plan = Plan(partitions)
    for key, per_partition in sorted(latest_copies(records).items()):
        live = [c for c in per_partition.values() if c.value is not None]
        if not live:
            continue  # deleted: nothing to carry
        plan.orders += 1
        target = partitioner(key, partitions)
        current, competing = _current(live, target)
        if competing > 1:
            plan.conflicts += 1
        if current.partition != target:
            assert current.value is not None
            value, dropped = current.value, False
            try:
                state = decode_state(current.value)
            except (ValueError, KeyError, TypeError):
                state = None
            if state is None:
                plan.unreadable += 1
            else:
                shift = event_ends.get(target, 0) - event_ends.get(current.partition, 0)
                dropped = state.parked is not None
                value = encode_state(relocate(state, shift))
            plan.moves.append(Move(key, current.partition, current.offset, target, value, dropped))
        plan.tombstones += [(key, c.partition) for c in live if c.partition != target]
    return plan


def lags(
    committed: Mapping[TopicPartition, int],
    beginning: Mapping[TopicPartition, int],
    end: Mapping[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Records the group has not processed, by partition (only those behind).

    No commit (``-1`` or absent) counts from the oldest retained record, where the
    worker would start (``auto_offset_reset=earliest``).
    """
    out: dict[TopicPartition, int] = {}
    for tp, last in end.items():
        position = max(committed.get(tp, -1), beginning.get(tp, 0))
        if last > position:
            out[tp] = last - position
    return out


# -- the broker -----------------------------------------------------------------------------


@dataclass
class Deployment:
    counts: dict[str, int]  # topic -> partitions, the topics that exist
    members: list[str]  # "client id @ host" of the group's active members
    group_state: str
    behind: dict[TopicPartition, int]
    event_ends: dict[int, int]


def _members(described: Any) -> tuple[str, list[str]]:
    # DescribeGroupsResponse: groups = [(error_code, group_id, state, protocol_type,
    # protocol, members[(member_id, client_id, client_host, metadata, assignment)], ...)]
    state, members = "Dead", []
    for response in described:
        for group in response.groups:
            state = str(group[2])
            members += [f"{m[1]} @ {m[2].lstrip('/')}" for m in group[5]]
    return state, members


async def _counts(admin: AIOKafkaAdminClient, names: Iterable[str]) -> dict[str, int]:
    wanted = set(names) & set(await admin.list_topics())
    if not wanted:
        return {}
    return {
        t["topic"]: len(t.get("partitions", []))
        for t in await admin.describe_topics(sorted(wanted))
        if t.get("error_code", 0) == 0
    }


async def inspect(settings: Settings) -> Deployment:
    t = settings.topics
    names = [t.events, t.parking, changelog_topic(settings), t.audit, t.dead_letter]
    admin = admin_client(settings)
    await admin.start()
    try:
        counts = await _counts(admin, names)
        state, members = _members(await admin.describe_consumer_groups([settings.app_id]))
        tps = [
            TopicPartition(topic, p)
            for topic in (t.events, t.parking)
            for p in range(counts.get(topic, 0))
        ]
        committed = {
            tp: meta.offset
            for tp, meta in (
                await admin.list_consumer_group_offsets(settings.app_id, partitions=tps)
            ).items()
        }
    finally:
        await admin.close()
    reader = consumer(settings, enable_auto_commit=False, group_id=None)
    await reader.start()
    try:
        beginning = await reader.beginning_offsets(tps) if tps else {}
        end = await reader.end_offsets(tps) if tps else {}
    finally:
        await reader.stop()
    return Deployment(
        counts=counts,
        members=members,
        group_state=state,
        behind=lags(committed, beginning, end),
        event_ends={tp.partition: end[tp] for tp in tps if tp.topic == t.events},
    )


async def read_changelog(settings: Settings) -> list[Copy]:
    out = []
    async for m in read_records(settings, changelog_topic(settings)):
        headers = dict(m.headers or ())
        moved = headers.get(MIGRATED_FROM_HEADER)
        moved_from = None
        if moved is not None:
            doc = json.loads(moved)
            moved_from = (int(doc["partition"]), int(doc["offset"]))
        out.append(Copy(m.key, m.partition, m.offset, m.timestamp, m.value, moved_from))
    return out


async def _grow(settings: Settings, topics: list[str], partitions: int) -> None:
    admin = admin_client(settings)
    await admin.start()
    try:
        await admin.create_partitions({name: NewPartitions(partitions) for name in topics})
        # The producer below writes to the new partitions: wait until metadata has them.
        for _ in range(100):
            if all(c == partitions for c in (await _counts(admin, topics)).values()):
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _write(settings: Settings, plan: Plan) -> None:
    topic = changelog_topic(settings)
    prod = producer(settings)
    await prod.start()
    try:
        # The moved copies first, all on the broker before any tombstone: stopped in
        # between, the order is in two partitions and the header says which is current.
        for move in plan.moves:
            header = json.dumps({"partition": move.source, "offset": move.source_offset})
            await prod.send(
                topic,
                move.value,
                key=move.key,
                partition=move.target,
                headers=[(MIGRATED_FROM_HEADER, header.encode())],
            )
        await prod.flush()
        for key, partition in plan.tombstones:
            await prod.send(topic, None, key=key, partition=partition)
        await prod.flush()
    finally:
        await prod.stop()


# -- the command ----------------------------------------------------------------------------


def _say(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


def _refusals(settings: Settings, dep: Deployment, partitions: int) -> list[str]:
    t = settings.topics
    problems = []
    if settings.store.startswith("memory"):
        problems.append(
            "CONNECTOR_STORE is memory://: that store recovers every partition into one dict, "
            "so an order found in two partitions' changelogs recovers in no defined order; "
            "migrate a deployment that uses rocksdb://"
        )
    if t.events not in dep.counts:
        problems.append(f"the events topic {t.events} does not exist: nothing to migrate")
    co = [t.events, t.parking, changelog_topic(settings)]
    current = {name: dep.counts[name] for name in co if name in dep.counts}
    if any(count > partitions for count in current.values()):
        listing = ", ".join(f"{name} has {count}" for name, count in current.items())
        problems.append(f"Kafka cannot remove partitions: {listing}, asked for {partitions}")
    elif len(set(current.values()) - {partitions}) > 1:
        listing = ", ".join(f"{name} has {count}" for name, count in current.items())
        problems.append(f"the co-partitioned topics disagree: {listing}")
    if dep.members:
        problems.append(
            f"consumer group {settings.app_id} has {len(dep.members)} active member(s) "
            f"({dep.group_state}): {', '.join(dep.members)}; stop every worker first "
            "(a killed one leaves the group after the session timeout)"
        )
    if dep.behind:
        by_topic: dict[str, list[str]] = {}
        for tp, n in sorted(dep.behind.items()):
            by_topic.setdefault(tp.topic, []).append(f"p{tp.partition} {n}")
        listing = "; ".join(
            f"{topic} {sum(n for tp, n in dep.behind.items() if tp.topic == topic)} records "
            f"({', '.join(parts)})"
            for topic, parts in by_topic.items()
        )
        problems.append(
            f"not drained: consumer group {settings.app_id} is behind the end of {listing}; "
            "stop the producers, run the workers until the lag is 0, stop them, then migrate"
        )
    return problems


def _describe(
    settings: Settings, dep: Deployment, plan: Plan, partitions: int, name: str, out: TextIO
) -> list[str]:
    """Prints what the migration does; returns the topics it grows."""
    t = settings.topics
    changelog = changelog_topic(settings)
    grow = []
    _say(out, f"deployment {settings.app_id}: to {partitions} partitions (partitioner {name})")
    for role, topic in (("events", t.events), ("parking", t.parking), ("changelog", changelog)):
        count = dep.counts.get(topic)
        if count is None:
            _say(out, f"  {role:<11} {topic:<40} missing (created with {partitions} later)")
        elif count < partitions:
            grow.append(topic)
            _say(out, f"  {role:<11} {topic:<40} {count} -> {partitions}")
        else:
            _say(out, f"  {role:<11} {topic:<40} {count} (already)")
    for role, topic in (("audit", t.audit), ("dead letter", t.dead_letter)):
        if topic in dep.counts:
            _say(
                out, f"  {role:<11} {topic:<40} {dep.counts[topic]} (unchanged: not co-partitioned)"
            )
    _say(out, f"group {settings.app_id}: no active member, drained (lag 0 on events and parking)")
    stay = plan.orders - len(plan.moves)
    _say(out, f"order states: {plan.orders}; {len(plan.moves)} move, {stay} stay")
    for (source, target), n in sorted(plan.flows().items()):
        _say(out, f"  partition {source} -> {target}: {n}")
    _say(out, f"stale copies tombstoned: {len(plan.tombstones)}")
    dropped = sum(1 for m in plan.moves if m.parked_dropped)
    if dropped:
        _say(out, f"parked markers dropped (the parking topic is drained): {dropped}")
    if plan.conflicts:
        _say(
            out,
            f"warning: {plan.conflicts} order(s) had state in more than one partition (their "
            "events came by different partitioners); the newest copy is kept",
        )
    if plan.unreadable:
        _say(out, f"warning: {plan.unreadable} unreadable state(s) moved as they are")
    return grow


def _next_steps(settings: Settings, partitions: int, name: str, out: TextIO) -> None:
    how = {
        "murmur2": "Kafka's Java client and aiokafka by default; librdkafka: "
        "partitioner=murmur2_random",
        "crc32": "librdkafka's default (consistent_random)",
    }[name]
    _say(out, "next:")
    _say(out, f"  1. set CONNECTOR_TOPICS__PARTITIONS={partitions} for every worker")
    _say(
        out,
        f"  2. producers: key = order key, partitioner {name} ({how}); start them after the "
        f"migration, so that they see {partitions} partitions (a producer that kept running "
        "uses its old metadata until it refreshes)",
    )
    _say(
        out,
        "  3. start the workers; their local state directories stay (recovery applies the "
        "moved states and the tombstones)",
    )


async def migrate(
    settings: Settings,
    partitions: int,
    *,
    partitioner: str = "murmur2",
    dry_run: bool = False,
    out: TextIO,
    err: TextIO,
) -> int:
    """The command: 0 done (or the dry run printed), 2 refused (nothing changed)."""
    started = time.monotonic()
    dep = await inspect(settings)
    problems = _refusals(settings, dep, partitions)
    if problems:
        for problem in problems:
            _say(err, f"connector topics migrate: refused: {problem}")
        return 2
    plan = plan_rekey(
        await read_changelog(settings) if changelog_topic(settings) in dep.counts else [],
        partitions,
        PARTITIONERS[partitioner],
        dep.event_ends,
    )
    grow = _describe(settings, dep, plan, partitions, partitioner, out)
    if dry_run:
        _say(out, "dry run: nothing changed")
        return 0
    # Read again just before changing anything: a worker started or an event published
    # while the changelog was read would be missed.
    problems = _refusals(settings, await inspect(settings), partitions)
    if problems:
        for problem in problems:
            _say(err, f"connector topics migrate: refused: {problem}")
        return 2
    if grow:
        await _grow(settings, grow, partitions)
    await _write(settings, plan)
    elapsed = time.monotonic() - started
    _say(
        out,
        f"migrated in {elapsed:.1f} s: {len(grow)} topic(s) grown, {len(plan.moves)} state(s) "
        f"moved, {len(plan.tombstones)} tombstone(s)",
    )
    _next_steps(settings, partitions, partitioner, out)
    return 0
