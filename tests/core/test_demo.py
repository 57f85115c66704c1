"""What the demo says it planted is what its scenario holds."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from connector.domain.events import parse_record
from connector.errors import InvalidEventError
from connector.ops.demo import NEXT_STEPS, planted, scenario


@pytest.mark.parametrize("orders", [1, 8, 30])
def test_the_planted_problems_are_in_the_scenario(orders: int) -> None:
    records = scenario(orders)
    said = {outcome: count for outcome, count, _ in planted(orders)}
    unreadable = 0
    for key, value in records:
        try:
            parse_record(key, value, max_bytes=1_000_000)
        except InvalidEventError:
            unreadable += 1
    # The contract violation parses; the vendor mapping refuses it (connector.vendors).
    too_long = [v for _, v in records if b"working on exercise three" in v]
    assert unreadable + len(too_long) == said["dead_lettered"]
    ids = Counter(json.loads(v)["event_id"] for _, v in records if v.startswith(b'{"event_id"'))
    assert sum(n - 1 for n in ids.values()) == said.get("duplicate", 0)
    assert ("rejected" in said) == (orders > 1)


def test_the_demo_ends_with_next_steps() -> None:
    assert "scripts/stack up" in NEXT_STEPS
    assert "connector audit tail --last 20" in NEXT_STEPS
