"""Each worker's share of the rate limits: owned / total partitions of the events topic."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from connector.app import create_app, share_rates
from connector.pipeline.rate_share import RateShare, owned_partitions, partition_share
from connector.pipeline.ratelimit import RateLimiter
from connector.settings import Settings


@pytest.mark.parametrize(
    ("owned", "total", "share"),
    [(4, 4, 1.0), (2, 4, 0.5), (1, 4, 0.25), (2, 6, 1 / 3), (0, 4, 0.25), (9, 4, 1.0)],
)
def test_share_is_owned_over_total_with_a_floor_of_one_partition(
    owned: int, total: int, share: float
) -> None:
    assert partition_share(owned, total) == pytest.approx(share)


def test_shares_of_any_assignment_add_up_to_the_whole() -> None:
    for split in ([4], [2, 2], [2, 1, 1], [1, 1, 1, 1]):
        assert sum(partition_share(n, 4) for n in split) == pytest.approx(1.0)


def test_a_topic_without_partitions_is_refused() -> None:
    with pytest.raises(ValueError):
        partition_share(0, 0)


def test_only_the_events_topic_counts() -> None:
    assigned = {TP("events", 0), TP("events", 3), TP("parking", 0), TP("app-orders-changelog", 1)}
    assert owned_partitions(assigned, "events") == 2
    assert owned_partitions(set(), "events") == 0


def test_a_limiter_built_after_the_share_reads_it() -> None:
    share = RateShare()
    share.set(0.5)  # the assignment came first
    limiter = RateLimiter.from_settings(_settings(), share)
    assert limiter.share == 0.5
    share.set(0.25)  # and the next one reaches it
    assert limiter.share == 0.25


def _settings() -> Settings:
    return Settings.model_validate(
        {
            "app_id": "app",
            "kafka": {"bootstrap_servers": "x:1"},
            "topics": {"partitions": 4, "events": "ev"},
            "kombo": {"rate_limit_per_s": 20, "rate_limit_burst": 8},
        }
    )


async def test_every_assignment_sets_the_share() -> None:
    handlers: list[Any] = []
    signal = SimpleNamespace(connect=handlers.append)
    connector: Any = SimpleNamespace(
        settings=_settings(),
        app=SimpleNamespace(on_partitions_assigned=signal),
        rate_share=RateShare(),
    )
    share_rates(connector)
    [handler] = handlers
    await handler(None, {TP("ev", 1), TP("ev", 2), TP("parking", 1)}, signal=signal)
    assert connector.rate_share.fraction == 0.5
    await handler(None, {TP("ev", 3)}, signal=signal)
    assert connector.rate_share.fraction == 0.25
    await handler(None, set(), signal=signal)  # no partition: the floor, never "no limit"
    assert connector.rate_share.fraction == 0.25
    await handler(None, {TP("ev", p) for p in range(4)}, signal=signal)
    assert connector.rate_share.fraction == 1.0


async def test_the_app_sets_its_share_from_faust_assignments(tmp_path: Path) -> None:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        data_dir=str(tmp_path),
        topics={"partitions": 4, "events": "ev"},
    )
    connector = create_app(settings)
    await connector.app.on_partitions_assigned.send({TP("ev", 0), TP("ev", 2)})
    assert connector.rate_share.fraction == 0.5
