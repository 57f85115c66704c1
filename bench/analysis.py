"""From the sandbox's recorded requests to a run's figures.

- *Delivered*: an event whose request the vendor answered 2xx, counted once; a
  later 2xx request for the same event is a duplicate (at-least-once redelivery).
- *Latency*: the sandbox's ``received_at`` minus the event's produce stamp
  (:func:`bench.workload.read_stamp`), for each event's first delivery.
- *Order*: per order, the requests in the order the sandbox received them (its
  log index); a violation is an order whose event arrived before its predecessor
  in the lifecycle (opened -> progress -> completed) had arrived at all.
- A capped run counts only what arrived within the cap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.workload import KINDS, read_stamp

__all__ = ["RunStats", "analyse", "percentile"]

_RANK = {kind: i for i, kind in enumerate(KINDS)}


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class RunStats:
    expected: int
    delivered: int
    duplicates: int
    rejected: int
    seconds: float
    capped: bool
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    orders_seen: int
    order_violations: int
    # Per second since the start: (second, delivered in it, p50 ms, p99 ms of those).
    timeline: list[tuple[int, int, float, float]] = field(default_factory=list)
    # Events produced in the first ``warmup_s`` seconds: delivered and counted, but not in
    # the percentiles above; their own p99 and count (paced runs only).
    warmup_s: float = 0.0
    warmup_events: int = 0
    warmup_p99_ms: float | None = None

    @property
    def throughput(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


def analyse(
    entries: Iterable[dict[str, Any]],
    *,
    expected: int,
    started_at: float,
    cap_s: float,
    capped: bool,
    warmup_s: float = 0.0,
) -> RunStats:
    window_end = started_at + cap_s if capped else math.inf
    ordered = sorted(entries, key=lambda e: (e["vendor"], e["index"]))
    delivered: set[tuple[str, str, str]] = set()
    latencies: list[float] = []
    warmup: list[float] = []
    by_second: dict[int, list[float]] = {}
    arrived: dict[tuple[str, str], set[int]] = {}
    violators: set[tuple[str, str]] = set()
    duplicates = rejected = 0
    last = started_at
    for entry in ordered:
        received = float(entry["received_at"])
        stamp = read_stamp(entry.get("body"))
        if received > window_end or stamp is None:
            continue
        kind, produced_at = stamp
        order = (entry["vendor"], str(entry["key"]))
        seen = arrived.setdefault(order, set())
        rank = _RANK[kind]
        if any(earlier not in seen for earlier in range(rank)):
            violators.add(order)
        seen.add(rank)
        status = entry["status_code"]
        if not (isinstance(status, int) and 200 <= status < 300):
            rejected += 1
            continue
        event = (*order, kind)
        if event in delivered:
            duplicates += 1
            continue
        delivered.add(event)
        latency_ms = (received - produced_at) * 1000
        (warmup if produced_at < started_at + warmup_s else latencies).append(latency_ms)
        by_second.setdefault(int(received - started_at), []).append(latency_ms)
        last = max(last, received)
    latencies.sort()
    warmup.sort()
    return RunStats(
        expected=expected,
        delivered=len(delivered),
        duplicates=duplicates,
        rejected=rejected,
        seconds=cap_s if capped else last - started_at,
        capped=capped,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        orders_seen=len(arrived),
        order_violations=len(violators),
        timeline=[_second(second, values) for second, values in sorted(by_second.items())],
        warmup_s=warmup_s,
        warmup_events=len(warmup),
        warmup_p99_ms=percentile(warmup, 99),
    )


def _second(second: int, values: list[float]) -> tuple[int, int, float, float]:
    values.sort()
    return second, len(values), percentile(values, 50) or 0.0, percentile(values, 99) or 0.0
