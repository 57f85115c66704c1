"""Circuit breakers per target (a Kombo integration, or Comeet), per worker.

A target whose calls keep failing with retryable errors is *open*: nobody
calls it, and its events are parked (see :mod:`connector.parking`) instead of
each one retrying on its own until it is dead-lettered. After a cool-down the
breaker lets exactly one call through (*half-open*): the oldest parked event,
as a probe. Its success closes the breaker and the parked events drain in
order; its failure opens it again for a longer cool-down.

An operator can also hold a target open (``connector target pause``): no probe
goes out until it is resumed.

Only retryable failures count. A permanent refusal (a 400 for one bad event)
says nothing about the target's health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Breaker", "BreakerState", "Breakers"]

logger = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class Breaker:
    """One target's breaker. ``clock`` is monotonic seconds."""

    threshold: int
    cool_down_s: float
    max_cool_down_s: float
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    current_cool_down_s: float = 0.0
    paused: bool = False
    probing: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def closed(self) -> bool:
        return self.state is BreakerState.CLOSED and not self.paused

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def on_success(self) -> None:
        self.failures = 0
        self.probing = False
        if self.state is not BreakerState.CLOSED:
            logger.info("circuit closed: the target answers again")
            self.state = BreakerState.CLOSED
            self.current_cool_down_s = 0.0
            self._notify()

    def on_failure(self) -> None:
        """A retryable failure (transport error, timeout, 5xx, 429)."""
        self.failures += 1
        self.probing = False
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.threshold
        ):
            grown = self.current_cool_down_s * 2 if self.current_cool_down_s else self.cool_down_s
            self.current_cool_down_s = min(self.max_cool_down_s, grown)
            self.state = BreakerState.OPEN
            self.opened_at = self.clock()
            logger.warning(
                "circuit open after %d failures: events park for %.1f s before a probe",
                self.failures,
                self.current_cool_down_s,
            )
            self._notify()

    def on_neutral(self) -> None:
        """An attempt that proved nothing (a permanent refusal of one request)."""
        if self.probing:
            self.probing = False
            self._notify()

    def try_probe(self) -> bool:
        """May a parked event go out now? Closed: yes; open: one probe after the cool-down."""
        if self.paused:
            return False
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self.clock() - self.opened_at < self.current_cool_down_s:
                return False
            self.state = BreakerState.HALF_OPEN
        if self.probing:
            return False
        self.probing = True
        return True

    def wait_s(self) -> float:
        """How long until a probe may be tried (0 when closed)."""
        if self.state is BreakerState.OPEN and not self.paused:
            return max(0.0, self.current_cool_down_s - (self.clock() - self.opened_at))
        return 0.0 if self.closed else self.max_cool_down_s

    async def changed(self, timeout: float) -> None:
        """Wait for a state change, at most ``timeout`` seconds."""
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def set_paused(self, paused: bool) -> None:
        if paused != self.paused:
            self.paused = paused
            self._notify()


class Breakers:
    """The worker's breakers, one per target key."""

    def __init__(
        self,
        threshold: int = 5,
        cool_down_s: float = 2.0,
        max_cool_down_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._cool_down_s = cool_down_s
        self._max_cool_down_s = max_cool_down_s
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}
        self._paused: set[str] = set()

    def __getitem__(self, target: str) -> Breaker:
        breaker = self._breakers.get(target)
        if breaker is None:
            breaker = self._breakers[target] = Breaker(
                self._threshold, self._cool_down_s, self._max_cool_down_s, self._clock
            )
            breaker.paused = target in self._paused
        return breaker

    def set_paused(self, target: str, paused: bool) -> None:
        if paused:
            self._paused.add(target)
        else:
            self._paused.discard(target)
        self[target].set_paused(paused)

    @property
    def paused(self) -> frozenset[str]:
        return frozenset(self._paused)

    def open_targets(self) -> list[str]:
        return [t for t, b in self._breakers.items() if not b.closed]
