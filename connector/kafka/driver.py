"""The Kafka transport driver: Faust's aiokafka driver with the connector's consumer.

Registered the way Faust registers its own drivers: an entry point in the
``faust.transports`` group (``pyproject.toml``), picked by the broker URL's scheme
(``connector://host:port``, :func:`connector.kafka.faust_app.broker_url`). Everything the
consumer changes is an override in :class:`ConnectorConsumer` (and the consumer
thread's in :class:`ConnectorConsumerThread`); each names the upstream defect it
works around, and ``tests/kafka/test_driver.py`` shows the defect on Faust's own
consumer and its absence on this one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from connector.kafka.commits import Commits
from connector.kafka.guard import OffsetGuard, ReadOffsets
from connector.kafka.intake import Intake
from connector.kafka.membership import leave_on_stop

__all__ = ["ConnectorConsumer", "ConnectorConsumerThread", "Transport"]

logger = logging.getLogger(__name__)


class ConnectorConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer reads committed records only, and
    leaves its group when it stops even as a static member."""

    async def on_start(self) -> None:
        await super().on_start()
        # Defect: aiokafka never sends LeaveGroup for a static member, so a stopped worker's
        # partitions would wait a session timeout; only a crash should keep them.
        leave_on_stop(self._consumer)

    def _create_worker_consumer(self, transport: Any) -> Any:
        # Defect: Faust reads uncommitted records (read_uncommitted) unless it is
        # transactional itself, so aborted records of a transactional producer would be
        # delivered. aiokafka reads the level in start(); no setting of Faust's reaches it.
        client = super()._create_worker_consumer(transport)
        client._isolation_level = getattr(self.app, "isolation_level", "read_committed")
        return client


class ConnectorConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with the connector's topics fetched, sought and committed
    by :class:`~connector.kafka.guard.OffsetGuard` and :class:`~connector.kafka.commits.Commits`.

    Until :meth:`attach` is called (the worker's runtime is built when its subscription
    agents start, before any assignment), it behaves exactly as Faust's.
    """

    guard: OffsetGuard | None = None
    intake: Intake | None = None
    commits: Commits | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Defect: Faust drops a fetched record below its partition's read offset, which
        # its fetch loop sets *after* handing a record on, undoing a seek made meanwhile.
        # Not kept for the connector's topics (the sequencer drops duplicates itself).
        # Set here, before the fetch loop binds the mapping's methods.
        self._read_offset = ReadOffsets(set(getattr(self.app, "managed_topics", ())))

    def attach(self, guard: OffsetGuard, intake: Intake, commits: Commits) -> None:
        """From now on the intake's topics are fetched, sought and committed as above."""
        # Whatever the app said when this consumer was built, its read offsets are not kept
        # for the intake's topics from here on.
        read_offsets = self._read_offset
        assert isinstance(read_offsets, ReadOffsets), type(read_offsets)
        read_offsets.manage(intake.topics)
        self.guard = guard
        self.intake = intake
        self.commits = commits

    def _new_consumer_thread(self) -> ConnectorConsumerThread:
        return ConnectorConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # -- fetch ---------------------------------------------------------------------------
    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        # Defect: Faust's fetch loop and stream drop records of a partition paused
        # mid-batch or fetched while flow is briefly off, and commit past them. The
        # connector's topics go from the fetch to the intake, sequenced.
        guard, intake = self.guard, self.intake
        if guard is None or intake is None:
            return await super()._getmany(active_partitions, timeout)
        asked = guard.before_fetch()
        records = await super()._getmany(active_partitions, timeout)
        guard.note_fetch(records, asked)
        taken = intake.topics
        mine = {tp: batch for tp, batch in records.items() if tp.topic in taken and batch}
        if not mine:
            return records
        generation = asked[1]
        if self.app.consumer_generation_id == generation:
            await intake.hand_off(mine, generation)
        # A fetch that spans a rebalance is dropped: the next owner reads it again.
        return {tp: batch for tp, batch in records.items() if tp.topic not in taken}

    # -- seek ----------------------------------------------------------------------------
    async def perform_seek(self) -> None:
        # Defect: after an assignment Faust seeks only partitions with a committed offset;
        # one without kept its fetch position across the rebalance, skipping the records
        # a revoked incarnation read and never finished.
        guard = self.guard
        if guard is None:
            await super().perform_seek()
            return
        self._read_offset.clear()
        fetches = guard.before_seek()
        await super().perform_seek()
        await guard.after_seek(fetches, self.committed_offsets())

    def committed_offsets(self) -> Mapping[Any, int | None]:
        """The last committed offset of each partition, as Faust knows it."""
        return self._committed_offset

    def fetching_partitions(self) -> set[Any] | None:
        """The partitions the fetch loop asks for now (None before the first fetch)."""
        return self._active_partitions

    def paused_partitions(self) -> set[Any]:
        return set(self._paused_partitions)

    # -- commit --------------------------------------------------------------------------
    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[Any]:
        yield from super()._filter_tps_with_pending_acks(topics)
        if self.commits is not None:
            yield from self.commits.candidates(topics)

    def _new_offset(self, tp: Any) -> int | None:
        # Defect (faust-streaming #606): Faust commits the first run of consecutive
        # acknowledged offsets even when it does not start at the committed offset, and
        # counts a gap -- with the record after it, still in flight -- as acknowledged.
        commits = self.commits
        if commits is None or not commits.manages(tp.topic):
            return super()._new_offset(tp)
        return commits.new_offset(tp, self._committed_offset[tp])

    async def commit_offsets(self, offsets: Mapping[Any, int]) -> bool:
        """Commit ``offsets`` now, past Faust's one-commit-at-a-time guard (on revoke)."""
        return await self._commit_offsets(offsets)

    def forget_unacked(self) -> None:
        """Faust tracks admitted messages until acked; fenced jobs' never will be."""
        self._unacked_messages.clear()


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`ConnectorConsumer`."""

    Consumer = ConnectorConsumer
