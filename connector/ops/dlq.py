"""Dead letters an operator can work with: list, filter, replay, and remember the replay.

The dead-letter topic holds two kinds of records (:mod:`connector.domain.audit`): letters,
and :class:`~connector.domain.audit.ReplayMarker` records that ``connector dlq replay``
writes next to a letter once the broker has its replayed original. A letter with
a marker is *replayed*, one without is *open*: ``connector dlq list`` shows which,
and a replay skips replayed letters unless asked (``--include-replayed``). The
markers live on the dead-letter topic itself, in the letter's partition, so they
share its retention and come after it in offset order; no other topic to create.

A replay publishes the original key, bytes and headers unchanged, to the partition
the record was first read from (the order's state lives there, whatever partitioner
the original producer used). Some codes cannot succeed when the same bytes are read
by the same connector again (:data:`NOT_REPLAYABLE`): they are refused unless
``--force`` (after upgrading the connector, or when the cause was fixed elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from connector.domain.audit import DeadLetter, ReplayMarker, SourceRef
from connector.infra.kafka_clients import producer
from connector.ops.audit_view import (
    as_json,
    is_order_key,
    parse_since,
    read_records,
    show_key,
    vendor_of,
)
from connector.settings import Settings
from connector.vendors import registry as vendor_registry

__all__ = [
    "NOT_REPLAYABLE",
    "Letter",
    "LetterFilter",
    "ReplayPlan",
    "add_dlq_arguments",
    "dlq_command",
    "plan_replay",
    "read_letters",
    "replay",
    "target_of",
]

logger = logging.getLogger(__name__)

# The same bytes through the same connector end the same way: the record is unreadable
# (not_json, not_utf8, not_object, too_deep, too_large, empty), breaks the event schema
# or a vendor's contract (schema, unknown_type, contract_violation), is keyed wrongly
# (key_mismatch, key_missing), or is of a schema version this connector cannot read
# (unsupported_version: replay it with --force after upgrading).
NOT_REPLAYABLE = frozenset(
    {
        "empty",
        "not_utf8",
        "not_json",
        "not_object",
        "too_deep",
        "too_large",
        "unknown_type",
        "schema",
        "key_missing",
        "key_mismatch",
        "contract_violation",
        "unsupported_version",
    }
)


def target_of(order_key: str | None) -> str | None:
    """The target an order key belongs to, named as ``connector target`` names it
    (the registry's key forms): ``kombo|<integration_id>`` (orders and package lists),
    ``comeet``, …"""
    if not order_key:
        return None
    return vendor_registry.limit_key_of(order_key)


@dataclass
class Letter:
    """One dead letter, where it sits on the dead-letter topic, and its replays."""

    letter: DeadLetter
    position: SourceRef
    replays: list[ReplayMarker] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The order key; for an unreadable event, its Kafka key (what the producer meant)."""
        if self.letter.order_key:
            return self.letter.order_key
        raw, _ = self.letter.original()
        return "" if raw is None else raw.decode("utf-8", "replace")

    @property
    def status(self) -> Literal["open", "replayed"]:
        return "replayed" if self.replays else "open"

    @property
    def replayable(self) -> bool:
        return self.letter.code not in NOT_REPLAYABLE

    def to_json(self) -> dict[str, Any]:
        return {
            **self.letter.model_dump(mode="json"),
            "status": self.status,
            "position": self.position.model_dump(mode="json"),
            "replays": [m.model_dump(mode="json") for m in self.replays],
        }


@dataclass(frozen=True)
class LetterFilter:
    code: str | None = None
    order: str | None = None  # a full order key (exact), or a substring of one
    event_id: str | None = None
    vendor: str | None = None
    target: str | None = None  # kombo|<integration_id>, or comeet
    since: datetime | None = None  # dead-lettered at or after
    until: datetime | None = None  # dead-lettered before
    status: Literal["open", "replayed"] | None = None

    def __call__(self, entry: Letter) -> bool:
        letter = entry.letter
        key = entry.key
        if self.code is not None and letter.code != self.code:
            return False
        if self.order is not None:
            exact = is_order_key(self.order)
            if (key != self.order) if exact else (self.order not in key):
                return False
        if self.event_id is not None and letter.event_id != self.event_id:
            return False
        if self.vendor is not None and vendor_of(key) != self.vendor:
            return False
        if self.target is not None and target_of(key) != self.target:
            return False
        if self.since is not None and letter.time < self.since:
            return False
        if self.until is not None and letter.time >= self.until:
            return False
        return self.status is None or entry.status == self.status


async def read_letters(settings: Settings) -> list[Letter]:
    """Every letter on the dead-letter topic with its replay markers, in topic order."""
    topic = settings.topics.dead_letter
    letters: dict[tuple[int, int], Letter] = {}
    markers: list[ReplayMarker] = []
    async for message in read_records(settings, topic):
        document = as_json(message)
        if document is None:
            logger.warning("%s[%s]@%s is not JSON", topic, message.partition, message.offset)
            continue
        try:
            if document.get("kind") == "replayed":
                markers.append(ReplayMarker.model_validate(document))
            else:
                position = SourceRef(
                    topic=topic, partition=message.partition, offset=message.offset
                )
                letters[(message.partition, message.offset)] = Letter(
                    DeadLetter.model_validate(document), position
                )
        except ValidationError as exc:
            logger.warning(
                "%s[%s]@%s unreadable: %s", topic, message.partition, message.offset, exc
            )
    for marker in markers:
        entry = letters.get((marker.letter.partition, marker.letter.offset))
        if entry is not None:
            entry.replays.append(marker)
    return list(letters.values())


@dataclass
class ReplayPlan:
    """What a replay will do: the letters it sends, and the ones it refuses or skips."""

    send: list[Letter] = field(default_factory=list)
    refused: list[Letter] = field(default_factory=list)  # codes that cannot succeed again
    already: list[Letter] = field(default_factory=list)  # replayed before
    unreplayable: list[Letter] = field(default_factory=list)  # no original value kept

    def refused_codes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.refused:
            counts[entry.letter.code] = counts.get(entry.letter.code, 0) + 1
        return dict(sorted(counts.items()))


def plan_replay(
    letters: list[Letter], select: Callable[[Letter], bool], *, force: bool, again: bool
) -> ReplayPlan:
    plan = ReplayPlan()
    for entry in letters:
        if not select(entry):
            continue
        if entry.letter.original_value_b64 is None:
            plan.unreplayable.append(entry)
        elif entry.replays and not again:
            plan.already.append(entry)
        elif not entry.replayable and not force:
            plan.refused.append(entry)
        else:
            plan.send.append(entry)
    return plan


def _operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def replay(
    settings: Settings,
    plan: ReplayPlan,
    *,
    progress: Callable[[int, Letter, SourceRef], None] | None = None,
) -> int:
    """Publish each planned letter's original again, then its marker; returns the count.

    The original goes first and is awaited: a marker never claims a replay the broker
    does not have. A crash between the two leaves the letter open, and replaying it
    again is harmless (the lifecycle guard reports a delivered event as a duplicate).
    """
    if not plan.send:
        return 0
    writer = producer(settings)
    await writer.start()
    by = _operator()
    try:
        for n, entry in enumerate(plan.send, 1):
            letter = entry.letter
            key, value = letter.original()
            partition = letter.source.partition if letter.source is not None else None
            sent = await writer.send_and_wait(
                settings.topics.events,
                value,
                key=key,
                partition=partition,
                headers=[h.pair() for h in letter.headers] or None,
            )
            to = SourceRef(topic=sent.topic, partition=sent.partition, offset=sent.offset)
            marker = ReplayMarker(
                by=by,
                letter=entry.position,
                replayed_to=to,
                code=letter.code,
                event_id=letter.event_id,
                order_key=letter.order_key,
                forced=not entry.replayable,
            )
            await writer.send_and_wait(
                entry.position.topic,
                marker.model_dump_json().encode(),
                key=key,
                partition=entry.position.partition,
            )
            entry.replays.append(marker)
            if progress is not None:
                progress(n, entry, to)
    finally:
        await writer.stop()
    return len(plan.send)


# -- connector dlq ----------------------------------------------------------------------------


def add_dlq_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "replay"])
    parser.add_argument("--code", help="e.g. retries_exhausted, permanent, schema")
    parser.add_argument("--order", metavar="KEY", help="a whole order key, or a part of keys")
    parser.add_argument("--event-id")
    parser.add_argument("--vendor", choices=vendor_registry.names())
    parser.add_argument("--target", help=" or ".join(vendor_registry.limit_key_forms()))
    parser.add_argument(
        "--since", metavar="WHEN", help="dead-lettered at or after: 2h, 1d, or an ISO 8601 time"
    )
    parser.add_argument(
        "--until", metavar="WHEN", help="dead-lettered before: 2h, 1d, or an ISO 8601 time"
    )
    parser.add_argument("--status", choices=["open", "replayed"], help="list: only these")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replay: also codes that cannot succeed again as they are ("
        + ", ".join(sorted(NOT_REPLAYABLE))
        + "), e.g. after upgrading the connector",
    )
    parser.add_argument(
        "--include-replayed", action="store_true", help="replay: also letters replayed before"
    )
    parser.add_argument("--dry-run", action="store_true", help="replay: say what, send nothing")
    parser.add_argument("--json", action="store_true")


