"""Reading the audit and dead-letter topics: filters, a readable table, replay.

Used by ``connector audit tail``, ``connector dlq list|replay`` and the demo.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from connector.audit import DeadLetter
from connector.kafka_clients import consumer, producer
from connector.settings import Settings

__all__ = [
    "AuditFilter",
    "format_header",
    "format_row",
    "read_topic",
    "replay_dead_letters",
]


@dataclass(frozen=True)
class AuditFilter:
    order: str | None = None  # substring of the order key
    vendor: str | None = None
    outcome: str | None = None
    terminal_only: bool = False

    def __call__(self, record: dict[str, Any]) -> bool:
        if self.order and self.order not in (record.get("order_key") or ""):
            return False
        if self.vendor and record.get("vendor") != self.vendor:
            return False
        if self.outcome and record.get("outcome") != self.outcome:
            return False
        return not (self.terminal_only and not record.get("terminal"))


_COLUMNS = (
    ("time", 12),
    ("worker", 8),
    ("order", 34),
    ("event", 16),
    ("outcome", 13),
    ("http", 4),
    ("try", 3),
)


def format_header() -> str:
    head = " ".join(f"{name:<{width}}" for name, width in _COLUMNS) + " detail"
    return head + "\n" + "-" * len(head)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_row(record: dict[str, Any]) -> str:
    """One audit record as one readable line."""
    stamp = str(record.get("time", ""))[11:23]
    detail = record.get("reason") or ""
    if record.get("vendor_code"):
        detail = f"[{record['vendor_code']}] {detail}"
    if record.get("warnings"):
        detail += " warnings: " + "; ".join(record["warnings"])
    cells = (
        stamp,
        record.get("worker_id") or "",
        record.get("order_key") or "-",
        (record.get("event_type") or "-").removeprefix("order."),
        record.get("outcome", ""),
        str(record.get("http_status") or ""),
        str(record.get("attempt") or ""),
    )
    line = " ".join(
        f"{_clip(cell, width):<{width}}" for cell, (_, width) in zip(cells, _COLUMNS, strict=True)
    )
    return f"{line} {detail}".rstrip()


async def read_topic(
    settings: Settings,
    topic: str,
    *,
    follow: bool,
    stop: Callable[[], bool] | None = None,
) -> AsyncIterator[tuple[bytes | None, dict[str, Any]]]:
    """JSON records of a topic from its beginning; with ``follow``, keep waiting for more."""
    reader = consumer(
        settings, topic, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await reader.start()
    try:
        while True:
            batch = await reader.getmany(timeout_ms=250)
            for messages in batch.values():
                for message in messages:
                    try:
                        yield message.key, json.loads(message.value)
                    except ValueError:
                        continue
            if stop is not None and stop():
                return
            if not follow and not batch and await _at_end(reader):
                return
    finally:
        await reader.stop()


async def _at_end(reader: Any) -> bool:
    assigned: set[TopicPartition] = reader.assignment()
    if not assigned:
        return False
    ends = await reader.end_offsets(list(assigned))
    for tp in assigned:
        if await reader.position(tp) < ends[tp]:
            return False
    return True


async def replay_dead_letters(
    settings: Settings,
    select: Callable[[DeadLetter], bool],
    *,
    dry_run: bool = False,
    progress: Callable[[int, DeadLetter], None] | None = None,
) -> int:
    """Publish the originals of the selected dead letters to the events topic again.

    The original key and bytes are published unchanged, so the event keeps its
    id: the lifecycle guard recognises a tried-but-undelivered event and
    delivers it unless a newer event of its order superseded it, and a
    delivered one is reported as a duplicate. Each goes back to the partition
    it came from: the order's state lives there, whatever partitioner the
    original producer used.
    """
    letters: list[DeadLetter] = []
    async for _, document in read_topic(settings, settings.topics.dead_letter, follow=False):
        letter = DeadLetter.model_validate(document)
        if select(letter):
            letters.append(letter)
    if dry_run or not letters:
        return len(letters)
    writer = producer(settings)
    await writer.start()
    try:
        for n, letter in enumerate(letters, 1):
            key, value = letter.original()
            partition = letter.source.partition if letter.source is not None else None
            await writer.send_and_wait(settings.topics.events, value, key=key, partition=partition)
            if progress is not None:
                progress(n, letter)
    finally:
        await writer.stop()
    return len(letters)
