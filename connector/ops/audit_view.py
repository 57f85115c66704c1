"""Reading the audit and dead-letter topics: positions, filters, a readable table.

Used by ``connector audit tail``, ``connector order show`` (:mod:`connector.ops.order_view`),
``connector dlq list|replay`` (:mod:`connector.ops.dlq`) and the demo.

Where reading starts matters on a topic that holds weeks of records: ``audit tail
--follow`` starts at the end, ``--since`` looks the start up per partition with
``offsets_for_times``, and anything about one order reads only the partition its key
hashes to. The connector writes audit records through Faust's producer with the
order key as the record key and no explicit partition, so the partition is Kafka's
default partitioner (murmur2, as in the Java client) over the topic's partition
count: :func:`partition_for_key`.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import logging
import re
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from connector.domain.audit import Outcome
from connector.infra.kafka_clients import consumer
from connector.settings import Settings
from connector.vendors import registry as vendor_registry

__all__ = [
    "OUTCOMES",
    "AuditFilter",
    "Start",
    "add_tail_arguments",
    "as_json",
    "detail_of",
    "format_header",
    "format_row",
    "is_order_key",
    "parse_since",
    "partition_count",
    "partition_for_key",
    "read_records",
    "read_topic",
    "show_key",
    "tail_command",
    "terminal_width",
    "vendor_of",
]

logger = logging.getLogger(__name__)

OUTCOMES = tuple(o.value for o in Outcome)

# Where to start reading: the first record, the end (only what comes next), the first
# record at or after a time, or (a number N) the last N records of each partition.
Start = Literal["beginning", "end"] | datetime | int


def partition_for_key(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, Java client and aiokafka)
    gives a key; the audit topic's partition of an order key."""
    raw = key.encode() if isinstance(key, str) else key
    return (murmur2(raw) & 0x7FFFFFFF) % partitions


def vendor_of(order_key: str | None) -> str | None:
    """The vendor of an order key, by the registry (``kombo-packages|…`` is Kombo)."""
    if not order_key:
        return None
    return vendor_registry.vendor_of(order_key)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``90s``, ``15m``, ``2h``, ``1d``, ``1w``)
    or an ISO 8601 time (a date, or a date and time; no zone means UTC)."""
    current = now or datetime.now(UTC)
    match = _DURATION.match(text.strip().lower())
    if match is not None:
        return current - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (90s, 15m, 2h, 1d, 1w) nor an ISO 8601 time "
            "(2026-12-02, 2026-12-02T14:00, 2026-12-02T14:00:00+01:00)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AuditFilter:
    order: str | None = None  # a full order key (exact), or a substring of one
    vendor: str | None = None
    outcome: str | None = None
    terminal_only: bool = False

    def __call__(self, record: dict[str, Any]) -> bool:
        key = record.get("order_key") or ""
        if self.order and not (
            key == self.order if is_order_key(self.order) else self.order in key
        ):
            return False
        if self.vendor and record.get("vendor") != self.vendor:
            return False
        if self.outcome and record.get("outcome") != self.outcome:
            return False
        return not (self.terminal_only and not record.get("terminal"))


def is_order_key(text: str) -> bool:
    """A whole order key (``kombo|<integration>|<order>``, ``comeet|<id>``, …)."""
    prefixes = vendor_registry.order_key_prefixes()
    return text.startswith(prefixes) and len(text) > text.index("|") + 1


# -- the table ------------------------------------------------------------------------------

_MIN_ORDER_W = 20
_MIN_DETAIL_W = 24
_UNLIMITED = 1_000_000


def terminal_width() -> int | None:
    """The terminal's width (``COLUMNS`` first), or None when output is not a terminal."""
    columns = shutil.get_terminal_size(fallback=(0, 0)).columns
    return columns or None


