"""Offsets: records admitted in order, and no commit past a record not done.

Kafka's at-least-once promise rests on one rule: the committed offset never
passes a record that was not fully handled. Faust breaks it in three ways the
connector met, all fixed here for the topics the connector acknowledges itself
(the events and parking topics):

* **Skipped records.** Inside one consumer generation Faust can drop a record
  on its way to the agent (its stream skips records that arrive while flow
  control is briefly off; its fetch loop drops the rest of a batch for a
  partition paused mid-batch). Later records are then handled and acknowledged
  in order, and the commit goes past the dropped one: lost (seen once in the
  crash matrix). These topics' records now bypass that path
  (:mod:`connector.intake`), and the :class:`Sequencer` still guards the rule:
  it admits each partition's offsets strictly in sequence; on a hole it asks
  for a seek back to the first missing offset and drops what was read before
  the seek. What the broker returns first after the seek is the truth: offsets
  it skips hold no record (transaction markers, compacted or deleted records)
  and are a legitimate gap.
* **Commits from "consecutive acknowledged offsets".** Faust commits the first
  run of consecutive acknowledged offsets even when the run does not start at
  the committed offset (its check is off by one, and skipped entirely for
  offset 0), and it counts a *gap* -- including the record after it, still in
  flight -- as acknowledged. Here the commit for these topics is the
  dispatcher's own position: one past the last record acknowledged in offset
  order (:meth:`connector.delivery.OrderedDispatcher.position`).
* **Read offsets.** Faust silently drops a fetched record below the
  partition's read offset, which its fetch loop sets *after* handing a record
  on, so it can undo a seek made meanwhile. For these topics the read offset is
  not kept (the sequencer drops duplicates itself).

And after a rebalance a partition without a committed offset is read again
from its beginning (:func:`_patch_seek`).

**The last records of a partition.** A hole is revealed by the record after
it. When the records lost on their way are the partition's last (a fetch that
spanned a rebalance and was dropped, with nothing published since), no later
record comes: the records wait, uncommitted, until the next rebalance. The
guard therefore watches each partition's end: records exist past the first
offset not admitted, and none was admitted for a while, on a partition that is
fetched -- then it reads again from there (:meth:`Sequencer.idle_since`).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faust.types import TP

if TYPE_CHECKING:
    from connector.intake import Intake

__all__ = ["IdleWatch", "OffsetGuard", "ReadOffsets", "Sequencer", "Verdict"]

logger = logging.getLogger(__name__)


class Verdict(enum.Enum):
    ADMIT = "admit"
    DROP = "drop"  # a duplicate, or read before a rewind: not admitted, not acknowledged
    REWIND = "rewind"  # a hole before this record: seek back, drop this one


@dataclass(slots=True)
class _Track:
    generation: int
    expected: int | None  # every offset below is admitted (or holds no record)
    hole_at: int | None = None  # the record that revealed a hole; later ones predate the seek
    since: float = 0.0


class Sequencer:
    """Admits each partition's records in offset order, with no hole.

    Pure bookkeeping: the caller seeks when told to (:attr:`Verdict.REWIND`).
    ``start(topic, partition)`` gives where a new generation's reading starts
    (the committed offset, or ``None`` when unknown: the first record read is
    then taken as the start).
    """

    def __init__(
        self,
        start: Callable[[str, int], int | None],
        *,
        clock: Callable[[], float] = time.monotonic,
        retry_after_s: float = 10.0,
    ) -> None:
        self._start = start
        self._clock = clock
        self._retry_after = retry_after_s
        self._tracks: dict[tuple[str, int], _Track] = {}
        # Offsets the broker itself skipped, seen in fetched batches (transaction markers,
        # aborted records): (topic, partition, offset after the gap) -> first offset of the gap.
        self._gaps: dict[tuple[str, int, int], int] = {}
        self._last_fetched: dict[tuple[str, int], int] = {}
        self._fetches: dict[tuple[str, int], int] = {}  # fetches noted per partition
        self._epoch = 0

    def fetched(self, topic: str, partition: int, offsets: Iterable[int]) -> None:
        """Note what one fetch returned, before anything can drop a record of it.

        A jump between two fetched offsets is the broker's: nothing can have been lost
        there, and the sequencer admits the later record without a rewind.
        """
        key = (topic, partition)
        self._fetches[key] = self._fetches.get(key, 0) + 1
        last = self._last_fetched.get(key)
        gaps = self._gaps
        for offset in offsets:
            if last is not None and offset > last + 1:
                gaps[topic, partition, offset] = last + 1
            last = offset
        if last is not None:
            self._last_fetched[key] = last
        if len(gaps) > 10_000:  # gaps never met (read by an older generation): forget
            gaps.clear()

    @property
    def epoch(self) -> int:
        """Changes at every seek: a fetch that spans one cannot say where it started."""
        return self._epoch

    def unsure(self, topic: str, partition: int) -> None:
        """A fetch spanned a seek: the next one does not follow a known offset."""
        key = (topic, partition)
        self._fetches[key] = self._fetches.get(key, 0) + 1
        self._last_fetched.pop(key, None)

    def fetch_count(self, topic: str, partition: int) -> int:
        """How many fetches of the partition were noted so far (to tell whether one came)."""
        return self._fetches.get((topic, partition), 0)

    def moved(self) -> None:
        """Someone else seeks now: a fetch asked before and answered after is unsure."""
        self._epoch += 1

    def seeking(self, topic: str, partition: int, offset: int) -> None:
        """The consumer moves to ``offset``: the next fetch starts there."""
        self._epoch += 1
        self._last_fetched[topic, partition] = offset - 1

    def accept(
        self, topic: str, partition: int, offset: int, generation: int
    ) -> tuple[Verdict, int]:
        """The verdict on one record, and for :attr:`Verdict.REWIND` the offset to seek to."""
        key = (topic, partition)
        track = self._tracks.get(key)
        if track is None or generation > track.generation:
            track = self._tracks[key] = _Track(generation, self._start(topic, partition))
        elif generation < track.generation:
            return Verdict.DROP, offset  # an older generation's read: fenced anyway
        expected = track.expected
        if expected is None or offset == expected:
            track.expected = offset + 1
            track.hole_at = None
            return Verdict.ADMIT, offset
        if offset < expected:
            return Verdict.DROP, offset  # read again (a seek): already admitted
        if self._gaps.pop((topic, partition, offset), None) == expected:
            # The broker skipped these offsets (markers, aborted or deleted records): the
            # fetch shows nothing there, so nothing can have been dropped.
            track.expected = offset + 1
            track.hole_at = None
            return Verdict.ADMIT, offset
        hole_at = track.hole_at
        if (
            hole_at is not None
            and offset > hole_at
            and self._clock() - track.since < self._retry_after
        ):
            # Read before the rewind's seek took effect (those follow the hole's record),
            # unless the re-read has not come in time: then this asks again.
            return Verdict.DROP, offset
        return Verdict.REWIND, expected

    def rewound(self, topic: str, partition: int, offset: int) -> None:
        """The seek a :attr:`Verdict.REWIND` asked for is done; ``offset`` revealed the hole.

        Records above ``offset`` that arrive now were read before the seek. A record at
        or below it that is neither the missing one nor confirmed by a fetched gap means
        the re-read was dropped too: the sequencer asks for another rewind.
        """
        track = self._tracks.get((topic, partition))
        if track is not None:
            track.hole_at = offset
            track.since = self._clock()

    def back_to(self, topic: str, partition: int, offset: int) -> None:
        """``offset`` was admitted but never handed on: expect it again."""
        track = self._tracks.get((topic, partition))
        if track is not None and track.expected is not None and offset < track.expected:
            track.expected = offset

    def expected(self, topic: str, partition: int, generation: int) -> int | None:
        """The first offset of ``partition`` not admitted yet in ``generation``."""
        track = self._tracks.get((topic, partition))
        if track is not None and track.generation == generation:
            return track.expected
        if track is not None and track.generation > generation:
            return None
        return self._start(topic, partition)

    def fetched_from(self, topic: str, partition: int, offset: int) -> bool:
        """Whether a fetch returned ``offset`` or later since the last seek there."""
        last = self._last_fetched.get((topic, partition))
        return last is not None and last >= offset

    def stale_rewinds(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) of rewinds whose re-read has not come in time."""
        now = self._clock()
        return [
            (topic, partition, track.expected)
            for (topic, partition), track in self._tracks.items()
            if track.hole_at is not None
            and track.expected is not None
            and now - track.since >= self._retry_after
        ]


