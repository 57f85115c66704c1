"""Latency figures of a benchmark run, from what the sandbox recorded."""

from __future__ import annotations

from typing import Any

import pytest

from bench.analysis import analyse
from bench.workload import _CODE

pytestmark = pytest.mark.timeout(10)


def _entry(index: int, produced_at: float, latency_s: float) -> dict[str, Any]:
    url = f"https://results.example/r?k={_CODE['opened']}&t={produced_at}"
    return {
        "vendor": "comeet",
        "index": index,
        "key": f"order-{index}",
        "received_at": produced_at + latency_s,
        "status_code": 200,
        "body": {"url_for_users": url},
    }


def test_warm_up_events_are_counted_but_left_out_of_the_percentiles() -> None:
    start = 1000.0
    slow = [_entry(i, start + i / 100, 0.300) for i in range(50)]  # first 0.5 s: 300 ms
    fast = [_entry(50 + i, start + 2.5 + i / 100, 0.010) for i in range(200)]  # then 10 ms
    stats = analyse(slow + fast, expected=250, started_at=start, cap_s=60, capped=False, warmup_s=2)
    assert stats.delivered == 250
    assert stats.p99_ms == pytest.approx(10, abs=0.01)
    assert stats.warmup_events == 50
    assert stats.warmup_p99_ms == pytest.approx(300, abs=0.01)

    whole = analyse(slow + fast, expected=250, started_at=start, cap_s=60, capped=False)
    assert whole.p99_ms == pytest.approx(300, abs=0.01)
    assert whole.warmup_events == 0
