"""The sequencer admits each partition's offsets in order, rewinding over holes."""

from __future__ import annotations

from typing import Any

from faust.types import TP

from connector.domain.offsets import IdleWatch, Sequencer, Verdict
from connector.kafka.guard import OffsetGuard, ReadOffsets

ADMIT, DROP, REWIND = Verdict.ADMIT, Verdict.DROP, Verdict.REWIND


def make(start: int | None = 0, clock: list[float] | None = None) -> Sequencer:
    now = clock if clock is not None else [0.0]
    return Sequencer(lambda topic, partition: start, clock=lambda: now[0], retry_after_s=10.0)


def feed(seq: Sequencer, offsets: list[int], generation: int = 1) -> list[Any]:
    return [seq.accept("t", 0, o, generation)[0] for o in offsets]


def rewind(seq: Sequencer, offset: int, generation: int = 1) -> tuple[Verdict, int]:
    """A record's verdict; for a rewind, the seek is done (as OffsetGuard does)."""
    verdict, target = seq.accept("t", 0, offset, generation)
    if verdict is REWIND:
        seq.seeking("t", 0, target)
        seq.rewound("t", 0, offset)
    return verdict, target


def test_in_order_offsets_are_admitted_and_repeats_dropped() -> None:
    seq = make()
    assert feed(seq, [0, 1, 2, 1, 2, 3]) == [ADMIT, ADMIT, ADMIT, DROP, DROP, ADMIT]


def test_a_hole_asks_for_a_rewind_and_drops_what_was_read_before_it() -> None:
    seq = make()
    assert feed(seq, [0, 1]) == [ADMIT, ADMIT]
    assert rewind(seq, 3) == (REWIND, 2)
    # 4 and 5 were read before the seek took effect; 2 is the re-read.
    assert feed(seq, [4, 5, 2, 3, 4]) == [DROP, DROP, ADMIT, ADMIT, ADMIT]


def test_a_hole_at_the_start_of_a_generation_is_found_from_the_committed_offset() -> None:
    seq = make(start=10)
    assert rewind(seq, 11) == (REWIND, 10)
    assert feed(seq, [10, 11]) == [ADMIT, ADMIT]


def test_after_a_rewind_offsets_the_broker_skips_are_a_legitimate_gap() -> None:
    # Offsets 2 and 3 hold no record (transaction markers): the re-read starts at 4.
    seq = make()
    feed(seq, [0, 1])
    assert rewind(seq, 4) == (REWIND, 2)
    seq.fetched("t", 0, [4, 5, 6])  # what the seek to 2 fetched
    assert feed(seq, [5, 4, 5, 6]) == [DROP, ADMIT, ADMIT, ADMIT]


def test_a_re_read_dropped_again_asks_for_another_rewind() -> None:
    # The review's loss path: 101 is missing, the rewind's re-read of 101 is dropped too.
    seq = make(start=100)
    assert feed(seq, [100]) == [ADMIT]
    assert rewind(seq, 102) == (REWIND, 101)
    seq.fetched("t", 0, [101, 102, 103])
    assert feed(seq, [103]) == [DROP]  # read before the seek
    assert rewind(seq, 102) == (REWIND, 101)  # 101 dropped again: not a gap
    assert feed(seq, [101, 102, 103]) == [ADMIT, ADMIT, ADMIT]


def test_a_rewind_that_never_arrives_is_asked_again() -> None:
    clock = [0.0]
    seq = make(clock=clock)
    feed(seq, [0])
    assert rewind(seq, 2) == (REWIND, 1)
    assert feed(seq, [3]) == [DROP]
    assert seq.stale_rewinds() == []
    clock[0] = 11.0
    assert seq.stale_rewinds() == [("t", 0, 1)]
    assert seq.accept("t", 0, 4, 1) == (REWIND, 1)


def test_a_new_generation_starts_again_from_its_start_and_old_reads_are_dropped() -> None:
    starts = {"t": 0}
    seq = Sequencer(lambda topic, partition: starts[topic])
    assert feed(seq, [0, 1, 2]) == [ADMIT] * 3
    starts["t"] = 1  # committed up to 1 before the rebalance
    assert feed(seq, [1, 2], generation=2) == [ADMIT, ADMIT]
    assert seq.accept("t", 0, 3, 1)[0] is DROP


def test_an_unknown_start_takes_the_first_record_read() -> None:
    seq = make(start=None)
    assert feed(seq, [7, 8]) == [ADMIT, ADMIT]


def test_a_rewind_into_deleted_records_continues_at_the_log_start() -> None:
    seq = make()
    feed(seq, [0])
    assert rewind(seq, 3) == (REWIND, 1)
    seq.fetched("t", 0, [5, 6])  # retention deleted 1..4: the seek landed at 5
    assert feed(seq, [5, 6]) == [ADMIT, ADMIT]


def test_read_offsets_are_not_kept_for_managed_topics() -> None:
    offsets = ReadOffsets({"events"})
    managed, other = TP("events", 0), TP("changelog", 0)
    offsets[managed] = 5
    offsets.update({other: 7, managed: 9})
    assert offsets[managed] is None and offsets[other] == 7


def test_offsets_the_broker_skipped_in_a_fetch_are_admitted_without_a_rewind() -> None:
    seq = make()
    seq.fetched("t", 0, [0, 1, 3, 4])  # 2 is a transaction marker
    seq.fetched("t", 0, [6, 7])  # 5 too, between two fetches
    assert feed(seq, [0, 1, 3, 4, 6, 7]) == [ADMIT] * 6


