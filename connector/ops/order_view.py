"""One order's story: ``connector order show KEY``.

Its current state comes from the order table's changelog topic
(``<app id>-orders-changelog``, :func:`connector.infra.topics.changelog_topic`), decoded
with :func:`connector.domain.lifecycle.decode_state`; its timeline is every audit record of
the order. Each is read from one partition only:

* the audit topic is keyed by the order key and written through Faust's producer
  with Kafka's default partitioner, so the order's audit partition is
  :func:`~connector.ops.audit_view.partition_for_key` of the key;
* the table does not use a partitioner: each order's changelog record goes to the
  partition its *events* come from (:mod:`connector.app`), which depends on the
  producer's partitioner. The audit records name that partition (``source``), so
  it is taken from them; an order without audit records falls back to Kafka's
  default partitioner over the events topic (what ``connector publish`` and Java
  producers use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from connector.domain.audit import TERMINAL_OUTCOMES, Outcome
from connector.domain.lifecycle import Mark, OrderState, decode_state
from connector.infra.kafka_clients import consumer
from connector.infra.topics import changelog_topic
from connector.ops.audit_view import (
    Start,
    as_json,
    format_header,
    format_row,
    is_order_key,
    parse_since,
    partition_count,
    partition_for_key,
    read_records,
    terminal_width,
)
from connector.settings import Settings
from connector.vendors import registry as vendor_registry

__all__ = [
    "OrderStory",
    "add_show_arguments",
    "format_story",
    "read_story",
    "show_command",
    "web_answer",
    "worker_answer",
]

logger = logging.getLogger(__name__)


@dataclass
class OrderStory:
    order_key: str
    state: OrderState | None = None
    state_found: bool = False  # a changelog record for the key was read
    changelog: dict[str, Any] = field(default_factory=dict)  # topic, partition, offset, via
    audit: dict[str, Any] = field(default_factory=dict)  # topic, partition
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        """Per event id, in first-seen order: type, outcome, attempts, errors."""
        by_id: dict[str, dict[str, Any]] = {}
        for record in self.timeline:
            event_id = record.get("event_id") or "-"
            entry = by_id.setdefault(
                event_id,
                {
                    "event_id": event_id,
                    "event_type": record.get("event_type"),
                    "outcome": None,
                    "attempts": 0,
                    "errors": [],
                    "parked": False,
                },
            )
            outcome = record.get("outcome")
            # Every failed call has its own record (a parked event's are not numbered,
            # and its delivery counts from 1 again), so calls are counted, not numbered.
            if outcome == Outcome.FAILED:
                entry["attempts"] += 1
                entry["errors"].append(_error(record))
            elif outcome == Outcome.DELIVERED:
                entry["attempts"] += 1
            elif outcome == Outcome.PARKED:
                entry["parked"] = True
            if record.get("terminal"):
                entry["outcome"] = outcome
                if outcome == Outcome.DEAD_LETTERED:
                    entry["errors"].append(f"dead-lettered: {_error(record)}")
        return list(by_id.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "order_key": self.order_key,
            "state": _state_json(self.state) if self.state_found else None,
            "changelog": self.changelog,
            "audit": self.audit,
            "events": self.events(),
            "timeline": self.timeline,
        }


def _error(record: dict[str, Any]) -> str:
    parts = []
    if record.get("http_status"):
        parts.append(f"HTTP {record['http_status']}")
    reason = str(record.get("reason") or "")
    code = record.get("vendor_code")
    if code and not reason.startswith(code):  # Kombo's reasons often start with it
        parts.append(f"[{code}]")
    if reason:
        parts.append(reason)
    return " ".join(parts) or str(record.get("outcome"))


def _state_json(state: OrderState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    doc = asdict(state)
    doc["status"] = state.status.value
    doc["ids"] = [
        {"event_id": event_id, "seq": seq, "delivered": done} for event_id, seq, done in state.ids
    ]
    return doc


async def _last_value(
    settings: Settings, topic: str, partition: int, key: bytes
) -> tuple[bool, bytes | None, int | None]:
    """The last record of ``key`` in one partition: (found, value, offset)."""
    found, value, offset = False, None, None
    async for message in read_records(settings, topic, partitions=[partition]):
        if message.key == key:
            found, value, offset = True, message.value, message.offset
    return found, value, offset


async def _partition_counts(settings: Settings, *topics: str) -> dict[str, int]:
    reader = consumer(settings, enable_auto_commit=False, group_id=None)
    await reader.start()
    try:
        return {topic: await partition_count(reader, topic) for topic in topics}
    finally:
        await reader.stop()


async def read_story(
    settings: Settings, order_key: str, *, since: datetime | None = None
) -> OrderStory:
    """The order's state and its audit records (from ``since``, or all retained ones)."""

    story = OrderStory(order_key)
    t = settings.topics
    changelog = changelog_topic(settings)
    counts = await _partition_counts(settings, t.audit, t.events, changelog)
    if counts[t.audit]:
        partition = partition_for_key(order_key, counts[t.audit])
        story.audit = {"topic": t.audit, "partition": partition}
        start: Start = since or "beginning"
        async for message in read_records(settings, t.audit, key=order_key, start=start):
            record = as_json(message)
            if record is not None and record.get("order_key") == order_key:
                story.timeline.append(record)
    # The changelog partition is the one the order's events were read from.
    sources = [
        r["source"]["partition"]
        for r in story.timeline
        if isinstance(r.get("source"), dict) and r["source"].get("topic") == t.events
    ]
    if sources:
        partition, via = sources[-1], "the input partition named by its audit records"
    elif counts[t.events]:
        partition = partition_for_key(order_key, counts[t.events])
        via = "Kafka's default partitioner over the events topic (no audit records)"
    else:
        return story
    story.changelog = {"topic": changelog, "partition": partition, "via": via}
    if counts[changelog] > partition:
        found, value, offset = await _last_value(settings, changelog, partition, order_key.encode())
        moved_to = partition_for_key(order_key, counts[t.events]) if counts[t.events] else None
        if found and value is None and moved_to is not None and moved_to != partition:
            # A tombstone where its last event was read: `connector topics migrate` moved
            # the state to the partition the default partitioner gives it now.
            found, value, offset = await _last_value(
                settings, changelog, moved_to, order_key.encode()
            )
            via = "moved by connector topics migrate: Kafka's default partitioner"
            story.changelog.update(partition=moved_to, via=via)
        story.state_found = found
        story.changelog["offset"] = offset
        if found:
            try:
                story.state = decode_state(value)
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("unreadable state for %s: %s", order_key, exc)
    return story