def _row(entry: Letter) -> str:
    letter = entry.letter
    line = (
        f"{letter.time:%Y-%m-%d %H:%M:%S} {entry.status:<8} {letter.code:<19} "
        f"{show_key(entry.key or '-', 40):<40} {letter.event_id or '-':<24} "
        f"{letter.reason}"
    )
    if entry.replays:
        last = entry.replays[-1]
        to = last.replayed_to
        line += (
            f"  [replayed {last.time:%Y-%m-%d %H:%M:%S} by {last.by} to "
            f"{to.topic}[{to.partition}]@{to.offset}"
            + (f", {len(entry.replays)} times" if len(entry.replays) > 1 else "")
            + "]"
        )
    return line


def dlq_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since) if args.since else None
        until = parse_since(args.until) if args.until else None
    except ValueError as exc:
        print(f"connector: --since/--until: {exc}", file=sys.stderr)
        return 2
    select = LetterFilter(
        code=args.code,
        order=args.order,
        event_id=args.event_id,
        vendor=args.vendor,
        target=args.target,
        since=since,
        until=until,
        status=args.status,
    )
    letters = asyncio.run(read_letters(settings))
    if args.action == "list":
        shown = [entry for entry in letters if select(entry)]
        for entry in shown:
            print(json.dumps(entry.to_json(), ensure_ascii=False) if args.json else _row(entry))
        replayed = sum(1 for entry in shown if entry.replays)
        print(
            f"{len(shown)} dead letters ({len(shown) - replayed} open, {replayed} replayed)",
            file=sys.stderr,
        )
        return 0
    plan = plan_replay(letters, select, force=args.force, again=args.include_replayed)
    if plan.refused:
        codes = ", ".join(f"{code}: {n}" for code, n in plan.refused_codes().items())
        print(
            f"refused {len(plan.refused)} dead letters whose code cannot succeed again as they "
            f"are ({codes}); --force replays them anyway (e.g. after upgrading the connector)",
            file=sys.stderr,
        )
    if plan.already:
        print(
            f"skipped {len(plan.already)} dead letters replayed before "
            "(--include-replayed to replay them again)",
            file=sys.stderr,
        )
    if plan.unreplayable:
        print(
            f"skipped {len(plan.unreplayable)} dead letters without an original value",
            file=sys.stderr,
        )
    # With --json, stdout holds only JSON lines (one per letter); the counts go to stderr.
    summary = sys.stderr if args.json else sys.stdout
    if args.dry_run:
        for entry in plan.send:
            if args.json:
                print(json.dumps(entry.to_json(), ensure_ascii=False))
            else:
                print(f"would replay: {_row(entry)}")
        print(f"would replay {len(plan.send)} dead letters", file=summary)
        return 2 if plan.refused and not plan.send else 0

    def progress(n: int, entry: Letter, to: SourceRef) -> None:
        letter = entry.letter
        if args.json:
            done = {**entry.to_json(), "replayed_to": to.model_dump(mode="json")}
            print(json.dumps(done, ensure_ascii=False), flush=True)
            return
        print(
            f"replayed {n}: {letter.order_key or '-'} {letter.event_id or '-'} "
            f"({letter.code}) -> {to.topic}[{to.partition}]@{to.offset}",
            flush=True,
        )

    count = asyncio.run(replay(settings, plan, progress=progress))
    print(f"replayed {count} dead letters", file=summary)
    return 2 if plan.refused and not count else 0