def test_a_record_dropped_after_its_fetch_still_needs_a_rewind() -> None:
    seq = make()
    seq.fetched("t", 0, [0, 1, 2, 3])
    assert feed(seq, [0, 1]) == [ADMIT, ADMIT]
    assert seq.accept("t", 0, 3, 1) == (REWIND, 2)  # 2 was fetched: Faust dropped it


def test_a_fetch_spanning_a_seek_breaks_the_chain_of_fetches() -> None:
    seq = make()
    seq.fetched("t", 0, [0, 1])
    seq.unsure("t", 0)  # a fetch spanned a seek
    seq.fetched("t", 0, [5])  # so this jump is not known to be the broker's
    assert feed(seq, [0, 1]) == [ADMIT, ADMIT]
    assert seq.accept("t", 0, 5, 1) == (REWIND, 2)


def test_a_gap_right_at_a_seek_target_is_the_broker_s() -> None:
    # A rebalance's seek to the committed offset 200, which is a transaction marker.
    seq = make(start=200)
    seq.seeking("t", 0, 200)
    seq.fetched("t", 0, [201, 202])
    assert feed(seq, [201, 202]) == [ADMIT, ADMIT]


def test_the_expected_offset_is_the_generation_s_start_until_its_first_record() -> None:
    seq = make(start=5)
    assert seq.expected("t", 0, 1) == 5
    feed(seq, [5, 6])
    assert seq.expected("t", 0, 1) == 7
    assert seq.expected("t", 0, 2) == 5  # a newer generation starts again
    feed(seq, [5], generation=2)
    assert seq.expected("t", 0, 1) is None  # an older one is fenced


def test_fetched_from_says_whether_records_came_since_the_seek() -> None:
    seq = make()
    seq.seeking("t", 0, 7)
    assert not seq.fetched_from("t", 0, 7)
    seq.fetched("t", 0, [7, 8])
    assert seq.fetched_from("t", 0, 7)


def test_idle_partitions_are_read_again_once_their_end_stays_out_of_reach() -> None:
    clock = [0.0]
    watch = IdleWatch(after_s=10.0, clock=lambda: clock[0])
    key = ("t", 0)
    # The last record (offset 7) was fetched and lost on its way: the end is 8.
    assert not watch.check(key, 1, 7, 8, fetched_past=True)
    clock[0] = 9.0
    assert not watch.check(key, 1, 7, 8, fetched_past=True)
    clock[0] = 10.0
    assert watch.check(key, 1, 7, 8, fetched_past=True)
    # The re-read brought nothing (the end is a transaction marker): no second try.
    clock[0] = 30.0
    assert not watch.check(key, 1, 7, 8, fetched_past=False)
    # The re-read was fetched and lost again: another try.
    assert watch.check(key, 1, 7, 8, fetched_past=True)


def test_progress_or_a_caught_up_partition_resets_the_idle_clock() -> None:
    clock = [0.0]
    watch = IdleWatch(after_s=10.0, clock=lambda: clock[0])
    key = ("t", 0)
    assert not watch.check(key, 1, 7, 9, fetched_past=True)
    clock[0] = 8.0
    assert not watch.check(key, 1, 8, 9, fetched_past=True)  # admitted one since
    clock[0] = 16.0
    assert not watch.check(key, 1, 8, 9, fetched_past=True)
    assert not watch.check(key, 1, 9, 9, fetched_past=True)  # caught up
    clock[0] = 40.0
    assert not watch.check(key, 1, 9, 12, fetched_past=True)  # new records: a fresh clock
    assert not watch.check(key, 1, None, 12, fetched_past=True)  # start unknown


class _SeekingConsumer:
    """What the guard's seek uses of the consumer; ``during_seek`` runs as Faust's seek ends."""

    def __init__(self, committed: dict[Any, int]) -> None:
        self.committed = committed
        self.during_seek: Any = None

    def assignment(self) -> set[Any]:
        return set(self.committed)

    async def faust_seek(self) -> None:
        if self.during_seek is not None:
            self.during_seek()

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        return {tp: 0 for tp in tps}

    async def seek(self, tp: Any, offset: int) -> None:
        pass


async def perform_seek(guard: OffsetGuard, consumer: _SeekingConsumer) -> None:
    """As ConnectorConsumer.perform_seek calls the guard around Faust's seek."""
    fetches = guard.before_seek()
    await consumer.faust_seek()
    await guard.after_seek(fetches, consumer.committed)


async def test_a_fetch_answered_while_a_rebalance_seeks_is_not_taken_for_a_broker_gap() -> None:
    # Seen in the crash matrix: after a rebalance's seek to the committed 175, a fetch of
    # 175..181 came back while flow was still stopped (its records went nowhere); the next
    # fetch started at 182, and the jump 174 -> 182 passed for the broker's own gap.
    tp = TP("events", 3)
    consumer = _SeekingConsumer({tp: 175})
    guard = OffsetGuard(consumer, {"events"})  # type: ignore[arg-type]
    seq = guard.sequencer
    consumer.during_seek = lambda: seq.fetched("events", 3, list(range(175, 182)))
    await perform_seek(guard, consumer)
    seq.fetched("events", 3, [182])
    assert seq.accept("events", 3, 182, 17) == (REWIND, 175)


async def test_a_rebalance_s_seek_with_no_fetch_meanwhile_knows_where_reading_starts() -> None:
    tp = TP("events", 3)
    consumer = _SeekingConsumer({tp: 200})
    guard = OffsetGuard(consumer, {"events"})  # type: ignore[arg-type]
    seq = guard.sequencer
    await perform_seek(guard, consumer)
    seq.fetched("events", 3, [201, 202])  # 200 is a transaction marker
    assert [seq.accept("events", 3, o, 17)[0] for o in (201, 202)] == [ADMIT, ADMIT]
