"""Contender: a faststream (0.7) Kafka subscriber, aiokafka underneath.

What a team that picks faststream writes for this job: a ``KafkaBroker``, one
``@broker.subscriber`` on the events topic in the benchmark's consumer group,
and a ``FastStream`` app that owns start-up, SIGTERM and shutdown. Each record is
parsed with :func:`connector.domain.events.parse_record`, mapped with
:func:`connector.vendors.map_event` and sent with aiohttp, exactly as the
hand-written loop (:mod:`bench.baselines.aiokafka_loop`) does. No state, no
audit trail, no dead letters.

The job asks for three things faststream's own options do not give together:
concurrency across keys, order within a key, and commits of answered records
only. What faststream 0.7 offers (read in ``faststream/kafka/subscriber/``):

- the default subscriber handles one record at a time: safe and ordered, but
  one vendor call in flight per process (at 50 ms API latency, ~20 events/s);
- ``max_workers=N`` with the default ``AckPolicy.ACK_FIRST`` builds a
  ``ConcurrentDefaultSubscriber``: N tasks take records from one queue in any
  order (two events of one order can overtake each other) and aiokafka's
  auto-commit (``enable_auto_commit=True``) commits what was *fetched*, so a
  crash skips records whose calls never answered. Unsafe on both counts;
- ``max_workers=N`` with ``AckPolicy.ACK`` (or MANUAL) builds a
  ``ConcurrentBetweenPartitionsSubscriber``: N aiokafka consumers in the group,
  each handling one record at a time and committing after it. Safe and ordered,
  but concurrency is capped by the partitions a process owns (6 here: at most
  ~120 events/s at 50 ms, with one commit round trip per record);
- a handler's ``msg.ack()`` under ``AckPolicy.MANUAL`` calls
  ``consumer.commit()`` without offsets, which commits the consumer's whole
  *position* (every record already handed out), so acking one record from a
  concurrent handler commits its unfinished neighbours too.

So this is what a careful user does within faststream's API: the default
subscriber with ``AckPolicy.MANUAL`` (auto-commit off, faststream never
commits) whose handler only *admits* the record into the same per-key task
chains as the loop (:class:`bench.baselines.aiokafka_loop.DeliveryLoop`: at
most ``max_in_flight`` in flight, one order's events in order, the commit point
per partition at the oldest unfinished record) and returns; a background task
commits those explicit offsets once a second through the subscriber's aiokafka
consumer, and the rebalance listener drains and commits before giving
partitions away. Reusing the loop's core means the two differ only in what
faststream puts around each record (its consume loop over ``getone``,
middlewares, context and dependency injection) - which is what this row prices.

Run by the benchmark as ``python -m bench.baselines.faststream_app`` with the
contenders' interpreter (``bench/contenders/.venv``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy

from bench.baselines.aiokafka_loop import COMMIT_INTERVAL_S, DeliveryLoop, OffsetTracker
from bench.baselines.common import BaselineConfig, Sender, announce, make_sender

__all__ = ["FaststreamBaseline", "main"]

logger = logging.getLogger(__name__)

# Seconds the shutdown waits for calls in flight before the last commit (as the loop).
DRAIN_TIMEOUT_S = 10.0


async def raw_body(message: StreamMessage[Any]) -> bytes:
    """faststream's documented custom-decoder hook, returning the bytes untouched.

    Without it faststream ``json.loads`` every body (our records carry no
    content-type header) before the handler runs, and then ``parse_record``
    parses it again: the other implementations parse each record once.
    """
    body: bytes = message.body
    return body


async def _commit(consumer: AIOKafkaConsumer | None, offsets: OffsetTracker) -> None:
    """Commit the explicit per-partition points that moved (never the consumer's position)."""
    moved = offsets.take()
    if moved and consumer is not None:
        await consumer.commit(moved)


class _Rebalance(ConsumerRebalanceListener):
    """Passed as the subscriber's ``listener=``; faststream calls it beside its own logging one."""

    def __init__(self, app: FaststreamBaseline) -> None:
        self._app = app

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Finish what is in flight and commit it, so the next owner starts after it.
        await self._app.delivery.drain()
        await _commit(self._app.consumer, self._app.delivery.offsets)
        self._app.delivery.offsets.forget(revoked)
        announce([])

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        announce([tp.partition for tp in assigned])


class FaststreamBaseline:
    """The broker, its one subscriber and the app's lifecycle hooks."""

    def __init__(self, config: BaselineConfig) -> None:
        self._config = config
        # A subscriber-only service: no producer, no admin client (the benchmark
        # creates the topic). Per-record "Received"/"Processed" access logs are
        # demoted to DEBUG, faststream's documented knob, so they are not written:
        # the other implementations log nothing per record either.
        self.broker = KafkaBroker(config.bootstrap, consumer_only=True, log_level=logging.DEBUG)
        self.subscriber = self.broker.subscriber(
            config.topic,
            group_id=config.group,
            # MANUAL: enable_auto_commit=False and faststream never commits; we do,
            # with explicit offsets (see the module docstring for why not msg.ack()).
            ack_policy=AckPolicy.MANUAL,
            # faststream's default is "latest": a partition first assigned after
            # its events were produced would skip them.
            auto_offset_reset="earliest",
            listener=_Rebalance(self),
            decoder=raw_body,
        )
        self.subscriber(self._handle)
        self.app = FastStream(
            self.broker,
            on_startup=[self._on_startup],
            after_startup=[self._after_startup],
            on_shutdown=[self._on_shutdown],
        )
        # Made in on_startup: aiohttp's session binds to the running loop.
        self._sender: Sender | None = None
        self._delivery: DeliveryLoop | None = None
        self._committer: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def delivery(self) -> DeliveryLoop:
        assert self._delivery is not None, "used before the app started"
        return self._delivery

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        # The subscriber's own aiokafka consumer, set while it runs.
        return self.subscriber.consumer

    # ``msg: KafkaMessage`` is the documented way to reach the record (its key is
    # not in the body). faststream resolves such a Context parameter through
    # fast_depends, which calls the synchronous ``Context.use`` in a worker thread:
    # one thread hop per record, part of the idiomatic cost priced here (in a
    # micro-benchmark of ``subscriber.consume``, 0.25 against 0.11 ms CPU per
    # record without the parameter; not resolvable in the end-to-end noise).
    async def _handle(self, body: bytes, msg: KafkaMessage) -> None:
        # Runs inside faststream's consume loop, one record at a time: admitting
        # waits for a free slot when max_in_flight calls are out, which stops the
        # loop's next getone() (backpressure), then returns at once so the next
        # record's call can start while this one's is in flight.
        if self._closing:
            # Shutting down: leave it uncommitted, the next owner reads it again.
            return
        # A non-batch subscriber's message wraps one record (the type also allows a batch).
        record = cast("ConsumerRecord[bytes, bytes]", msg.raw_message)
        await self.delivery.submit(TopicPartition(record.topic, record.partition), record)

    async def _on_startup(self) -> None:
        self._sender = make_sender(self._config.http, self._config.max_in_flight)
        self._delivery = DeliveryLoop(self._config, self._sender)

    async def _after_startup(self) -> None:
        self._committer = asyncio.create_task(self._commit_periodically())

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            try:
                await _commit(self.consumer, self.delivery.offsets)
            except Exception:  # a rebalance in progress: the next round commits
                logger.warning("commit failed", exc_info=True)

    async def _on_shutdown(self) -> None:
        # faststream runs this on SIGTERM before it stops the broker, so the
        # consumer is still there for the last commit.
        self._closing = True
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        try:
            await asyncio.wait_for(self.delivery.drain(), timeout=DRAIN_TIMEOUT_S)
            await _commit(self.consumer, self.delivery.offsets)
        finally:
            if self._sender is not None:
                await self._sender.aclose()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    # FastStream.run installs the SIGTERM/SIGINT handlers and runs the hooks.
    asyncio.run(FaststreamBaseline(BaselineConfig.from_env()).app.run())


if __name__ == "__main__":
    main()