@dataclass(frozen=True)
class _Layout:
    """Column widths for a terminal: wide ones get milliseconds; narrow ones (under 120
    columns) trade those for the order column, and put the detail on its own line when
    no room is left. The worker column holds 12 characters (``worker-12``,
    ``connector-3``) from 90 columns on, 6 below; a longer id keeps its end."""

    time: int
    worker: int
    order: int
    event: int = 9  # completed, cancelled, progress, packages…
    outcome: int = 13  # dead_lettered
    http: int = 4
    attempt: int = 3
    detail: int = 0  # 0: on a line of its own
    total: int = 160

    @classmethod
    def for_width(cls, width: int | None) -> _Layout:
        if width is None:
            width = terminal_width()
        if width is None:
            # Not a terminal (a pipe, a log file): wide columns, and the detail whole.
            return cls(time=23, worker=12, order=36, detail=_UNLIMITED, total=_UNLIMITED)
        total = width
        wide = total >= 120
        time, worker, http = (23, 12, 4) if wide else (19, 12 if total >= 90 else 6, 3)
        fixed = time + worker + 9 + 13 + http + 3 + 7  # 7 gaps between 8 columns
        room = total - fixed
        order = max(_MIN_ORDER_W, min(60, room * 2 // 5 if wide else room - _MIN_DETAIL_W))
        detail = room - order - 1
        return cls(
            time=time,
            worker=worker,
            order=order,
            http=http,
            detail=detail if detail >= _MIN_DETAIL_W else 0,
            total=total,
        )

    def columns(self) -> tuple[tuple[str, int], ...]:
        return (
            ("time", self.time),
            ("worker", self.worker),
            ("order", self.order),
            ("event", self.event),
            ("outcome", self.outcome),
            ("http", self.http),
            ("try", self.attempt),
        )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _clip_left(text: str, width: int) -> str:
    """Worker ids differ at their end (worker-1, connector-0): keep that part."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


def show_key(key: str, width: int) -> str:
    """An order key in ``width`` columns without ever cutting the order id.

    Only the middle of a key is elided (a Kombo key's integration id, or whatever a
    vendor's key form holds between its head and its last field);
    a key whose order id alone is wider than the column is shown whole, and the
    row grows: an operator must be able to copy the id from the table.
    """
    if len(key) <= width:
        return key
    split = vendor_registry.split_key(key)
    if split is not None:
        vendor, integration, order = split
        room = width - len(vendor) - len(order) - 2
        if room >= 3:
            head = (room - 1) // 2
            tail = room - 1 - head
            middle = integration[:head] + "…" + (integration[-tail:] if tail else "")
            return f"{vendor}|{middle}|{order}"
        return f"{vendor}|…|{order}"
    return key


def format_header(width: int | None = None) -> str:
    layout = _Layout.for_width(width)
    head = " ".join(f"{name:<{w}}" for name, w in layout.columns())
    head = head + " detail" if layout.detail else head.rstrip()
    if layout.detail >= _UNLIMITED:
        return head + "\n" + "-" * len(head)
    return head + "\n" + "-" * min(layout.total, len(head) + max(0, layout.detail - 6))


def _stamp(value: Any, width: int) -> str:
    text = str(value or "")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return _clip(text, width)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:width]


def detail_of(record: dict[str, Any]) -> str:
    detail = record.get("reason") or ""
    code = record.get("vendor_code")
    if code and not detail.startswith(code):  # Kombo's reasons often start with it
        detail = f"[{code}] {detail}"
    if record.get("warnings"):
        detail += " warnings: " + "; ".join(record["warnings"])
    if record.get("unknown_fields"):
        detail += " unknown fields: " + ", ".join(record["unknown_fields"])
    return detail.strip()


def format_row(record: dict[str, Any], width: int | None = None) -> str:
    """One audit record as one readable line (two on a narrow terminal); times in UTC."""
    layout = _Layout.for_width(width)
    key = record.get("order_key") or "-"
    cells = (
        _stamp(record.get("time"), layout.time),
        _clip_left(record.get("worker_id") or "", layout.worker),
        show_key(key, layout.order),
        _clip((record.get("event_type") or "-").removeprefix("order."), layout.event),
        _clip(record.get("outcome", ""), layout.outcome),
        _clip(str(record.get("http_status") or ""), layout.http),
        _clip(str(record.get("attempt") or ""), layout.attempt),
    )
    widths = [w for _, w in layout.columns()]
    line = " ".join(f"{cell:<{w}}" for cell, w in zip(cells, widths, strict=True))
    detail = detail_of(record)
    # A key wider than its column (a long order id, never cut) takes from the detail.
    room = layout.detail - max(0, len(cells[2]) - layout.order)
    if layout.detail and room >= _MIN_DETAIL_W // 2:
        return f"{line} {_clip(detail, room)}".rstrip()
    line = line.rstrip()
    return f"{line}\n    {_clip(detail, layout.total - 4)}" if detail else line


# -- reading --------------------------------------------------------------------------------


async def partition_count(reader: AIOKafkaConsumer, topic: str) -> int:
    """The topic's partition count from fresh cluster metadata (0: no such topic).

    ``partitions_for_topic`` only knows topics the consumer already tracks, and an
    assigning reader tracks none yet; the metadata ``topics()`` fetches is not kept,
    so it is fetched here the same way and asked directly.
    """
    cluster = await reader._client.fetch_all_metadata()
    return len(cluster.partitions_for_topic(topic) or ())


async def _seek(
    reader: AIOKafkaConsumer, partitions: Sequence[TopicPartition], start: Start
) -> None:
    if start == "beginning":
        await reader.seek_to_beginning(*partitions)
    elif start == "end":
        await reader.seek_to_end(*partitions)
    elif isinstance(start, int):
        firsts = await reader.beginning_offsets(list(partitions))
        ends = await reader.end_offsets(list(partitions))
        for tp in partitions:
            reader.seek(tp, max(firsts[tp], ends[tp] - start))
    else:
        assert isinstance(start, datetime)
        wanted = int(start.timestamp() * 1000)
        found = await reader.offsets_for_times({tp: wanted for tp in partitions})
        ends = await reader.end_offsets(list(partitions))
        for tp in partitions:
            hit = found.get(tp)
            # No record at or after the time in this partition: only what comes next.
            reader.seek(tp, hit.offset if hit is not None else ends[tp])


async def read_records(
    settings: Settings,
    topic: str,
    *,
    partitions: Sequence[int] | None = None,
    key: str | None = None,
    start: Start = "beginning",
    follow: bool = False,
    stop: Callable[[], bool] | None = None,
    on_ready: Callable[[], None] | None = None,
    on_caught_up: Callable[[], None] | None = None,
) -> AsyncIterator[Any]:
    """The raw records (aiokafka ``ConsumerRecord``) of ``topic``, or of some of its
    partitions, from ``start``; without ``follow``, up to the end offsets as they were
    when reading began (a busy topic does not keep it reading forever). With ``key``,
    only the partition Kafka's default partitioner gives that key. ``on_ready`` is
    called once every partition's start position is fixed: a record published after
    it is read. ``on_caught_up`` is called once every record that was there when
    reading began has been yielded (then, without ``follow``, reading ends).

    Partitions are assigned, not subscribed: no consumer group, nothing committed.
    """
    reader = consumer(settings, enable_auto_commit=False, group_id=None)
    await reader.start()
    try:
        count = await partition_count(reader, topic)
        while count == 0 and follow and not (stop is not None and stop()):
            await asyncio.sleep(0.5)  # following a topic the first worker creates
            count = await partition_count(reader, topic)
        if count == 0:
            raise LookupError(f"topic {topic} does not exist")
        if key is not None:
            partitions = [partition_for_key(key, count)]
        chosen = [TopicPartition(topic, p) for p in (partitions or range(count)) if p < count]
        reader.assign(chosen)
        await _seek(reader, chosen, start)
        for tp in chosen:
            await reader.position(tp)  # resolves a pending seek to the end now
        ends = await reader.end_offsets(chosen)
        if on_ready is not None:
            on_ready()
        caught_up = False
        while True:
            batch = await reader.getmany(timeout_ms=250)
            for tp in sorted(batch, key=lambda t: t.partition):
                for message in batch[tp]:
                    if follow or message.offset < ends[tp]:
                        yield message
            if stop is not None and stop():
                return
            if not caught_up:
                positions = [await reader.position(tp) for tp in chosen]
                if all(pos >= ends[tp] for pos, tp in zip(positions, chosen, strict=True)):
                    caught_up = True
                    if on_caught_up is not None:
                        on_caught_up()
                    if not follow:
                        return
    finally:
        await reader.stop()


def as_json(message: Any) -> dict[str, Any] | None:
    """A record's JSON object value, or None (not JSON, or not an object)."""
    try:
        document = json.loads(message.value)
    except (TypeError, ValueError):
        return None
    return document if isinstance(document, dict) else None


async def read_topic(
    settings: Settings,
    topic: str,
    *,
    follow: bool,
    stop: Callable[[], bool] | None = None,
) -> AsyncIterator[tuple[bytes | None, dict[str, Any]]]:
    """JSON records of a whole topic from its beginning; with ``follow``, keep waiting."""
    async for message in read_records(settings, topic, follow=follow, stop=stop):
        document = as_json(message)
        if document is not None:
            yield message.key, document


# -- connector audit tail -------------------------------------------------------------------


def add_tail_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["tail"])
    parser.add_argument(
        "--order",
        metavar="KEY",
        help="one order: its whole key (only its partition is read), or a part of keys",
    )
    parser.add_argument("--vendor", choices=vendor_registry.names())
    parser.add_argument("--outcome", choices=OUTCOMES)
    parser.add_argument("--terminal", action="store_true", help="final outcomes only")
    parser.add_argument(
        "--follow", "-f", action="store_true", help="keep waiting for more (starts at the end)"
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest retained record"
    )
    start.add_argument(
        "--since",
        metavar="WHEN",
        help="start at a time: a duration back (90s, 15m, 2h, 1d) or an ISO 8601 time",
    )
    parser.add_argument(
        "--last",
        metavar="N",
        type=_positive,
        help="only the newest N records (with --follow: then what comes next)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON record per line")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return value


def tail_command(settings: Settings, args: argparse.Namespace) -> int:
    """``connector audit tail``. Without ``--follow`` it prints what is there and ends
    (from the beginning, or ``--since``); with it, it starts at the end."""
    start: Start
    if args.since:
        try:
            start = parse_since(args.since)
        except ValueError as exc:
            print(f"connector: --since: {exc}", file=sys.stderr)
            return 2
    elif args.from_beginning or (not args.follow and not args.last):
        start = "beginning"
    elif args.last and not (args.order or args.vendor or args.outcome or args.terminal):
        # Unfiltered, the newest N are among the last N of each partition: read no more.
        start = args.last
    elif args.last:
        start = "beginning"  # a filter may match only old records: read them all
    else:
        start = "end"
    exact = bool(args.order) and is_order_key(args.order)
    if args.order and not exact:
        print(
            f"--order {args.order!r} is not a whole order key "
            f"({', '.join(vendor_registry.order_key_forms())}): every partition is scanned for it",
            file=sys.stderr,
        )
    keep = AuditFilter(
        order=args.order, vendor=args.vendor, outcome=args.outcome, terminal_only=args.terminal
    )
    width = terminal_width()

    # --last: the newest N matching records, by the broker's timestamp (then partition and
    # offset), held until everything there was when reading began has been read.
    newest: list[tuple[int, int, int, str]] = []
    holding = [bool(args.last)]

    def show(record: dict[str, Any]) -> None:
        print(json.dumps(record) if args.json else format_row(record, width), flush=True)

    def release() -> None:
        holding[0] = False
        for *_, text in sorted(newest):
            show(json.loads(text))
        newest.clear()

    def ready() -> None:
        if args.follow:
            if args.last:
                since = f"the newest {args.last} records"
            else:
                since = "the end" if start == "end" else f"{args.since or 'the beginning'}"
            print(
                f"following from {since} (--since WHEN or --from-beginning for older records)",
                file=sys.stderr,
                flush=True,
            )

    async def tail() -> None:
        if not args.json:
            print(format_header(width), flush=True)
        async for message in read_records(
            settings,
            settings.topics.audit,
            key=args.order if exact else None,
            start=start,
            follow=args.follow,
            on_ready=ready,
            on_caught_up=release if args.last else None,
        ):
            record = as_json(message)
            if record is None or not keep(record):
                continue
            if holding[0]:
                entry = (message.timestamp, message.partition, message.offset, json.dumps(record))
                if len(newest) < args.last:
                    heapq.heappush(newest, entry)
                else:
                    heapq.heappushpop(newest, entry)
            else:
                show(record)

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        pass
    except LookupError as exc:
        print(f"connector: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0