@dataclass(slots=True)
class _Idle:
    state: tuple[int, int, int]  # (generation, first offset not admitted, end offset)
    since: float
    retried: bool = False


class IdleWatch:
    """Partitions with records past their first offset not admitted, and no progress.

    ``check`` is called every few seconds per fetched partition. It says to read
    again once the same (generation, expected offset, end offset) has lasted
    ``after_s``: once; again only if a fetch since returned records from the
    expected offset on that still were not admitted. (The end offset can sit past
    the last record legitimately -- a transaction marker, an open transaction --
    and then the read again returns nothing: no second try.)
    """

    def __init__(self, after_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._after = after_s
        self._clock = clock
        self._idle: dict[tuple[str, int], _Idle] = {}

    def check(
        self,
        key: tuple[str, int],
        generation: int,
        expected: int | None,
        end: int | None,
        fetched_past: bool,
    ) -> bool:
        """Whether to read ``key`` again from ``expected`` now."""
        if expected is None or end is None or end <= expected:
            self._idle.pop(key, None)
            return False
        now = self._clock()
        state = (generation, expected, end)
        idle = self._idle.get(key)
        if idle is None or idle.state != state:
            self._idle[key] = _Idle(state, now)
            return False
        if now - idle.since < self._after or (idle.retried and not fetched_past):
            return False
        idle.since, idle.retried = now, True
        return True

    def forget(self, key: tuple[str, int]) -> None:
        self._idle.pop(key, None)


class ReadOffsets(dict[Any, int | None]):
    """Faust's per-partition read offsets, not kept for the ``managed`` topics.

    Faust drops a fetched record below its partition's read offset; for the
    managed topics the :class:`Sequencer` does that job, and a read offset set
    by Faust's fetch loop after a seek would drop the records the seek asked for.
    """

    def __init__(self, managed: set[str]) -> None:
        super().__init__()
        self._managed = managed

    def __missing__(self, tp: Any) -> None:
        return None

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        if tp.topic not in self._managed:
            super().__setitem__(tp, offset)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for tp, offset in dict(*args, **kwargs).items():
            self[tp] = offset


def _patch_seek(
    consumer: Any, topics: set[str], starts: dict[Any, int | None], sequencer: Sequencer
) -> None:
    """After a rebalance, read every partition again from its first unacknowledged record.

    Faust's seek after an assignment (``perform_seek``) rewinds only partitions
    that have a committed offset. A partition with none -- a new topic, or the
    parking topic before its first commit -- kept its fetch position across the
    rebalance, so the records a revoked incarnation had read but never
    acknowledged were skipped for good (seen: 22 early events of a fresh
    partition, and 130-300 parked events in one run). Such partitions start
    again from their beginning, as ``auto_offset_reset=earliest`` says.
    ``starts`` records where each partition's reading starts, for the sequencer.
    """
    seek = consumer.perform_seek

    async def perform_seek() -> None:
        consumer._read_offset.clear()
        fetches = {
            (tp.topic, tp.partition): sequencer.fetch_count(tp.topic, tp.partition)
            for tp in consumer.assignment()
            if tp.topic in topics
        }
        sequencer.moved()
        await seek()
        committed = consumer._committed_offset
        assigned = [tp for tp in consumer.assignment() if tp.topic in topics]
        rewind = [tp for tp in assigned if not committed.get(tp)]
        earliest = await consumer.earliest_offsets(*rewind) if rewind else {}
        for tp in rewind:
            await consumer.seek(tp, earliest.get(tp) or 0)
        sequencer.moved()
        # Overwritten, never cleared: a partition with no start would trust its first record.
        for tp in assigned:
            key = (tp.topic, tp.partition)
            start = committed.get(tp) or earliest.get(tp) or 0
            starts[key] = start
            if sequencer.fetch_count(*key) == fetches.get(key, 0):
                sequencer.seeking(tp.topic, tp.partition, start)
            else:
                # A fetch came back between the seek and now (the consumer's thread goes
                # on meanwhile) and its records went nowhere: flow was still stopped. The
                # next fetch then starts past them, and taken as following ``start`` its
                # jump would pass for the broker's own gap (seen: 7 records of a partition
                # never handled after a rebalance). Unknown instead: the first record
                # past ``start`` asks for a rewind.
                sequencer.unsure(tp.topic, tp.partition)

    consumer.perform_seek = perform_seek


class OffsetGuard:
    """Installs the rules above on a Faust consumer, for the ``positions`` topics.

    ``positions`` maps each managed topic to its dispatcher's
    ``position(partition)``: one past the last record acknowledged in order.
    """

    def __init__(self, consumer: Any, positions: Mapping[str, Callable[[int], int | None]]) -> None:
        self._consumer = consumer
        self._positions = dict(positions)
        topics = set(self._positions)
        self._starts: dict[tuple[str, int], int | None] = {}
        self.sequencer = Sequencer(lambda topic, partition: self._starts.get((topic, partition)))
        self.idle = IdleWatch()
        self._intake: Intake | None = None
        _patch_seek(consumer, topics, self._starts, self.sequencer)
        self._patch_commit()
        self._patch_fetch(topics)

    def _patch_fetch(self, topics: set[str]) -> None:
        # What the broker returned, before Faust's fetch loop or stream can drop any of it.
        consumer = self._consumer
        getmany = consumer._getmany
        sequencer = self.sequencer

        async def _getmany(active_partitions: Any, timeout: float) -> Any:
            epoch = sequencer.epoch
            generation = consumer.app.consumer_generation_id
            records = await getmany(active_partitions, timeout)
            spanned = sequencer.epoch != epoch  # asked before a seek, answered after it
            for tp, batch in records.items():
                if tp.topic in topics and batch:
                    if spanned:
                        sequencer.unsure(tp.topic, tp.partition)
                    else:
                        sequencer.fetched(tp.topic, tp.partition, [r.offset for r in batch])
            intake = self._intake
            if intake is None:
                return records
            taken = intake.topics
            mine = {tp: batch for tp, batch in records.items() if tp.topic in taken and batch}
            if not mine:
                return records
            if consumer.app.consumer_generation_id == generation:
                await intake.hand_off(mine, generation)
            # A fetch that spans a rebalance is dropped: the next owner reads it again.
            return {tp: batch for tp, batch in records.items() if tp.topic not in taken}

        consumer._getmany = _getmany

    def take(self, intake: Intake) -> None:
        """From now on, ``intake`` gets its topics' records straight from each fetch."""
        self._intake = intake

    def _patch_commit(self) -> None:
        consumer = self._consumer
        new_offset = consumer._new_offset
        positions = self._positions

        def _new_offset(tp: Any) -> int | None:
            position = positions.get(tp.topic)
            if position is None:
                return new_offset(tp)
            # Faust's bookkeeping of acknowledged offsets and gaps is not used here.
            consumer._acked[tp].clear()
            consumer._acked_index[tp].clear()
            consumer._gap.pop(tp, None)
            done = position(tp.partition)
            committed = consumer._committed_offset[tp]
            if done is None or (committed is not None and done <= committed):
                return None
            return done

        consumer._new_offset = _new_offset

    async def admit(self, message: Any) -> bool:
        """Whether the agent may hand ``message`` on; seeks back over a hole first."""
        verdict, target = self.sequencer.accept(
            message.topic, message.partition, message.offset, message.generation_id
        )
        if verdict is Verdict.ADMIT:
            return True
        # Never admitted, so never acknowledged: Faust must not wait for it.
        self._consumer._unacked_messages.discard(message)
        if verdict is Verdict.REWIND:
            logger.warning(
                "%s[%s]: offset %s arrived before %s; reading again from %s",
                message.topic,
                message.partition,
                message.offset,
                target,
                target,
            )
            await self._rewind(message.tp, target, message.offset)
        return False

    async def reread(self, tp: Any, offset: int) -> None:
        """``tp``'s records from ``offset`` on were not admitted: fetch them again."""
        self.sequencer.seeking(tp.topic, tp.partition, offset)
        try:
            await self._consumer.seek_wait({tp: offset})
        except Exception as exc:  # revoked meanwhile: the next owner reads them
            logger.warning("%s[%s]: seek to %s failed: %r", tp.topic, tp.partition, offset, exc)

    async def unadmit(self, message: Any) -> None:
        """``message`` was admitted but its job was never created: read it again.

        Later records would otherwise be acknowledged past it.
        """
        self.sequencer.back_to(message.topic, message.partition, message.offset)
        await self._rewind(message.tp, message.offset, message.offset)

    async def _rewind(self, tp: Any, offset: int, hole_at: int) -> None:
        """Read ``tp`` again from ``offset``; records above ``hole_at`` predate the seek.

        The seek runs on the consumer's own thread (``seek_wait``), never racing its
        fetch; a failure (the partition revoked meanwhile) leaves the hole to the next
        record or to the timer.
        """
        self.sequencer.seeking(tp.topic, tp.partition, offset)
        try:
            await self._consumer.seek_wait({tp: offset})
        except Exception as exc:
            logger.warning("%s[%s]: seek to %s failed: %r", tp.topic, tp.partition, offset, exc)
            return
        self.sequencer.rewound(tp.topic, tp.partition, hole_at)

    async def retry_stale_rewinds(self) -> None:
        """Seek again where a rewind's re-read never came (run it every few seconds)."""
        stale = self.sequencer.stale_rewinds()
        if stale:
            assigned = self._consumer.assignment()
            for topic, partition, offset in stale:
                tp = TP(topic, partition)
                if tp in assigned:
                    logger.warning(
                        "%s[%s]: no re-read after a rewind; seeking again", topic, partition
                    )
                    await self._rewind(tp, offset, offset)
        await self._read_idle_again()

    async def _read_idle_again(self) -> None:
        """Read again where records exist past the first offset not admitted, with no progress."""
        consumer = self._consumer
        app = consumer.app
        if not consumer.flow_active or app.rebalancing:
            return  # a rebalance reads every partition again from its committed offset
        generation = app.consumer_generation_id
        fetching = consumer._active_partitions
        held = self._intake.held if self._intake is not None else set()
        sequencer, idle = self.sequencer, self.idle
        for tp in consumer.assignment():
            if tp.topic not in self._positions:
                continue
            key = (tp.topic, tp.partition)
            if (fetching is not None and tp not in fetching) or tp in held:
                idle.forget(key)  # paused: not fetched, so not behind
                continue
            expected = sequencer.expected(tp.topic, tp.partition, generation)
            end = consumer.highwater(tp)
            fetched = expected is not None and sequencer.fetched_from(*key, expected)
            if idle.check(key, generation, expected, end, fetched) and expected is not None:
                logger.warning(
                    "%s[%s]: records up to %s exist but none from %s on was handed on; "
                    "reading again from %s",
                    tp.topic,
                    tp.partition,
                    end,
                    expected,
                    expected,
                )
                await self.reread(tp, expected)

    async def commit_done(self) -> None:
        """Commit what is done now, e.g. on revoke, before Faust forgets the partitions.

        Faust drops a revoked partition's acknowledgements before its own revoke-time
        commit, so the next owner would redo up to one commit interval of work.
        """
        consumer = self._consumer
        offsets = {}
        for tp in consumer.assignment():
            position = self._positions.get(tp.topic)
            done = position(tp.partition) if position is not None else None
            if done is not None:
                offsets[tp] = done
        if offsets:
            try:
                await consumer._commit_offsets(offsets)
            except Exception as exc:  # the group may have moved on: the next owner redoes it
                logger.warning("commit on revoke failed: %r", exc)
