"""A synthetic order table: the changelog records the connector itself writes, produced fast.

Filling the table by delivering events runs at the connector's own speed (1M orders
took 550 s); the failover scenario (:mod:`bench.rebuild`) needs millions. So this
writes the table's changelog topic directly, record for record what
:class:`connector.kafka.faust_app.TableStore` writes:

* topic ``<app id>-orders-changelog`` (:func:`connector.infra.topics.changelog_topic`),
  created by a worker first so that its configs are Faust's own;
* key = the order key bytes (``kombo|<integration>|<order>`` / ``comeet|<evaluation>``,
  the table's raw key serializer);
* value = :func:`connector.domain.lifecycle.encode_state` of the state an order has
  after its whole lifecycle was delivered (opened, progress, completed: each begun then
  confirmed, as the processor records them), so every order is COMPLETED;
* partition = the partition its events go to (the default partitioner: murmur2 of the
  key, as every producer of the benchmark uses), given explicitly as the connector does.

No event is produced for these orders: their sequences are the offsets just below the
events partition's start (-3, -2, -1), where :func:`connector.domain.lifecycle.relocate`
puts an order's past when its events are not in the partition, so a later event of
the order is judged newer and by the status rule alone.

Records go out as whole record batches per partition (``create_batch``/``send_batch``):
no future per record, uncompressed like the connector's producer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from bench.workload import KINDS, Order, iter_orders
from connector.domain.lifecycle import Mark, OrderState, OrderStatus, begin, confirm, encode_state

__all__ = [
    "FillReport",
    "completed_state",
    "fill_changelog",
    "order_history",
    "partition_of",
    "table_records",
]

# The sequences of an order's three events: just below the partition's first offset.
_SEQS = (-3, -2, -1)
_STATUS = {"opened": OrderStatus.OPEN, "progress": OrderStatus.OPEN}
_BATCH_BYTES = 1024 * 1024
_IN_FLIGHT = 16


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the default (Java-compatible) partitioner gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def order_history(order: Order, occurred_at: float) -> list[OrderState]:
    """Every state the processor writes for the order's three events, in order.

    Two writes per event: the intent before the call (:func:`begin`, written durably)
    and the confirmation after it (:func:`confirm`, written behind). The last one is the
    order's state: COMPLETED.
    """
    states: list[OrderState] = []
    state: OrderState | None = None
    for kind, seq in zip(KINDS, _SEQS, strict=True):
        mark = Mark(f"{order.order_id}-{kind}", seq, _STATUS.get(kind, OrderStatus.COMPLETED))
        state = begin(state, mark, occurred_at=occurred_at)
        states.append(state)
        state = confirm(state, mark)
        states.append(state)
    return states


def completed_state(order: Order, occurred_at: float) -> OrderState:
    """The state the processor leaves once the order's three events were delivered."""
    return order_history(order, occurred_at)[-1]


def table_records(
    run_id: str, orders: int, partitions: int, *, history: bool = False
) -> Iterator[tuple[int, bytes, bytes]]:
    """``(partition, key, value)`` of the orders' changelog records, order by order.

    One record per order (its final state: the changelog once compacted), or with
    ``history`` all six the connector writes (the changelog before compaction). The
    states of every order differ only in the order id inside their event ids, so they
    are encoded once for the first order and the id replaced (the same bytes as
    encoding each one: tests/bench/test_changelog_fill.py).
    """
    occurred_at = time.time() - 3600.0
    templates: list[bytes] = []
    template_id = b""
    for order in iter_orders(run_id, orders):
        if not templates:
            states = order_history(order, occurred_at)
            templates = [encode_state(s) for s in (states if history else states[-1:])]
            template_id = f'"{order.order_id}-'.encode()
        own_id = f'"{order.order_id}-'.encode()
        partition = partition_of(order.key, partitions)
        for template in templates:
            yield partition, order.key, template.replace(template_id, own_id)


@dataclass(frozen=True)
class FillReport:
    records: int
    payload_bytes: int  # keys + values
    seconds: float

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


async def fill_changelog(
    bootstrap: str, topic: str, records: Iterator[tuple[int, bytes, bytes]]
) -> FillReport:
    """Produce ``records`` to ``topic`` in whole batches per partition; acks from the leader."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        max_batch_size=_BATCH_BYTES,
        max_request_size=4 * _BATCH_BYTES,
        linger_ms=0,
    )
    await producer.start()
    started = time.monotonic()
    count = size = 0
    open_batches: dict[int, object] = {}
    in_flight: list[asyncio.Future[object]] = []

    async def ship(partition: int) -> None:
        batch = open_batches.pop(partition)
        in_flight.append(await producer.send_batch(batch, topic, partition=partition))
        if len(in_flight) >= _IN_FLIGHT:
            await asyncio.gather(*in_flight)
            in_flight.clear()

    try:
        for partition, key, value in records:
            batch = open_batches.get(partition)
            if batch is None:
                batch = open_batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # type: ignore[attr-defined]
                await ship(partition)
                batch = open_batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            count += 1
            size += len(key) + len(value)
        for partition in list(open_batches):
            await ship(partition)
        await asyncio.gather(*in_flight)
    finally:
        await producer.stop()
    return FillReport(count, size, time.monotonic() - started)
