"""The Faust app, table, producer sinks and subscriptions, as the connector uses them.

* :class:`ConnectorFaust` is ``faust.App`` whose rebalances fence the connector's
  jobs instead of waiting for them: the dispatchers fence the ending generation
  synchronously when the rebalance starts (:meth:`ConnectorFaust.on_rebalance_start`,
  from Faust's consumer thread: one attribute write), and Faust's "wait until the
  streams are empty" step ends the fenced jobs instead (waiting ones are
  cancelled unacknowledged, requests on the wire are awaited up to the HTTP
  timeout), then commits what is done (:class:`~connector.kafka.commits.Commits`).
* :class:`TableStore` is the processor's state store on the Faust table, told the
  partition explicitly (the table is co-partitioned with its input by
  construction: ``use_partitioner=False``, and every write names the input
  record's partition, whatever partitioner the producer used).
* :class:`KafkaSinks` writes audit, dead-letter and parking records straight to the
  app's aiokafka producer.
* :func:`subscribe_for_assignment` declares the subscription of the events and
  parking topics, so that Faust's assignor assigns their partitions together with
  the table's changelog; their records never reach a Faust stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol

import faust
from faust.types import TP

from connector.domain.audit import AuditRecord, DeadLetter
from connector.domain.lifecycle import OrderState, decode_state, encode_state
from connector.infra.metrics import Metrics
from connector.settings import TopicSettings

__all__ = [
    "BROKER_SCHEME",
    "ConnectorFaust",
    "Fencing",
    "KafkaSinks",
    "TableStore",
    "broker_url",
    "started_producer",
    "subscribe_for_assignment",
]

logger = logging.getLogger(__name__)

# The transport driver's entry point name (pyproject.toml, group "faust.transports").
BROKER_SCHEME = "connector"


def broker_url(bootstrap_servers: str) -> str:
    """Faust's broker URL for ``bootstrap_servers``, naming the connector's driver."""
    servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
    return ";".join(f"{BROKER_SCHEME}://{s}" for s in servers)


def started_producer(app: faust.App) -> Any:
    """The app's started aiokafka producer (Faust raises NotReady before that)."""
    producer: Any = app.producer
    return producer._ensure_producer()


class KafkaSinks:
    """Audit, dead-letter and parking topics; each call returns once the broker has it.

    Records go straight to the app's aiokafka producer: Faust's ``Topic.send`` wraps
    each one in pending and future messages, a producer start check and its sensors
    (~30 µs of CPU per record) for nothing the connector uses. Same producer, so
    the flush before a commit covers them.
    """

    def __init__(
        self, producer: Callable[[], Any], topics: TopicSettings, metrics: Metrics
    ) -> None:
        self._producer = producer  # the started AIOKafkaProducer (raises until then)
        self._audit = topics.audit
        self._dead_letter = topics.dead_letter
        self._parking = topics.parking
        self._metrics = metrics

    async def park(
        self, key: bytes, value: bytes, partition: int, headers: list[tuple[str, bytes]]
    ) -> None:
        # The input record's own partition: the parking topic is co-partitioned with
        # the events topic, so the order's state and its parked events stay together.
        fut = await self._producer().send(
            self._parking, value, key=key, partition=partition, headers=headers
        )
        await fut

    async def audit(self, record: AuditRecord) -> None:
        key = record.order_key.encode() if record.order_key else None
        fut = await self._producer().send(self._audit, record.model_dump_json().encode(), key=key)
        if record.terminal:
            # The event is acknowledged after this returns, so its terminal record must
            # be on the broker. Earlier records of the event share its key, partition and
            # producer, so they are written before it; waiting for them too buys nothing.
            await fut
        self._metrics.observe_audit(record)

    async def dead_letter(self, record: DeadLetter, key: bytes | None) -> None:
        fut = await self._producer().send(
            self._dead_letter, record.model_dump_json().encode(), key=key
        )
        await fut
        self._metrics.observe_dead_letter(record)