def _runs(errors: list[str]) -> list[str]:
    """Repeated errors once, with their count: a retried outage reads as one line."""
    out: list[tuple[str, int]] = []
    for error in errors:
        if out and out[-1][0] == error:
            out[-1] = (error, out[-1][1] + 1)
        else:
            out.append((error, 1))
    return [f"{error} ({n} times)" if n > 1 else error for error, n in out]


def _mark(mark: Mark | None) -> str:
    if mark is None:
        return "-"
    status = f" ({mark.status.value})" if mark.status is not None else ""
    return f"{mark.event_id}{status}"


def format_story(story: OrderStory, width: int | None = None) -> str:
    lines = [f"order    {story.order_key}"]
    state = story.state
    if not story.state_found:
        where = story.changelog.get("topic", "the changelog")
        lines.append(f"state    none in {where} (no event of this order reached a worker)")
    elif state is None:
        lines.append("state    deleted (a tombstone in the changelog)")
    else:
        lines.append(f"status   {state.status.value} (confirmed by the vendor)")
        lines.append(f"vendor has          {_mark(state.confirmed)}")
        maybe = [m for m in (state.pending, state.maybe) if m is not None]
        unconfirmed = ", ".join(_mark(m) for m in maybe) or "nothing"
        if state.uncertain:
            unconfirmed += " (an earlier send may have arrived)"
        lines.append(f"sent, unconfirmed   {unconfirmed}")
        parked = (
            f"yes: since input offset {state.parked}; later events of the order wait "
            "behind it in the parking topic"
            if state.parked is not None
            else "no"
        )
        lines.append(f"parked              {parked}")
        delivered = sum(1 for _, _, done in state.ids if done)
        lines.append(f"events remembered   {len(state.ids)} ({delivered} delivered)")
    if story.changelog:
        c = story.changelog
        at = f" offset {c['offset']}" if c.get("offset") is not None else ""
        lines.append(f"read from           {c['topic']} partition {c['partition']}{at}")
        lines.append(f"                    (partition: {c['via']})")
    lines.append("")
    events = story.events()
    lines.append(f"events ({len(events)})")
    for entry in events:
        ended = entry["outcome"] or ("parked" if entry["parked"] else "not ended")
        attempts = entry["attempts"]
        line = (
            f"  {entry['event_id']}  {(entry['event_type'] or '-').removeprefix('order.')}  "
            f"{ended}  {attempts} attempt{'s' if attempts != 1 else ''}"
        )
        if entry["parked"] and entry["outcome"]:
            line += ", parked on the way"
        lines.append(line)
        lines.extend(f"      error: {error}" for error in _runs(entry["errors"]))
    lines.append("")
    where = f" ({story.audit['topic']} partition {story.audit['partition']})" if story.audit else ""
    terminal = sum(1 for r in story.timeline if r.get("outcome") in TERMINAL_OUTCOMES)
    lines.append(f"timeline: {len(story.timeline)} audit records, {terminal} terminal{where}")
    if story.timeline:
        lines.append(format_header(width))
        lines.extend(format_row(record, width) for record in story.timeline)
    return "\n".join(lines)


