"""Intake: records of the connector's own topics go from the fetch to the processor.

Faust hands each fetched record through its fetch loop (a four-task
``wait_first`` per record), the conductor, a channel queue and a stream before
an agent sees it: ~0.1 ms of CPU per event, a tenth of a worker's, for
machinery the connector overrides anyway (it acknowledges, sequences and
commits these records itself, :mod:`connector.domain.offsets`). The events and
parking topics stay subscribed through their agents, so Faust still assigns
them with their co-partitioned table; but their records are taken out of each
fetched batch (:meth:`connector.domain.offsets.OffsetGuard.take`) and handed here,
in the fetch loop's task, one at a time:

* partitions are interleaved, as Faust's scheduler does, so one busy
  partition does not hold the others back;
* the hand-off stops as soon as flow stops or the consumer generation changes
  (a rebalance): the records not handed on are read again by the partition's
  next owner, from the committed offset;
* each record passes the :class:`~connector.domain.offsets.Sequencer` (admitted in
  offset order, a hole read again) and then goes to the processor, which
  creates its job;
* the hand-off never waits for room: a partition whose dispatcher is full
  (``max_pending`` records, or their bytes) stops there -- Faust stops fetching
  it (its own "buffer full" pause), the rest of its fetched records wait in
  order, and a resumer task hands them on as room comes, then lets Faust fetch
  the partition again. So a full parking dispatcher never holds the events
  topic back, nor the other way round, and the consumer keeps polling (no
  eviction for exceeding the poll interval). Nothing is fetched twice: seeking
  back instead (the first version) made aiokafka drop its buffers and fetch
  them again: 0.59 CPU ms/event instead of 0.50, and 400 MB of RSS instead
  of 207 with a 200k-order backlog (BENCHMARKS.md). Held partitions take
  turns for the room, one record each: served one after the other, a 60k-order
  backlog went at 1,156 events/s instead of 1,890;
* the processor is told the record's partition, which is where the order's
  state and changelog record are written (co-partitioned with the input by
  construction, see :mod:`connector.kafka.faust_app`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

from faust.types import TP

from connector.domain.audit import SourceRef

__all__ = ["Fetched", "Handler", "Intake", "Route"]

logger = logging.getLogger(__name__)

# handle(record, source, ack): admits the record's job; ``ack`` is called in offset order.
Handler = Callable[["Fetched", SourceRef, Callable[[], None]], Awaitable[None]]

YIELD_EVERY = 100  # records handed on between two turns of the event loop
RESUME_CHECK_S = 0.02  # how often a held partition looks for room
MAX_KEPT = 10_000  # records a held partition keeps in memory; past that, read again later


@dataclass(frozen=True, slots=True)
class Route:
    """Where one topic's records go."""

    handle: Handler
    # Whether the topic's dispatcher takes a record of this many bytes without waiting.
    has_room: Callable[[int], bool]


