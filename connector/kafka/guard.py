"""The fetch side of at-least-once: records admitted in order, holes read again.

:class:`OffsetGuard` applies :mod:`connector.domain.offsets`' pure bookkeeping (the
:class:`~connector.domain.offsets.Sequencer`, the :class:`~connector.domain.offsets.IdleWatch`)
to the consumer: :class:`~connector.kafka.driver.ConnectorConsumer` calls it
around each fetch and after Faust's seek on an assignment; the intake asks it to
admit each record; the 5 s timer asks it to seek again where a re-read never
came. What may be *committed* is :mod:`connector.kafka.commits`' business.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from faust.types import TP

from connector.domain.offsets import IdleWatch, Sequencer, Verdict

if TYPE_CHECKING:
    from connector.kafka.driver import ConnectorConsumer

__all__ = ["OffsetGuard", "ReadOffsets"]

logger = logging.getLogger(__name__)


class ReadOffsets(dict[Any, int | None]):
    """Faust's per-partition read offsets, not kept for the ``managed`` topics.

    Faust drops a fetched record below its partition's read offset; for the
    managed topics the :class:`Sequencer` does that job, and a read offset set
    by Faust's fetch loop after a seek would drop the records the seek asked for.
    """

    def __init__(self, managed: set[str]) -> None:
        super().__init__()
        self._managed = set(managed)

    def manage(self, topics: Iterable[str]) -> None:
        """Stop keeping read offsets for ``topics`` too (in place: Faust's fetch loop holds
        this mapping's bound methods)."""
        self._managed.update(topics)
        for tp in [tp for tp in self if tp.topic in self._managed]:
            del self[tp]

    def __missing__(self, tp: Any) -> None:
        return None

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        if tp.topic not in self._managed:
            super().__setitem__(tp, offset)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for tp, offset in dict(*args, **kwargs).items():
            self[tp] = offset


class OffsetGuard:
    """The fetch side of the rules in :mod:`connector.domain.offsets`, for ``topics``.

    :class:`~connector.kafka.driver.ConnectorConsumer` calls it around each fetch and
    after Faust's seek on assignment; the intake asks it to admit each record.
    Everything here runs on the event loop.
    """

    def __init__(self, consumer: ConnectorConsumer, topics: set[str]) -> None:
        self._consumer = consumer
        self._topics = set(topics)
        self._starts: dict[tuple[str, int], int | None] = {}
        self.sequencer = Sequencer(lambda topic, partition: self._starts.get((topic, partition)))
        self.idle = IdleWatch()

    # -- the fetch (called by ConnectorConsumer._getmany, on the event loop) ----------------
    def before_fetch(self) -> tuple[int, int]:
        """What :meth:`note_fetch` compares with: the seek epoch and the generation."""
        return self.sequencer.epoch, self._consumer.app.consumer_generation_id

    def note_fetch(self, records: Any, asked: tuple[int, int]) -> None:
        """Note what one fetch returned, before anything can drop a record of it."""
        epoch, _ = asked
        sequencer, topics = self.sequencer, self._topics
        spanned = sequencer.epoch != epoch  # asked before a seek, answered after it
        for tp, batch in records.items():
            if tp.topic in topics and batch:
                if spanned:
                    sequencer.unsure(tp.topic, tp.partition)
                else:
                    sequencer.fetched(tp.topic, tp.partition, [r.offset for r in batch])

    # -- the seek after an assignment (called by ConnectorConsumer.perform_seek) ------------
    def before_seek(self) -> dict[tuple[str, int], int]:
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
        consumer, sequencer = self._consumer, self.sequencer
        fetches = {
            (tp.topic, tp.partition): sequencer.fetch_count(tp.topic, tp.partition)
            for tp in consumer.assignment()
            if tp.topic in self._topics
        }
        sequencer.moved()
        return fetches

    async def after_seek(
        self, fetches: dict[tuple[str, int], int], committed: Mapping[Any, int | None]
    ) -> None:
        """Faust's seek is done: partitions with no committed offset go to their start."""
        consumer, sequencer, starts = self._consumer, self.sequencer, self._starts
        assigned = [tp for tp in consumer.assignment() if tp.topic in self._topics]
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

    # -- admission (called by the intake) ----------------------------------------------------
    async def admit(self, message: Any) -> bool:
        """Whether the agent may hand ``message`` on; seeks back over a hole first."""
        verdict, target = self.sequencer.accept(
            message.topic, message.partition, message.offset, message.generation_id
        )
        if verdict is Verdict.ADMIT:
            return True
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

    async def retry_stale_rewinds(self, held: AbstractSet[Any] = frozenset()) -> None:
        """Seek again where a rewind's re-read never came (run it every few seconds).

        ``held``: partitions paused until their dispatcher has room (not fetched, so not
        behind: :attr:`connector.kafka.intake.Intake.held`).
        """
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
        await self._read_idle_again(held)

    async def _read_idle_again(self, held: AbstractSet[Any]) -> None:
        """Read again where records exist past the first offset not admitted, with no progress."""
        consumer = self._consumer
        app = consumer.app
        if not consumer.flow_active or app.rebalancing:
            return  # a rebalance reads every partition again from its committed offset
        generation = app.consumer_generation_id
        fetching = consumer.fetching_partitions()
        sequencer, idle = self.sequencer, self.idle
        for tp in consumer.assignment():
            if tp.topic not in self._topics:
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
