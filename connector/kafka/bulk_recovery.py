"""Table recovery in bulk: the active changelog partitions read straight into RocksDB.

Faust reads a recovering table's changelog through its stream machinery: every record
becomes a Faust event, goes through the conductor and the changelog queue, and
``Recovery._slurp_changelogs`` takes it with one ``asyncio.wait_for`` per record and
recomputes what is left over every partition after each one. Measured with
``python -m bench.rebuild``: 1M orders took 94 s (77 s of CPU, ~80 µs per record) on the
shared 2-core machine, so a worker taking them over without a standby sent nothing for
a minute and a half; read here, 8 s (5 s of CPU).

:func:`bulk_load` does the reading of the active partitions in one step instead: a
dedicated consumer (no group, the worker's isolation level) assigned to them reads from
where the table's store stands up to the highwater Faust measured for this round, and
each fetch goes to the store as Faust applies a changelog batch itself
(``Collection.apply_changelog_batch``: one RocksDB ``WriteBatch`` per partition, then the
partition's persisted offset). Then the round's offsets say the partitions are read, so
Faust's own round finds nothing left to recover and resumes.

:class:`~connector.kafka.recovery.ConnectorRecovery` calls it from the round's seek of
the active partitions, so Faust's guarantees hold unchanged around it:

* it runs inside the round's ``_wait`` step: a rebalance (``signal_recovery_start``) or
  the step's timeout cancels it between two fetches; whatever was written is consistent
  (records are applied in offset order, each batch before its offset is recorded), and
  the next round starts from the persisted offsets (a long load spans rounds, each one
  resuming where the last stopped);
* records past the measured highwater are left to Faust's stream, as before;
* only for RocksDB stores (the production store) and when the app provides a reader;
  otherwise (the in-memory store of the tests, a table with an ``on_changelog_event``
  callback, which this path would not call) Faust reads as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP

__all__ = ["ChangelogRecord", "bulk_load", "bulk_loadable"]

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_MS = 500
# Records per fetch handed to the store: one WriteBatch per partition each. Larger
# batches bought no speed and held more records (and RSS) at once.
MAX_RECORDS = 2_000


class ChangelogRecord:
    """One changelog record as ``Store.apply_changelog_batch`` reads an event: ``.message``."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, tp: TP, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.tp = tp
        self.partition = tp.partition
        self.offset = offset
        self.key = key
        self.value = value

    @property
    def message(self) -> ChangelogRecord:
        return self


def bulk_loadable(table: Any) -> bool:
    """Whether ``table``'s recovery may skip Faust's per-record path."""
    return isinstance(table.data, RocksDBStore) and table._on_changelog_event is None


async def bulk_load(
    reader: Callable[[], Any],
    tables: dict[TP, Any],
    offsets: dict[TP, int],
    highwaters: dict[TP, int],
) -> int:
    """Apply each partition's records after ``offsets[tp]`` up to ``highwaters[tp]``.

    ``tables`` maps each active changelog partition to its table; ``offsets`` (Faust's
    active offsets: the last offset applied, -1 for none) are advanced to the highwater
    of every partition read to its end. Returns the number of records applied.
    """
    start = {
        tp: _last_applied(offsets, tp)
        for tp, table in tables.items()
        if highwaters.get(tp, -1) > _last_applied(offsets, tp) and bulk_loadable(table)
    }
    if not start:
        return 0
    began = time.monotonic()
    consumer = reader()
    await consumer.start()
    applied = 0
    try:
        wanted = {TopicPartition(tp.topic, tp.partition): tp for tp in start}
        consumer.assign(list(wanted))
        for ktp, tp in wanted.items():
            consumer.seek(ktp, start[tp] + 1)
        while wanted:
            fetched = await consumer.getmany(
                *wanted, timeout_ms=FETCH_TIMEOUT_MS, max_records=MAX_RECORDS
            )
            for ktp, records in fetched.items():
                owner = wanted.get(ktp)
                if owner is None:
                    continue
                batch = [
                    ChangelogRecord(owner, r.offset, r.key, r.value)
                    for r in records
                    if r.offset <= highwaters[owner]
                ]
                if batch:
                    tables[owner].apply_changelog_batch(batch)
                    offsets[owner] = batch[-1].offset
                    applied += len(batch)
            for ktp, tp in list(wanted.items()):
                if await consumer.position(ktp) > highwaters[tp]:
                    # Read to the highwater (offsets past the last record are gaps:
                    # compacted records or transaction markers).
                    offsets[tp] = highwaters[tp]
                    del wanted[ktp]
                    consumer.pause(ktp)
    except asyncio.CancelledError:
        # A rebalance or the step's timeout: what was applied stays (with its offsets).
        logger.info(
            "table recovery in bulk interrupted after %d records in %.1f s; the next "
            "round resumes from there",
            applied,
            time.monotonic() - began,
        )
        raise
    finally:
        await consumer.stop()
    seconds = time.monotonic() - began
    logger.info(
        "table recovery: %d changelog records of %d partitions applied in bulk in %.1f s (%.0f/s)",
        applied,
        len(start),
        seconds,
        applied / seconds if seconds > 0 else 0.0,
    )
    return applied


def _last_applied(offsets: dict[TP, int], tp: TP) -> int:
    offset = offsets.get(tp)
    return -1 if offset is None else max(offset, -1)
