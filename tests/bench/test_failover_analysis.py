"""Crash-to-delivery figures from the sandbox's recorded requests."""

from __future__ import annotations

from typing import Any

import pytest

from bench.failover_analysis import partition_of_orders, takeover
from bench.workload import _CODE, make_orders

pytestmark = pytest.mark.timeout(10)

KILL = 1000.0


def _entry(order: str, produced_at: float, received_at: float, status: int = 200) -> dict[str, Any]:
    url = f"https://results.example/r?k={_CODE['opened']}&t={produced_at}"
    return {
        "vendor": "comeet",
        "index": 0,
        "key": order,
        "received_at": received_at,
        "status_code": status,
        "body": {"url_for_users": url},
    }


def test_first_delivery_backlog_and_the_survivor_s_gap() -> None:
    partition = {
        ("comeet", "dead"): 0,
        ("comeet", "dead2"): 0,
        ("comeet", "dead3"): 0,
        ("comeet", "alive"): 1,
    }
    entries = [
        _entry("dead", KILL - 1, KILL - 0.9),  # delivered before the kill: not backlog
        _entry("dead2", KILL - 0.5, KILL + 12.0, status=503),  # refused: not a delivery
        _entry("dead2", KILL - 0.5, KILL + 14.0),  # the last of the backlog
        _entry("dead3", KILL + 5, KILL + 12.5),
        _entry("dead", KILL - 1, KILL + 11.0),  # a redelivery: the partition is live again
        _entry("alive", KILL + 1, KILL + 1.1),
        _entry("alive", KILL + 2, KILL + 4.1),  # 3 s without a delivery on partition 1
    ]
    figures = takeover(entries, partition, {0}, KILL, window_s=5.0)
    assert figures.first_delivery_s == pytest.approx(11.0)
    assert figures.caught_up_s == pytest.approx(14.0)
    assert figures.backlog == 2  # dead2 and dead3 ("dead" was delivered before the kill)
    assert figures.survivor_gap_s == pytest.approx(3.0)


def test_nothing_delivered_on_the_dead_partitions_is_no_figure() -> None:
    figures = takeover([_entry("x", KILL, KILL + 1)], {("comeet", "x"): 1}, {0}, KILL, window_s=5)
    assert figures.first_delivery_s is None


def test_partitions_are_the_producer_s_default_partitioner_s() -> None:
    orders = make_orders("run", 200)
    placed = partition_of_orders(orders, 6)
    assert set(placed.values()) == set(range(6))
    assert len(placed) == 200
