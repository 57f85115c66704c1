"""Crash-to-delivery figures from what the sandbox recorded around a worker's SIGKILL.

Each recorded request names its order (the sandbox's ``key``) and carries the event's
kind and produce time (:func:`bench.workload.read_stamp`); the order's Kafka key gives
its partition (the producer's default partitioner), so every delivery is placed on a
partition without asking the workers anything.

- *First delivery*: the first 2xx request after the kill for an event on a partition the
  killed worker owned (a redelivery too: the partition is live again); the sandbox
  stamps a request when it arrives, and a killed process sends nothing, so whatever
  arrives after the kill on those partitions came from the partitions' next owner (the
  survivor, or the restarted worker).
- *Caught up*: the backlog is every event on those partitions produced before the first
  delivery and not delivered before the kill; it is caught up when the last of them has
  its first 2xx delivery (an event's first delivery in the run: one delivered before the
  kill is no backlog, whatever is redelivered).
- *Survivor's gap*: the longest time without a delivery on the survivor's own partitions
  after the kill (a rebalance pauses them too).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from bench.workload import Order, read_stamp

__all__ = ["Takeover", "partition_of_orders", "takeover"]

_PARTITIONER = DefaultPartitioner()
# A request the killed worker sent just before it died may be stamped by the (busy) sandbox
# a little after the kill. Nothing else delivers that soon (the group needs its session
# timeout, a restarted worker its start-up).
STRAGGLER_S = 0.25


def partition_of_orders(orders: Iterable[Order], partitions: int) -> dict[tuple[str, str], int]:
    """``(vendor, sandbox key) -> partition`` as the producer's default partitioner puts it."""
    every = list(range(partitions))
    return {(o.vendor, o.sandbox_key): _PARTITIONER(o.key, every, every) for o in orders}


@dataclass(frozen=True)
class Takeover:
    first_delivery_s: float | None  # kill -> first delivery on a killed worker's partition
    caught_up_s: float | None  # kill -> the last backlog event delivered
    backlog: int  # events the killed worker's partitions owed at the first delivery
    survivor_gap_s: float | None  # longest silence on the survivor's partitions after the kill


def _deliveries(
    entries: Iterable[Mapping[str, Any]], partition_of: Callable[[tuple[str, str]], int | None]
) -> list[tuple[tuple[str, str, str], int, float, float]]:
    """Every 2xx request: ``(event, partition, produced_at, received_at)``."""
    found = []
    for entry in entries:
        status = entry.get("status_code")
        if not (isinstance(status, int) and 200 <= status < 300):
            continue
        stamp = read_stamp(entry.get("body"))
        if stamp is None:
            continue
        kind, produced_at = stamp
        order = (str(entry["vendor"]), str(entry["key"]))
        partition = partition_of(order)
        if partition is not None:
            found.append(((*order, kind), partition, produced_at, float(entry["received_at"])))
    return found


def _longest_gap(moments: list[float], start: float, end: float) -> float | None:
    points = sorted(m for m in moments if start <= m <= end)
    if not points:
        return None
    edges = [start, *points]
    return max(b - a for a, b in itertools.pairwise(edges))


def takeover(
    entries: Iterable[Mapping[str, Any]],
    partition_of: Mapping[tuple[str, str], int],
    victim: set[int],
    killed_at: float,
    *,
    window_s: float,
) -> Takeover:
    """The figures of one kill, from the sandbox's recorded requests (module docstring).

    ``window_s``: how long after the kill the survivor's gap is looked for (the load's
    remaining time: after it, silence is the end of the workload, not a pause).
    """
    requests = _deliveries(entries, partition_of.get)
    # Any answered request counts as the partitions live again, a redelivery included
    # (the new owner starts from the last committed offset).
    after = [r for _, p, _, r in requests if p in victim and r > killed_at + STRAGGLER_S]
    if not after:
        return Takeover(None, None, 0, None)
    resumed = min(after)
    first: dict[tuple[str, str, str], tuple[int, float, float]] = {}
    for event, partition, produced, received in sorted(requests, key=lambda r: r[3]):
        first.setdefault(event, (partition, produced, received))
    backlog_done = [
        received
        for partition, produced, received in first.values()
        if partition in victim and produced < resumed and received > killed_at
    ]
    survivor = [r for _, p, _, r in requests if p not in victim and r > killed_at]
    return Takeover(
        first_delivery_s=resumed - killed_at,
        caught_up_s=max(backlog_done, default=resumed) - killed_at,
        backlog=len(backlog_done),
        survivor_gap_s=_longest_gap(survivor, killed_at, killed_at + window_s),
    )
