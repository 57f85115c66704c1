"""Baseline (c): a hand-written aiokafka + HTTP client loop ("no framework").

What an engineer writes who knows the problem but uses no stream framework:

- one consumer (``enable_auto_commit=False``) in the benchmark's consumer group;
- every record becomes a task; tasks of one key are chained (each awaits its
  predecessor), so per-order order holds while different orders run concurrently;
- at most ``max_in_flight`` records are in flight: admitting the next one waits
  for a free slot, which stops the fetch loop (backpressure);
- per partition, the committed offset only moves up to the oldest unfinished
  record (:class:`OffsetTracker`), committed once a second and on revocation,
  so a crash never skips an undelivered event (at-least-once);
- transient HTTP failures are retried with backoff.

No state, no audit trail, no dead letters: everything the connector does beyond
this is what the comparison prices. ``BENCH_HTTP`` picks aiohttp's client or
plain httpx, to show the transport's share.

Run by the benchmark as ``python -m bench.baselines.aiokafka_loop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import deque
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from bench.baselines.common import (
    MAX_EVENT_BYTES,
    BaselineConfig,
    Sender,
    announce,
    make_sender,
    send_with_retries,
)
from connector.domain.events import parse_record
from connector.errors import InvalidEventError
from connector.vendors import map_event

__all__ = ["DeliveryLoop", "OffsetTracker", "main"]

logger = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0


@dataclass(slots=True)
class _Slot:
    offset: int
    done: bool = False


class OffsetTracker:
    """Offsets in flight per partition (in fetch order) and what may be committed."""

    def __init__(self) -> None:
        self._queues: dict[TopicPartition, deque[_Slot]] = {}
        self._committable: dict[TopicPartition, int] = {}
        self._dirty: set[TopicPartition] = set()

    def add(self, tp: TopicPartition, offset: int) -> _Slot:
        slot = _Slot(offset)
        self._queues.setdefault(tp, deque()).append(slot)
        return slot

    def finish(self, tp: TopicPartition, slot: _Slot) -> None:
        slot.done = True
        queue = self._queues[tp]
        # Only a finished prefix moves the commit point: an older record still in
        # flight holds it back, whatever finished after it.
        while queue and queue[0].done:
            self._committable[tp] = queue.popleft().offset + 1
            self._dirty.add(tp)

    def take(self) -> dict[TopicPartition, int]:
        """Commit points that moved since the last call."""
        moved = {tp: self._committable[tp] for tp in self._dirty}
        self._dirty.clear()
        return moved

    def forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._queues.pop(tp, None)
            self._committable.pop(tp, None)
            self._dirty.discard(tp)


class DeliveryLoop:
    def __init__(self, config: BaselineConfig, sender: Sender) -> None:
        self._config = config
        self._sender = sender
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._tails: dict[bytes | None, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.offsets = OffsetTracker()

    async def submit(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        await self._slots.acquire()
        slot = self.offsets.add(tp, record.offset)
        previous = self._tails.get(record.key)
        task = asyncio.create_task(self._handle(tp, record, previous, slot))
        self._tasks.add(task)
        self._tails[record.key] = task

    async def _handle(
        self,
        tp: TopicPartition,
        record: ConsumerRecord[bytes, bytes],
        previous: asyncio.Task[None] | None,
        slot: _Slot,
    ) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])
            await self._deliver(record)
        except Exception:
            logger.exception("delivery failed at offset %s", record.offset)
        finally:
            current = asyncio.current_task()
            if self._tails.get(record.key) is current:
                del self._tails[record.key]
            if current is not None:
                self._tasks.discard(current)
            self.offsets.finish(tp, slot)
            self._slots.release()

    async def _deliver(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = parse_record(record.key, record.value, max_bytes=MAX_EVENT_BYTES)
            request = map_event(event)
        except InvalidEventError as exc:
            logger.warning("skipping invalid record at offset %s: %s", record.offset, exc)
            return
        status = await send_with_retries(self._sender, self._config.http_call(request))
        if not 200 <= status < 300:
            logger.warning("vendor answered %s for offset %s", status, record.offset)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: DeliveryLoop, consumer: AIOKafkaConsumer) -> None:
        self._loop = loop
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Finish what is in flight and commit it, so the next owner starts after it.
        await self._loop.drain()
        await _commit(self._consumer, self._loop.offsets)
        self._loop.offsets.forget(revoked)
        announce([])

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        announce([tp.partition for tp in assigned])


async def _commit(consumer: AIOKafkaConsumer, offsets: OffsetTracker) -> None:
    moved = offsets.take()
    if moved:
        await consumer.commit(moved)


async def _commit_periodically(consumer: AIOKafkaConsumer, offsets: OffsetTracker) -> None:
    while True:
        await asyncio.sleep(COMMIT_INTERVAL_S)
        try:
            await _commit(consumer, offsets)
        except Exception:  # a rebalance in progress: the next round commits
            logger.warning("commit failed", exc_info=True)


async def run(config: BaselineConfig, stop: asyncio.Event) -> None:
    sender = make_sender(config.http, config.max_in_flight)
    loop = DeliveryLoop(config, sender)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap,
        group_id=config.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    consumer.subscribe([config.topic], listener=_Rebalance(loop, consumer))
    await consumer.start()
    committer = asyncio.create_task(_commit_periodically(consumer, loop.offsets))
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            for tp, records in batches.items():
                for record in records:
                    await loop.submit(tp, record)
    finally:
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        try:
            await asyncio.wait_for(loop.drain(), timeout=10.0)
            await _commit(consumer, loop.offsets)
        finally:
            await consumer.stop()
            await sender.aclose()


async def _main() -> None:
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    await run(BaselineConfig.from_env(), stop)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_main())


if __name__ == "__main__":
    main()
