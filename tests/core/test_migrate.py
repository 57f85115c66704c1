"""The pure parts of ``connector topics migrate``: which states move where, and refusals."""

from __future__ import annotations

import io
import zlib

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from connector.domain.lifecycle import (
    Mark,
    OrderState,
    OrderStatus,
    Verdict,
    decode_state,
    encode_state,
    judge,
    relocate,
)
from connector.ops.migrate import (
    Copy,
    Deployment,
    _refusals,
    crc32_partition,
    lags,
    murmur2_partition,
    plan_rekey,
)
from connector.settings import Settings

KEYS = [f"comeet|ev-{i}".encode() for i in range(60)]


def state(status: OrderStatus, seq: int, parked: int | None = None) -> bytes:
    mark = Mark(f"e-{seq}", seq, status)
    return encode_state(
        OrderState(status=status, confirmed=mark, parked=parked, ids=((f"e-{seq}", seq, True),))
    )


def copies_at(partitions: int, value: bytes = b"") -> list[Copy]:
    """One state per key, where the murmur2 partitioner put its events."""
    return [
        Copy(
            key,
            murmur2_partition(key, partitions),
            i,
            1000 + i,
            value or state(OrderStatus.COMPLETED, 10 + i),
        )
        for i, key in enumerate(KEYS)
    ]


def test_the_partitioners_are_the_clients_ones() -> None:
    for key in KEYS:
        assert murmur2_partition(key, 6) == DefaultPartitioner()(key, list(range(6)), [])
        assert crc32_partition(key, 6) == zlib.crc32(key) % 6
    # librdkafka's rd_crc32 is the standard CRC-32 (check value of "123456789").
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_states_whose_partition_changes_move_and_their_old_copy_is_tombstoned() -> None:
    ends = {0: 100, 1: 200, 2: 300, 3: 400}
    plan = plan_rekey(copies_at(4), 6, murmur2_partition, ends)
    assert plan.orders == len(KEYS)
    expected = {k for k in KEYS if murmur2_partition(k, 4) != murmur2_partition(k, 6)}
    assert {m.key for m in plan.moves} == expected
    assert 0 < len(expected) < len(KEYS)
    for move in plan.moves:
        assert move.source == murmur2_partition(move.key, 4)
        assert move.target == murmur2_partition(move.key, 6)
    assert sorted(plan.tombstones) == sorted((m.key, m.source) for m in plan.moves)
    assert sum(plan.flows().values()) == len(plan.moves)
    assert plan.conflicts == 0


def test_a_moved_state_keeps_its_order_below_the_new_partitions_next_offset() -> None:
    key = next(k for k in KEYS if murmur2_partition(k, 4) == 1 and murmur2_partition(k, 6) == 5)
    raw = encode_state(
        OrderState(
            status=OrderStatus.OPEN,
            confirmed=Mark("a", 180, OrderStatus.OPEN),
            pending=Mark("b", 190, OrderStatus.OPEN),
            parked=7,
            ids=(("a", 180, True), ("b", 190, False)),
        )
    )
    [move] = plan_rekey([Copy(key, 1, 5, 1, raw)], 6, murmur2_partition, {1: 200}).moves
    moved = decode_state(move.value)
    assert moved is not None and move.parked_dropped
    # Partition 5 is new (end 0): the shift is 0 - 200.
    assert moved.confirmed == Mark("a", -20, OrderStatus.OPEN)
    assert moved.pending == Mark("b", -10, OrderStatus.OPEN)
    assert moved.ids == (("a", -20, True), ("b", -10, False))
    assert moved.parked is None


def test_without_the_shift_the_next_legitimate_event_would_be_superseded() -> None:
    old = OrderState(status=OrderStatus.OPEN, confirmed=Mark("a", 5000, OrderStatus.OPEN))
    # The order's next event arrives at offset 3 of a new partition.
    assert judge(old, "done", 3, OrderStatus.COMPLETED).verdict is Verdict.REJECTED
    moved = relocate(old, 0 - 5001)
    assert judge(moved, "done", 3, OrderStatus.COMPLETED).verdict is Verdict.SEND
    # A final order stays final: the reopen is still refused.
    final = relocate(
        OrderState(status=OrderStatus.COMPLETED, confirmed=Mark("a", 5000, OrderStatus.COMPLETED)),
        -5001,
    )
    assert judge(final, "again", 3, OrderStatus.OPEN).verdict is Verdict.REJECTED
    assert judge(final, "flip", 4, OrderStatus.CANCELLED).verdict is Verdict.REJECTED


