"""The intake's hold: records kept while a dispatcher is full, handed on in order."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

from faust.types import TP

from connector.kafka import intake as intake_module
from connector.kafka.intake import Intake, Route

Record = namedtuple("Record", "topic partition offset key value")
Fetched = namedtuple("Fetched", "topic partition")  # aiokafka's TopicPartition, as tuples


class FakeApp:
    def __init__(self) -> None:
        self.consumer_generation_id = 1
        self.rebalancing = False
        self.monitor = type("M", (), {"stream_inbound_time": {}})()


class FakeConsumer:
    def __init__(self) -> None:
        self.app = FakeApp()
        self.flow_active = True
        self.full: list[Any] = []
        self.dropped: list[Any] = []

    def on_buffer_full(self, tp: Any) -> None:
        self.full.append(tp)

    def on_buffer_drop(self, tp: Any) -> None:
        self.dropped.append(tp)


class Room:
    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, size: int) -> bool:
        return self.free > 0


class Recording(Intake):
    """The real hold and resume logic; ``hand`` records instead of admitting."""

    def __init__(self, consumer: FakeConsumer, room: Room) -> None:
        async def unused(*_: Any) -> None:
            raise AssertionError

        super().__init__(consumer, guard=None, routes={"t": Route(unused, room)})
        self.room = room
        self.handed: list[tuple[int, int, int]] = []

    async def hand(self, tp: Any, record: Any, generation: int) -> None:
        self.room.free -= 1
        self.handed.append((tp.partition, record.offset, generation))


def batch(partition: int, offsets: range) -> dict[Any, list[Record]]:
    return {Fetched("t", partition): [Record("t", partition, o, b"k", b"v") for o in offsets]}


async def settle() -> None:
    await asyncio.sleep(intake_module.RESUME_CHECK_S * 4)


async def test_a_full_partition_keeps_its_records_and_hands_them_on_in_order() -> None:
    consumer, room = FakeConsumer(), Room(2)
    intake = Recording(consumer, room)
    await intake.hand_off({**batch(0, range(0, 4)), **batch(1, range(10, 14))}, 1)
    assert intake.handed == [(0, 0, 1), (1, 10, 1)]  # partitions interleaved, then full
    assert consumer.full == [TP("t", 0), TP("t", 1)]
    await intake.hand_off(batch(0, range(4, 6)), 1)  # fetched before the pause took effect
    room.free = 100
    await settle()
    assert [o for p, o, _ in intake.handed if p == 0] == [0, 1, 2, 3, 4, 5]
    assert [o for p, o, _ in intake.handed if p == 1] == [10, 11, 12, 13]
    assert sorted(consumer.dropped) == [TP("t", 0), TP("t", 1)]
    assert intake.held == set()


async def test_held_partitions_take_turns_for_the_room() -> None:
    consumer, room = FakeConsumer(), Room(0)
    intake = Recording(consumer, room)
    await intake.hand_off({**batch(0, range(0, 50)), **batch(1, range(0, 50))}, 1)
    room.free = 10
    await settle()
    assert sorted(p for p, _, _ in intake.handed) == [0] * 5 + [1] * 5


async def test_a_partition_held_before_a_rebalance_is_not_resumed_after_it() -> None:
    consumer, room = FakeConsumer(), Room(0)
    intake = Recording(consumer, room)
    await intake.hand_off(batch(0, range(0, 3)), 1)
    consumer.app.consumer_generation_id = 2  # Faust pauses and resumes it itself now
    room.free = 100
    await settle()
    assert intake.handed == [] and consumer.dropped == [] and intake.held == set()


async def test_a_rebalance_while_the_last_kept_record_is_handed_leaves_the_pause_to_faust() -> None:
    consumer, room = FakeConsumer(), Room(0)
    intake = Recording(consumer, room)
    real = intake.hand

    async def rebalanced_meanwhile(tp: Any, record: Any, generation: int) -> None:
        await real(tp, record, generation)
        if record.offset == 2:  # e.g. a seek back on the consumer thread, then a rebalance
            consumer.app.consumer_generation_id = 2

    intake.hand = rebalanced_meanwhile  # type: ignore[method-assign]
    await intake.hand_off(batch(0, range(0, 3)), 1)
    room.free = 100
    await settle()
    assert [o for _, o, _ in intake.handed] == [0, 1, 2]
    assert consumer.dropped == []  # Faust keeps it paused for the table's recovery
    assert intake.held == set()


async def test_a_newer_generation_s_records_are_not_kept_behind_an_older_hold() -> None:
    consumer, room = FakeConsumer(), Room(0)
    intake = Recording(consumer, room)
    intake._resume_pass = asyncio.sleep  # type: ignore[method-assign,assignment]  # no resumer
    await intake.hand_off(batch(0, range(0, 3)), 1)
    consumer.app.consumer_generation_id = 2
    room.free = 100
    await intake.hand_off(batch(0, range(0, 3)), 2)
    assert intake.handed == [(0, 0, 2), (0, 1, 2), (0, 2, 2)]


async def test_a_failing_pass_does_not_end_the_resumer(caplog: Any) -> None:
    consumer, room = FakeConsumer(), Room(0)
    intake = Recording(consumer, room)
    calls = [0]
    real = intake.hand

    async def flaky(tp: Any, record: Any, generation: int) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("a bug")
        await real(tp, record, generation)

    intake.hand = flaky  # type: ignore[method-assign]
    await intake.hand_off(batch(0, range(0, 3)), 1)
    room.free = 100
    await settle()
    assert [o for _, o, _ in intake.handed] == [1, 2]  # 0 is the sequencer's to read again
    assert consumer.dropped == [TP("t", 0)]
    assert "handing on held records failed" in caplog.text