class TableStore:
    """:class:`connector.pipeline.StateStore` on the Faust table, with the decoded states cached.

    An event reads its order's state up to three times (decide, re-check before each
    attempt, finish); decoding it from RocksDB each time was ~5% of a worker's CPU.
    The cache holds what this worker last wrote or read. Only a rebalance changes the
    table behind its back (recovery from the changelog), so :meth:`forget` empties it
    when partitions are revoked; it is bounded by emptying it when full (events of one
    order come close together, so recent orders are what it must hold).

    A write goes to the RocksDB database of ``partition`` and, as a changelog record to
    that same partition, straight to the app's aiokafka producer, queued in call order
    (never through the table's own ``__setitem__``, which sends its own changelog record):
    Faust's own path (a producer buffer drained by a task, then pending and future
    messages) cost ~30 µs of CPU per write, two writes per event. Like Faust, it
    records the changelog offset in the store once the broker has the record, which is
    where recovery resumes. The partition is an argument: Faust's own table reads it
    from a context variable holding the "current event".
    """

    MAX_CACHED = 8192
    PERSIST_EVERY_S = 0.5

    def __init__(self, table: faust.Table, producer: Callable[[], Any]) -> None:
        self._table = table
        self._producer = producer  # the started AIOKafkaProducer (raises until then)
        self._topic = table.changelog_topic.get_topic_name()
        # By (partition, key): a key published to two partitions (producers with different
        # partitioners) has a state in each, as Faust's own per-partition databases do.
        self._cache: dict[tuple[int, bytes], OrderState | None] = {}
        self._unpersisted: dict[TP, int] = {}
        self._flush: asyncio.TimerHandle | None = None

    def get(self, partition: int, key: bytes) -> OrderState | None:
        try:
            return self._cache[partition, key]
        except KeyError:
            state = decode_state(self._read(partition, key))
            self._remember(partition, key, state)
            return state

    async def put(self, partition: int, key: bytes, state: OrderState) -> Any:
        value = encode_state(state)
        # Queued first, then stored with no await in between: a job cancelled while the
        # producer makes room has written neither, so the store never holds a state
        # its changelog lacks.
        fut = await self._producer().send(self._topic, value, key=key, partition=partition)
        self._write(partition, key, value)
        self._remember(partition, key, state)
        fut.add_done_callback(functools.partial(self._persisted, TP(self._topic, partition)))
        return fut

    def _read(self, partition: int, key: bytes) -> bytes | None:
        store: Any = self._table.data
        open_db = getattr(store, "_db_for_partition", None)
        if open_db is None:  # the in-memory store: one dict for every partition
            value: bytes | None = store.get(key)
            return value
        raw = open_db(partition).get(store._encode_key(key))
        return None if raw is None else store._decode_value(raw)

    def _write(self, partition: int, key: bytes, value: bytes) -> None:
        store: Any = self._table.data
        open_db = getattr(store, "_db_for_partition", None)
        if open_db is None:
            store[key] = value
            return
        encoded = store._encode_key(key)
        # As faust.stores.rocksdb.Store._set does, with the partition given.
        store._key_index[encoded] = partition
        open_db(partition).put(encoded, store._encode_value(value))

    def _persisted(self, tp: TP, fut: Any) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # the processor sees the failure where it waits for the write
        # Only the highest offset matters, so acknowledgements are gathered and written
        # to RocksDB at most every PERSIST_EVERY_S (one put per changelog record was ~2%
        # of a worker's CPU). A crash in between only makes recovery read a few more
        # changelog records: the stored offset is never ahead of the stored data.
        offset = fut.result().offset
        if offset > self._unpersisted.get(tp, -1):
            self._unpersisted[tp] = offset
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(self.PERSIST_EVERY_S, self.persist_offsets)

    def persist_offsets(self) -> None:
        """Write the gathered changelog offsets to the partitions' stores."""
        self._flush = None
        pending, self._unpersisted = self._unpersisted, {}
        for tp, offset in pending.items():
            try:
                self._table.data.set_persisted_offset(tp, offset)
            except Exception as exc:  # e.g. the partition's store closed by a revoke
                logger.debug("changelog offset %s of %s not recorded: %r", offset, tp, exc)

    def _remember(self, partition: int, key: bytes, state: OrderState | None) -> None:
        if len(self._cache) >= self.MAX_CACHED:
            self._cache.clear()
        self._cache[partition, key] = state

    def forget(self) -> None:
        # Before the revoked partitions' stores close.
        if self._flush is not None:
            self._flush.cancel()
        self.persist_offsets()
        self._cache.clear()


class Fencing(Protocol):
    """What a rebalance asks of the worker's runtime (:class:`connector.app.ConnectorApp`)."""

    def fence_generation(self, generation: int) -> None:
        """Fence every job of ``generation`` and older; called from the consumer thread."""

    async def fence_and_drain(self) -> None:
        """End the fenced jobs (calls on the wire are awaited, bounded)."""


class ConnectorFaust(faust.App):
    """faust.App whose rebalances fence the connector's jobs instead of waiting for them."""

    connector: Fencing | None = None
    # A new consumer (not started, no group) for table recovery in bulk
    # (connector.kafka.bulk_recovery); None: Faust's own recovery path.
    changelog_reader: Callable[[], Any] | None = None
    managed_topics: set[str] = set()
    isolation_level = "read_committed"

    def on_init_dependencies(self) -> Any:
        services = super().on_init_dependencies()
        # Faust's Monitor sensor keeps per-message and per-send statistics for its web
        # pages (off here); the connector's own metrics replace it. Out of the sensor
        # set, it costs nothing per record. It stays the app's monitor, which Faust's
        # consumer still updates on commits and fetches.
        self.sensors.remove(self.monitor)
        return services

    def on_rebalance_start(self) -> None:
        # Called first when partitions are revoked, from Faust's consumer thread: one
        # attribute write fences the ending generation; the event loop does the rest.
        if self.connector is not None:
            self.connector.fence_generation(self.consumer_generation_id)
        super().on_rebalance_start()

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        # Replaces "wait until every admitted record is acknowledged" (which waits for
        # retries and backoffs, past the group's rebalance timeout): fenced jobs end
        # now, unacknowledged; only requests on the wire are awaited, bounded.
        if self.connector is not None:
            await self.connector.fence_and_drain()
            commits = getattr(consumer, "commits", None)
            if commits is not None:
                await commits.commit_now()
        forget = getattr(consumer, "forget_unacked", None)
        if forget is not None:
            forget()
        await consumer.commit()


def subscribe_for_assignment(
    app: faust.App, topic: faust.TopicT, name: str, on_start: Callable[[], Any]
) -> None:
    """Subscribe ``topic`` so that Faust assigns its partitions with the table's.

    Faust subscribes a topic and co-assigns it with the co-partitioned changelog only
    for the topics its agents read, so this declares an agent; but no record reaches
    it: :class:`~connector.kafka.driver.ConnectorConsumer` hands the topic's records
    from each fetch to the intake. ``on_start`` runs when the agent starts (before any
    assignment): it builds the worker's runtime, which attaches the intake.
    """

    async def subscription(stream: faust.StreamT) -> None:
        on_start()
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            message = event.message
            logger.error(
                "%s[%s]@%s reached Faust's stream; the intake should have taken it",
                message.topic,
                message.partition,
                message.offset,
            )

    subscription.__name__ = subscription.__qualname__ = f"subscribe_{name}"
    app.agent(topic, name=name, concurrency=1)(subscription)
