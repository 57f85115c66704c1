"""Offsets: records admitted in order, and no commit past a record not done.

Pure bookkeeping, no Kafka client: :mod:`connector.kafka.guard` applies it to
the consumer, and :mod:`connector.kafka.commits` commits what it allows.

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
  (:mod:`connector.kafka.intake`), and the :class:`Sequencer` still guards the rule:
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
  order (:meth:`connector.pipeline.delivery.OrderedDispatcher.position`).
* **Read offsets.** Faust silently drops a fetched record below the
  partition's read offset, which its fetch loop sets *after* handing a record
  on, so it can undo a seek made meanwhile. For these topics the read offset is
  not kept (the sequencer drops duplicates itself).

And after a rebalance a partition without a committed offset is read again
from its beginning (:meth:`connector.kafka.guard.OffsetGuard.after_seek`).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["IdleWatch", "Sequencer", "Verdict"]

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
