"""Each worker's share of the vendors' rate limits: the fraction of input partitions it owns.

A target's configured rate and burst are what the vendor allows the whole deployment
(see :mod:`connector.pipeline.ratelimit`). Workers do not coordinate; instead every worker takes
``owned / total`` of them, where ``owned`` counts the partitions of the events topic it was
assigned and ``total`` is the topic's partition count. Parked events are read from the
parking topic, co-partitioned with the events topic and assigned with it, so the same
share covers them. The shares of a group add up to 1 whatever the assignment.

A worker that owns no partition delivers nothing (every delivery runs under a lease of an
owned partition), but its limiter still needs a rate: 0 would mean "no limit". It gets the
share of one partition, a floor that only a straggler could ever use.

The share is recomputed on every assignment (:func:`take_share`, called by
:func:`connector.app.share_rates` from Faust's public ``App.on_partitions_assigned``
signal): the assigned set is the worker's whole new
assignment. A revocation needs no signal of its own: between a revocation and the next
assignment the worker's jobs are fenced and nothing is sent. The limiter is built lazily
(``ConnectorApp.runtime``), possibly after the first assignment, so the fraction waits in
a :class:`RateShare` that the limiter reads when it is built.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["RateShare", "Shareable", "owned_partitions", "partition_share", "take_share"]

logger = logging.getLogger(__name__)


class Shareable(Protocol):
    """What takes a share: :class:`connector.pipeline.ratelimit.RateLimiter`."""

    def set_share(self, fraction: float) -> None: ...


def partition_share(owned: int, total: int) -> float:
    """The fraction of the limits that ``owned`` of ``total`` partitions carry.

    No partition gets one partition's share (a floor: 0 would mean "no limit"); a count
    above ``total`` (a topic grown behind the settings' back) is capped at the whole.
    """
    if total < 1:
        raise ValueError(f"a topic has at least one partition, not {total}")
    return max(1, min(owned, total)) / total


def owned_partitions(assigned: Iterable[Any], topic: str) -> int:
    """How many of the assigned topic-partitions (``.topic`` and ``.partition``) are ``topic``'s."""
    return len({tp.partition for tp in assigned if tp.topic == topic})


class RateShare:
    """This worker's current share, kept for a limiter built later and passed to it then."""

    def __init__(self, fraction: float = 1.0) -> None:
        self.fraction = fraction
        self._limiters: list[Shareable] = []

    def attach(self, limiter: Shareable) -> None:
        """Give ``limiter`` the share now and at every change."""
        limiter.set_share(self.fraction)
        self._limiters.append(limiter)

    def set(self, fraction: float) -> None:
        self.fraction = fraction
        for limiter in self._limiters:
            limiter.set_share(fraction)


def take_share(share: RateShare, assigned: Iterable[Any], topic: str, partitions: int) -> None:
    """Set ``share`` from a worker's whole new assignment (a set of topic-partitions)."""
    owned = owned_partitions(assigned, topic)
    fraction = partition_share(owned, partitions)
    if fraction != share.fraction:
        logger.info(
            "rate limits: this worker owns %d of %d partitions, so %.0f%% of each "
            "target's configured rate and burst",
            owned,
            partitions,
            fraction * 100,
        )
    share.set(fraction)
