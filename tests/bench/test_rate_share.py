"""The rate-share benchmark's figures from a sandbox request log."""

from __future__ import annotations

import pytest

from bench.rate_share import figures


def test_figures_count_the_window_from_the_first_request() -> None:
    requests = [(100.0 + i * 0.05, 200) for i in range(200)]  # 20/s for 10 s
    requests += [(100.5, 429), (109.0, "dropped"), (111.0, 200), (112.0, 429)]
    result = figures(requests, workers=2, configured_per_s=20, seconds=10)
    assert result.received == 202  # the 200s, a 429 and a dropped call; not the late ones
    assert result.accepted == 200
    assert result.accepted_per_s == pytest.approx(20.0)
    assert result.ratio == pytest.approx(1.0)
    assert (result.rate_limited, result.rate_limited_total) == (1, 2)
    assert result.row().startswith("| 2 | 20 | 20.20 | 20.00 | 1.00 | 1 | 2 |")


def test_no_request_is_no_figure() -> None:
    result = figures([], workers=1, configured_per_s=20, seconds=10)
    assert (result.received, result.accepted_per_s, result.rate_limited_total) == (0, 0.0, 0)
