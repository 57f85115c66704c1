"""connector.kafka.bulk_recovery: the active changelog partitions read in bulk, on a broker.

The store ends as Faust's own recovery leaves it (last value per key, tombstones
delete, nothing past the measured highwater, nothing before the partition's start
offset re-applied), and :class:`~connector.kafka.recovery.ConnectorRecovery`'s seek of
the active partitions leaves nothing for Faust's per-record path to read.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from connector.infra.kafka_clients import changelog_reader
from connector.kafka.bulk_recovery import bulk_load, bulk_loadable
from connector.kafka.recovery import ConnectorTableManager
from connector.settings import Settings

pytestmark = pytest.mark.kafka


def _app(tmp_path: Path, bootstrap: str, store: str = "rocksdb://") -> faust.App:
    app = faust.App(
        "bulk-recovery-test",
        broker=f"kafka://{bootstrap}",
        store=store,
        datadir=str(tmp_path),
        autodiscover=False,
        web_enabled=False,
        TableManager=ConnectorTableManager,
        key_serializer="raw",
        value_serializer="raw",
        env={},
    )
    app.Table(
        "orders",
        partitions=2,
        key_type=bytes,
        value_type=bytes,
        use_partitioner=False,
    )
    return app


def _reader(bootstrap: str) -> Any:
    return functools.partial(changelog_reader, Settings(kafka={"bootstrap_servers": bootstrap}))


async def _produce(
    bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, key, value in records:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def _db_get(table: Any, partition: int, key: bytes) -> bytes | None:
    value: bytes | None = table.data._db_for_partition(partition).get(key)
    return value


async def test_the_store_ends_as_the_changelog_says(
    tmp_path: Path, kafka_bootstrap: str, create_topic: Any
) -> None:
    topic = await create_topic(partitions=2)
    await _produce(
        kafka_bootstrap,
        topic,
        [
            (0, b"k1", b"v1"),  # 0
            (0, b"k2", b"v2"),  # 1
            (0, b"k1", b"v1b"),  # 2
            (0, b"k2", None),  # 3: a tombstone
            (0, b"k3", b"v3"),  # 4: the highwater of this round
            (0, b"k4", b"late"),  # 5: written after the highwater was measured
            (1, b"a", b"old"),  # 0: already applied (the start offset)
            (1, b"b", b"b1"),  # 1
        ],
    )
    app = _app(tmp_path, kafka_bootstrap)
    table = next(iter(app.tables.values()))
    assert bulk_loadable(table)
    tp0, tp1 = TP(topic, 0), TP(topic, 1)
    table.data._db_for_partition(1).put(b"a", b"kept")  # the store's own newer value
    offsets = {tp0: -1, tp1: 0}
    highwaters = {tp0: 4, tp1: 1}

    applied = await bulk_load(
        _reader(kafka_bootstrap), {tp0: table, tp1: table}, offsets, highwaters
    )

    assert applied == 6
    assert offsets == {tp0: 4, tp1: 1}
    assert _db_get(table, 0, b"k1") == b"v1b"
    assert _db_get(table, 0, b"k2") is None
    assert _db_get(table, 0, b"k3") == b"v3"
    assert _db_get(table, 0, b"k4") is None
    assert _db_get(table, 1, b"a") == b"kept"
    assert _db_get(table, 1, b"b") == b"b1"
    assert table.data.persisted_offset(tp0) == 4
    assert table.data.persisted_offset(tp1) == 1


async def test_an_interrupted_load_keeps_what_it_applied_and_the_next_resumes(
    tmp_path: Path, kafka_bootstrap: str, create_topic: Any
) -> None:
    """A rebalance cancels the round's step: the next round starts from the store."""
    topic = await create_topic(partitions=1)
    await _produce(kafka_bootstrap, topic, [(0, f"k{i}".encode(), b"v") for i in range(5)])
    app = _app(tmp_path, kafka_bootstrap)
    table = next(iter(app.tables.values()))
    tp = TP(topic, 0)
    offsets = {tp: -1}
    # A highwater past the end: this load never finishes by itself.
    load = asyncio.ensure_future(
        bulk_load(_reader(kafka_bootstrap), {tp: table}, offsets, {tp: 99})
    )
    for _ in range(200):
        if offsets[tp] == 4:
            break
        await asyncio.sleep(0.05)
    load.cancel()
    with pytest.raises(asyncio.CancelledError):
        await load
    assert offsets[tp] == 4
    assert table.data.persisted_offset(tp) == 4
    await _produce(kafka_bootstrap, topic, [(0, b"k0", b"newer")])

    offsets = {tp: table.data.persisted_offset(tp)}
    assert await bulk_load(_reader(kafka_bootstrap), {tp: table}, offsets, {tp: 5}) == 1
    assert _db_get(table, 0, b"k0") == b"newer"


async def test_nothing_to_read_opens_no_consumer(tmp_path: Path, kafka_bootstrap: str) -> None:
    app = _app(tmp_path, kafka_bootstrap)
    table = next(iter(app.tables.values()))
    tp = TP("unused-changelog", 0)

    def reader() -> Any:
        raise AssertionError("no consumer needed")

    assert await bulk_load(reader, {tp: table}, {tp: 7}, {tp: 7}) == 0
    assert await bulk_load(reader, {tp: table}, {tp: -1}, {tp: -1}) == 0


def test_the_in_memory_store_keeps_faust_s_path(tmp_path: Path) -> None:
    app = _app(tmp_path, "127.0.0.1:9", store="memory://")
    assert not bulk_loadable(next(iter(app.tables.values())))


class SeekingConsumer:
    def __init__(self) -> None:
        self.sought: dict[TP, int] = {}

    async def seek_wait(self, offsets: dict[TP, int]) -> None:
        self.sought.update(offsets)


async def test_the_round_s_active_seek_leaves_nothing_for_faust_to_read(
    tmp_path: Path, kafka_bootstrap: str, create_topic: Any
) -> None:
    """Without the bulk load, Faust's round reads these records one by one (slowly)."""
    topic = await create_topic(partitions=2)
    await _produce(kafka_bootstrap, topic, [(0, b"k", b"v"), (0, b"k", b"w"), (1, b"j", b"x")])
    app = _app(tmp_path, kafka_bootstrap)
    app.changelog_reader = _reader(kafka_bootstrap)  # type: ignore[attr-defined]
    table = next(iter(app.tables.values()))
    recovery = app.tables.recovery  # type: ignore[attr-defined]
    tp0, tp1 = TP(topic, 0), TP(topic, 1)
    recovery.tp_to_table.update({tp0: table, tp1: table})
    recovery.active_highwaters.update({tp0: 1, tp1: 0})
    recovery.active_offsets.update({tp0: -1, tp1: -1})
    consumer = SeekingConsumer()

    await recovery._seek_offsets(consumer, {tp0, tp1}, recovery.active_offsets, "active")

    assert not recovery.need_recovery()
    assert consumer.sought == {tp0: 1, tp1: 0}
    assert _db_get(table, 0, b"k") == b"w"
    assert _db_get(table, 1, b"j") == b"x"
