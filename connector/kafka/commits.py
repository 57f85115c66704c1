"""The commit coordinator: what may be committed, per partition, and when.

One object owns the commit rule of the connector's own topics (the events and
parking topics), as quix-streams' ``Checkpoint`` does:

* **The position.** A partition's committable offset is its dispatcher's
  position: one past the last record whose job ended, in offset order
  (:meth:`connector.pipeline.delivery.OrderedDispatcher.position`). Faust's own rule
  (runs of acknowledged offsets, its gaps) is never used for these topics: it
  commits past records still in flight (faust-streaming #606).
* **Flush, then commit.** Everything a record's job wrote before its position
  moved (audit and dead-letter records, parked copies, changelog records) went
  through the app's one producer; Faust's commit flushes that producer before it
  commits (``_commit_offsets``, verified at start-up by
  :mod:`connector.kafka.compat`),
  and :meth:`Commits.commit_now` does the same explicitly.
* **When.** Faust's commit loop asks every ``broker_commit_every``/interval:
  :class:`~connector.kafka.driver.ConnectorConsumer` offers it this object's
  partitions and takes their offsets from :meth:`Commits.new_offset`. On revoke,
  :meth:`Commits.commit_now` commits what is done before Faust forgets the
  partitions (Faust drops a revoked partition's acknowledgements before its own
  revoke-time commit, so the next owner would redo up to one interval of work).

Threads: everything here runs on the event loop. The one thing Faust's consumer
thread does is fence the ending generation
(:meth:`connector.pipeline.delivery.OrderedDispatcher.fence_generation`, one attribute
write), which freezes the positions of the fenced partitions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector.kafka.driver import ConnectorConsumer

__all__ = ["Commits", "Position"]

logger = logging.getLogger(__name__)

# position(partition): one past the last record done in offset order, or None.
Position = Callable[[int], "int | None"]


class Commits:
    """Owns, per partition of ``positions``' topics, the offset that may be committed."""

    def __init__(self, consumer: ConnectorConsumer, positions: Mapping[str, Position]) -> None:
        self._consumer = consumer
        self._positions = dict(positions)

    def manages(self, topic: str) -> bool:
        return topic in self._positions

    def candidates(self, topics: Any = None) -> Iterator[Any]:
        """The assigned partitions of these topics (filtered as Faust filters its own)."""
        for tp in self._consumer.assignment():
            if tp.topic in self._positions and (
                topics is None or tp in topics or tp.topic in topics
            ):
                yield tp

    def new_offset(self, tp: Any, committed: int | None) -> int | None:
        """The offset to commit for ``tp`` now, or ``None`` when nothing moved."""
        done = self._positions[tp.topic](tp.partition)
        if done is None or (committed is not None and done <= committed):
            return None
        return done

    async def commit_now(self) -> None:
        """Flush, then commit what is done now (on revoke, before Faust forgets it)."""
        consumer = self._consumer
        offsets = {}
        for tp in self.candidates():
            done = self._positions[tp.topic](tp.partition)
            if done is not None:
                offsets[tp] = done
        if not offsets:
            return
        try:
            await consumer.app.producer.flush()
            # Faust's commit itself handles "the group rebalanced meanwhile" (the next owner
            # redoes that work) and crashes the worker on any other commit error (its
            # supervisor restarts it; nothing past the committed offset was acknowledged).
            await consumer.commit_offsets(offsets)
        except Exception as exc:  # the flush: the producer is gone, the next owner redoes it
            logger.warning("commit on revoke failed: %r", exc)
