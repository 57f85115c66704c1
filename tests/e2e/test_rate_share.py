"""Two workers together keep to one target's rate limit (issue 21, build item 3).

Each worker takes the share of the configured rate that its partitions carry. Without
that, each applied the whole rate: two workers sent twice the limit until each had been
answered 429 at least once (so at least two 429s every cool-down), three workers ended
with 19 429s and half the allowed rate (BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.rate_share import measure

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

RATE = 20.0


async def test_two_workers_stay_under_the_vendor_limit(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = await measure(
        kafka_bootstrap,
        2,
        rate=RATE,
        burst=5,
        vendor_burst=10,
        seconds=12.0,
        partitions=4,
        log_dir=tmp_path,
    )
    # Each worker throttled only by its own 429s needs one at least: two or more.
    assert result.rate_limited_total <= 1, result
    assert result.received_per_s <= RATE * 1.1, result
    assert result.accepted_per_s >= RATE * 0.9, result