class Intake:
    """Hands fetched records of ``routes``' topics to their handler (see the module doc)."""

    def __init__(self, consumer: Any, guard: Any, routes: Mapping[str, Route]) -> None:
        self._consumer = consumer
        self._app = consumer.app
        self._guard = guard
        self._routes = dict(routes)
        self._topics = frozenset(self._routes)
        # Faust's stall diagnostics read when a partition's stream last took a record.
        self._inbound = consumer.app.monitor.stream_inbound_time
        self._held: dict[Any, _Kept] = {}  # partitions paused for room, with what they kept
        self._resumer: asyncio.Task[None] | None = None

    @property
    def topics(self) -> frozenset[str]:
        return self._topics

    @property
    def held(self) -> set[Any]:
        """Partitions paused until their dispatcher has room."""
        return set(self._held)

    async def hand_off(self, batches: Mapping[Any, list[Any]], generation: int) -> None:
        """Hand on one fetch's records of these topics, read in ``generation``."""
        consumer, app, routes, held = self._consumer, self._app, self._routes, self._held
        rows = zip_longest(*([(tp, record) for record in batch] for tp, batch in batches.items()))
        handed = 0
        for row in rows:
            for item in row:
                if item is None:
                    continue
                if not consumer.flow_active or app.consumer_generation_id != generation:
                    return  # a rebalance: the next owner reads the rest again
                tp, record = item
                kept = held.get(tp)
                if kept is not None:
                    if kept.generation == generation:
                        await self._keep(kept, tp, record)  # behind records waiting for room
                        continue
                    del held[tp]  # held in an older generation: read again since
                if not routes[tp.topic].has_room(_size(record)):
                    await self._hold(tp, record, generation)
                    continue
                await self.hand(tp, record, generation)
                handed += 1
                if handed % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # HTTP answers, timers and revokes go on meanwhile

    async def hand(self, tp: Any, record: Any, generation: int) -> None:
        """One record: sequenced, then handed to its topic's handler."""
        message = Fetched(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            record.headers,
            generation,
        )
        guard = self._guard
        if not await guard.admit(message):
            return  # a duplicate, or read past a hole (read again after a seek)
        self._inbound[tp] = time.monotonic()
        source = SourceRef(topic=message.topic, partition=message.partition, offset=message.offset)
        try:
            await self._routes[tp.topic].handle(message, source, _acknowledged)
        except Exception:
            # The processor never raises here; if it did, the record would be admitted
            # without a job, and later acknowledgements would commit past it: read it again.
            logger.exception("admitting %s failed; reading it again", source)
            await guard.unadmit(message)
        except BaseException:
            guard.sequencer.back_to(message.topic, message.partition, message.offset)
            raise

    async def _hold(self, fetched_tp: Any, record: Any, generation: int) -> None:
        """Pause ``tp`` and keep ``record`` (and what follows it) until there is room."""
        # Faust's own partition type: its active-partition set accepts nothing else
        # (the fetched batches are keyed by aiokafka's, equal to it as tuples).
        tp = TP(fetched_tp.topic, fetched_tp.partition)
        self._held[tp] = kept = _Kept(generation)
        self._consumer.on_buffer_full(tp)
        await self._keep(kept, tp, record)
        if self._resumer is None or self._resumer.done():
            self._resumer = asyncio.get_running_loop().create_task(self._resume_with_room())

    async def _keep(self, kept: _Kept, tp: Any, record: Any) -> None:
        if kept.overflowed:
            return  # read again from where the overflow started, once released
        if len(kept.records) < MAX_KEPT:
            kept.records.append(record)
            return
        # Faust did not stop fetching the partition (it never pauses one during table
        # recovery): rather than hold a backlog in memory, read it again once released.
        kept.overflowed = True
        first = kept.records[0].offset
        kept.records.clear()
        await self._guard.reread(TP(tp.topic, tp.partition), first)

    async def _resume_with_room(self) -> None:
        """Hand on what held partitions kept, in order, as room comes; then fetch them again.

        Partitions take turns, one record each, as the fetch loop does: one held
        partition's backlog does not take all the room. An error in one pass is
        logged and the next pass goes on: a dead resumer would leave its partitions
        paused.
        """
        while self._held:
            await asyncio.sleep(RESUME_CHECK_S)
            try:
                await self._resume_pass()
            except Exception:
                logger.exception("handing on held records failed; trying again")

    async def _resume_pass(self) -> None:
        consumer, app, held = self._consumer, self._app, self._held
        for tp, kept in list(held.items()):
            if app.consumer_generation_id != kept.generation:
                # Reassigned since: read again from the committed offset (Faust fetches the
                # partition again after any assignment).
                del held[tp]
        turns = [(tp, kept, self._routes[tp.topic]) for tp, kept in held.items()]
        moved = True
        while moved and consumer.flow_active:
            moved = False
            for tp, kept, route in turns:
                records = kept.records
                if app.consumer_generation_id != kept.generation:
                    break
                if records and route.has_room(_size(records[0])):
                    await self.hand(tp, records.popleft(), kept.generation)
                    moved = True
        for tp, kept, _ in turns:
            if not kept.records and held.get(tp) is kept:
                del held[tp]
                # Only while the generation it was held in lasts: after a rebalance Faust
                # manages the partition's pause itself (paused for the table's recovery).
                if app.consumer_generation_id == kept.generation and not app.rebalancing:
                    consumer.on_buffer_drop(tp)


@dataclass(slots=True)
class _Kept:
    """A held partition's records not handed on yet, in offset order."""

    generation: int
    records: deque[Any] = field(default_factory=deque)
    overflowed: bool = False  # records past MAX_KEPT are read again after the release


def _size(record: Any) -> int:
    return len(record.key or b"") + len(record.value or b"")


@dataclass(frozen=True, slots=True)
class Fetched:
    """One fetched record of the connector's topics, with the generation it was read in."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any
    generation_id: int

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


def _acknowledged() -> None:
    """The dispatcher's acknowledgement, in offset order: nothing to do here.

    What is committed is the dispatcher's own position (:mod:`connector.kafka.commits`).
    """
