"""bench.changelog_fill: the synthetic table is what the connector writes."""

from __future__ import annotations

import time

import pytest

from bench.changelog_fill import order_history, partition_of, table_records
from bench.workload import iter_orders
from connector.domain.lifecycle import OrderStatus, decode_state, encode_state, judge


@pytest.mark.parametrize("history", [False, True])
def test_the_fast_encoding_is_the_connector_s_own(history: bool) -> None:
    orders = list(iter_orders("bx1", 25))
    records = list(table_records("bx1", 25, 6, history=history))
    per_order = 6 if history else 1
    assert len(records) == 25 * per_order
    for i, order in enumerate(orders):
        mine = records[i * per_order : (i + 1) * per_order]
        states = order_history(order, time.time())
        expected = [encode_state(s) for s in (states if history else states[-1:])]
        for (partition, key, value), want in zip(mine, expected, strict=True):
            assert key == order.key
            assert partition == partition_of(order.key, 6)
            # Equal but for the horizon (the fill's own clock).
            got, exp = decode_state(value), decode_state(want)
            assert got is not None and exp is not None
            assert (got.status, got.confirmed, got.pending, got.ids) == (
                exp.status,
                exp.confirmed,
                exp.pending,
                exp.ids,
            )


def test_every_order_is_completed_and_refuses_to_reopen() -> None:
    [(_, _, value)] = list(table_records("bx2", 1, 6))
    state = decode_state(value)
    assert state is not None and state.status is OrderStatus.COMPLETED
    decision = judge(state, "bx2-0-opened-again", 0, OrderStatus.OPEN, "order.opened")
    assert "cannot reopen a final order" in decision.reason


def test_partitions_are_the_default_partitioner_s() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    for order in iter_orders("bx3", 50):
        assert partition_of(order.key, 6) == DefaultPartitioner()(order.key, list(range(6)), [])