def test_tombstones_delete_and_only_the_newest_record_per_partition_counts() -> None:
    key = KEYS[0]
    home = murmur2_partition(key, 4)
    records = [
        Copy(key, home, 1, 1, state(OrderStatus.OPEN, 1)),
        Copy(key, home, 2, 2, None),
        Copy(KEYS[1], murmur2_partition(KEYS[1], 4), 3, 3, None),
    ]
    assert plan_rekey(records, 6, murmur2_partition, {}).orders == 0
    records.append(Copy(key, home, 4, 4, state(OrderStatus.COMPLETED, 4)))
    plan = plan_rekey(records, 4, murmur2_partition, {})
    assert plan.orders == 1 and not plan.moves and not plan.tombstones


def test_a_second_run_finishes_a_run_that_stopped_before_the_tombstones() -> None:
    first = plan_rekey(copies_at(4), 6, murmur2_partition, {})
    written = [
        Copy(m.key, m.target, 1000 + i, 5000, m.value, (m.source, m.source_offset))
        for i, m in enumerate(first.moves)
    ]
    # The clock of the tool's host may be behind the workers': the header decides.
    again = plan_rekey(
        [
            *copies_at(4),
            *(Copy(c.key, c.partition, c.offset, 0, c.value, c.moved_from) for c in written),
        ],
        6,
        murmur2_partition,
        {},
    )
    assert not again.moves and again.conflicts == 0
    assert sorted(again.tombstones) == sorted(first.tombstones)
    done = plan_rekey(
        [*copies_at(4), *written, *(Copy(k, p, 10_000, 6000, None) for k, p in first.tombstones)],
        6,
        murmur2_partition,
        {},
    )
    assert not done.moves and not done.tombstones and done.orders == len(KEYS)


def test_an_order_in_two_partitions_keeps_its_newest_copy() -> None:
    key = next(k for k in KEYS if murmur2_partition(k, 6) not in (0, 1))
    records = [
        Copy(key, 0, 9, 100, state(OrderStatus.OPEN, 9)),
        Copy(key, 1, 2, 200, state(OrderStatus.CANCELLED, 2)),
    ]
    plan = plan_rekey(records, 6, murmur2_partition, {0: 10, 1: 3})
    [move] = plan.moves
    assert move.source == 1 and plan.conflicts == 1
    moved = decode_state(move.value)
    assert moved is not None and moved.status is OrderStatus.CANCELLED
    assert sorted(p for _, p in plan.tombstones) == [0, 1]


def test_lag_counts_from_the_commit_or_the_oldest_record() -> None:
    a, b, c = (TopicPartition("ev", p) for p in range(3))
    assert lags({a: 10, b: -1, c: 5}, {a: 0, b: 4, c: 7}, {a: 10, b: 9, c: 7}) == {b: 5}
    assert lags({}, {a: 0}, {a: 0}) == {}


def refusals(dep: Deployment, partitions: int = 6, **settings: object) -> list[str]:
    base = Settings(app_id="app", topics={"events": "ev", "partitions": 4}, **settings)  # type: ignore[arg-type]
    return _refusals(base, dep, partitions)


def deployment(**overrides: object) -> Deployment:
    values: dict[str, object] = {
        "counts": {"ev": 4, "ev.parked": 4, "app-orders-changelog": 4},
        "members": [],
        "group_state": "Empty",
        "behind": {},
        "event_ends": {},
    }
    return Deployment(**{**values, **overrides})  # type: ignore[arg-type]


def test_refusals() -> None:
    assert refusals(deployment()) == []
    [running] = refusals(deployment(members=["w1 @ 10.0.0.1"], group_state="Stable"))
    assert "1 active member" in running and "w1 @ 10.0.0.1" in running
    [behind] = refusals(deployment(behind={TopicPartition("ev", 2): 3, TopicPartition("ev", 0): 1}))
    assert "not drained" in behind and "ev 4 records (p0 1, p2 3)" in behind
    [shrink] = refusals(deployment(), partitions=3)
    assert "cannot remove partitions" in shrink
    [memory] = refusals(deployment(), store="memory://")
    assert "memory://" in memory
    # A run that stopped after growing the events topic may be run again.
    assert refusals(deployment(counts={"ev": 6, "ev.parked": 4, "app-orders-changelog": 4})) == []
    [mixed] = refusals(deployment(counts={"ev": 5, "ev.parked": 4}))
    assert "disagree" in mixed
    [absent] = refusals(deployment(counts={}))
    assert "does not exist" in absent


def test_the_dry_run_listing_names_every_move() -> None:
    from connector.ops.migrate import _describe

    base = Settings(app_id="app", topics={"events": "ev", "partitions": 4})
    plan = plan_rekey(copies_at(4), 6, murmur2_partition, {})
    out = io.StringIO()
    grow = _describe(base, deployment(), plan, 6, "murmur2", out)
    text = out.getvalue()
    assert grow == ["ev", "ev.parked", "app-orders-changelog"]
    assert "ev.parked" in text and "4 -> 6" in text
    assert f"{len(plan.moves)} move" in text
    for (source, target), n in plan.flows().items():
        assert f"partition {source} -> {target}: {n}" in text