# -- connector order show -------------------------------------------------------------------


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show"])
    parser.add_argument(
        "key", help="the order key: " + " or ".join(vendor_registry.order_key_forms())
    )
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="timeline from a time only (2h, 1d, an ISO 8601 time); the state is always read",
    )
    parser.add_argument("--json", action="store_true", help="state, events and timeline as JSON")


def show_command(settings: Settings, args: argparse.Namespace) -> int:
    """``connector order show KEY``: 0 when the order is known, 1 when it is not."""
    if not is_order_key(args.key):
        print(
            f"connector: {args.key!r} is not an order key "
            f"({', '.join(vendor_registry.order_key_forms())})",
            file=sys.stderr,
        )
        return 2
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"connector: --since: {exc}", file=sys.stderr)
        return 2
    story = asyncio.run(read_story(settings, args.key, since=since))
    if args.json:
        print(json.dumps(story.to_json(), ensure_ascii=False))
    else:
        print(format_story(story, terminal_width()))
    if not story.timeline and not story.state_found:
        print(f"no audit records and no state for {args.key}", file=sys.stderr)
        return 1
    return 0


# -- GET /orders/{key} on a worker ----------------------------------------------------------


def worker_answer(
    key: str,
    *,
    partition: int,
    events_topic: str,
    changelog: str,
    worker_id: str,
    owned: Collection[tuple[str, int]],
    owners: Mapping[str, Mapping[str, Sequence[int]]],
    lookup: Callable[[bytes], OrderState | None],
    rebalancing: bool,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, JSON body, headers) for one order's state on one worker.

    Only the worker that owns the order's partition answers with the state (its
    table holds it, and nothing else is up to date); another worker redirects to it
    (307, ``Location``) when the group's assignment names its URL, and otherwise says
    which partition it is and that nobody owns it right now. Never more than one key.
    """
    where = {"order_key": key, "partition": partition, "worker_id": worker_id}
    if rebalancing:
        return 503, {**where, "error": "a rebalance is running; ask again shortly"}, {}
    if (events_topic, partition) in owned:
        state = lookup(key.encode())
        if state is None:
            return 404, {**where, "error": "no state for this order on its partition"}, {}
        return 200, {**where, "state": _state_json(state)}, {}
    for url, topics in owners.items():
        if partition in topics.get(changelog, ()):
            location = f"{url.rstrip('/')}/orders/{quote(key, safe='')}?partition={partition}"
            body = {**where, "error": "another worker owns this order", "owner": url}
            return 307, body, {"Location": location}
    return 503, {**where, "error": "no worker owns this partition right now"}, {}


def web_answer(
    connector: Any, key: str, partition_param: str | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``GET /orders/{key}[?partition=N]`` on a worker (:mod:`connector.app`).

    The order's partition is the one its events are read from: Kafka's default
    partitioner over the events topic (``connector publish``, Java producers), or
    ``?partition=N`` for producers that choose partitions another way.
    """
    settings: Settings = connector.settings
    if not is_order_key(key):
        return 400, {"error": f"not an order key: {key[:200]!r}"}, {}
    count = settings.topics.partitions
    try:
        partition = (
            int(partition_param) if partition_param is not None else partition_for_key(key, count)
        )
    except ValueError:
        partition = -1
    if not 0 <= partition < count:
        return 400, {"error": f"partition must be 0..{count - 1}"}, {}
    app = connector.app
    assignor = app.assignor
    return worker_answer(
        key,
        partition=partition,
        events_topic=settings.topics.events,
        changelog=changelog_topic(settings),
        worker_id=settings.worker_id,
        owned={(tp.topic, tp.partition) for tp in assignor.assigned_actives()},
        owners=assignor.table_metadata(changelog_topic(settings)),
        lookup=lambda raw: decode_state(connector.table.get(raw)),
        rebalancing=bool(app.rebalancing),
    )
