"""What the sandboxes saw, judged per order: the strict checks of issue 10's acceptance tests.

:func:`tests.e2e.invariants.check` matches every recorded request to its event and counts
2xx receipts and 400 refusals. The checks here are stricter, and vendor-neutral:

* a **regression** is any request that reached the sandbox (whatever it answered) asking for
  another status than the final one the vendor already accepted for that order: OPEN or
  progress after COMPLETED/CANCELLED, or COMPLETED <-> CANCELLED. The status is the
  *event's* (opened/progress -> OPEN, completed -> COMPLETED, cancelled -> CANCELLED), so a
  Comeet flip (both final events are ``status: completed`` there) counts too;
* **out of order**: per order, the event ids of every request the sandbox received, in
  arrival order, mapped to the offset where the event was *first* published, must be
  non-decreasing (a replayed copy of an old event keeps its old offset);
* **duplicate vendor calls**: 2xx receipts of an event beyond its first one.

:func:`unterminated` lists published records without a terminal audit record.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.invariants import Ledger, Sent

__all__ = ["KIND", "VendorView", "first_offsets", "unterminated", "vendor_view"]

KIND = {
    "order.opened": "OPEN",
    "order.progress": "OPEN",
    "order.completed": "COMPLETED",
    "order.cancelled": "CANCELLED",
}


def first_offsets(ledger: Ledger) -> dict[str, tuple[int, int]]:
    """Per event id: (partition, offset) of its first publication."""
    out: dict[str, tuple[int, int]] = {}
    for sent in ledger.records:
        if sent.event_id is None or sent.source is None:
            continue
        known = out.get(sent.event_id)
        if known is None or sent.source[1] < known[1]:
            out[sent.event_id] = sent.source
    return out


@dataclass
class VendorView:
    requests: int = 0  # every recorded request (retries, faults and drops included)
    matched: int = 0  # requests matched to a published event
    regressions: list[dict[str, Any]] = field(default_factory=list)
    accepted_regressions: int = 0  # regressions the sandbox answered 2xx
    out_of_order: list[dict[str, Any]] = field(default_factory=list)
    receipts: Counter[str] = field(default_factory=Counter)  # 2xx per event id
    calls: Counter[str] = field(default_factory=Counter)  # requests per event id
    final_at_vendor: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def duplicate_calls(self) -> int:
        """2xx receipts beyond the first, summed over events."""
        return sum(n - 1 for n in self.receipts.values() if n > 1)

    @property
    def events_received_twice(self) -> int:
        return sum(1 for n in self.receipts.values() if n > 1)

    def requests_for(self, event_ids: Iterable[str]) -> int:
        return sum(self.calls[e] for e in event_ids)


def vendor_view(ledger: Ledger, requests: Iterable[dict[str, Any]]) -> VendorView:
    view = VendorView()
    offsets = first_offsets(ledger)
    per_order: dict[tuple[str, str], list[tuple[dict[str, Any], str]]] = defaultdict(list)
    for entry in sorted(requests, key=lambda e: (e["vendor"], e["index"])):
        view.requests += 1
        event_id = ledger.event_of(entry["vendor"], entry["key"], entry["body"])
        if event_id is None:
            continue
        view.matched += 1
        view.calls[event_id] += 1
        code = entry["status_code"]
        if isinstance(code, int) and 200 <= code < 300:
            view.receipts[event_id] += 1
        info = ledger.events[event_id]
        if info.sandbox_key is not None:
            per_order[info.sandbox_key].append((entry, event_id))
    for order, entries in per_order.items():
        final: str | None = None
        highest: tuple[int, str] | None = None
        for entry, event_id in entries:
            info = ledger.events[event_id]
            kind = KIND.get(info.type)
            code = entry["status_code"]
            ok = isinstance(code, int) and 200 <= code < 300
            if kind is not None and final is not None and kind != final:
                view.regressions.append(
                    {
                        "order": order,
                        "event_id": event_id,
                        "type": info.type,
                        "after": final,
                        "status_code": code,
                        "index": entry["index"],
                    }
                )
                if ok:
                    view.accepted_regressions += 1
            if ok and kind in ("COMPLETED", "CANCELLED") and final is None:
                final = kind
            offset = offsets.get(event_id)
            if offset is None:
                continue
            if highest is not None and offset[1] < highest[0]:
                view.out_of_order.append(
                    {
                        "order": order,
                        "event_id": event_id,
                        "type": info.type,
                        "first_offset": offset,
                        "after_offset": highest,
                        "index": entry["index"],
                    }
                )
            if highest is None or offset[1] > highest[0]:
                highest = (offset[1], event_id)
        if final is not None:
            view.final_at_vendor[order] = final
    return view


def unterminated(ledger: Ledger, audit: Sequence[dict[str, Any]], events_topic: str) -> list[Sent]:
    """Published records without any terminal audit record for their source offset."""
    ended: set[tuple[int, int]] = set()
    for record in audit:
        source = record.get("source") or {}
        if record.get("terminal") and source.get("topic") == events_topic:
            ended.add((source["partition"], source["offset"]))
    return [s for s in ledger.records if s.source is None or s.source not in ended]
